"""A bundle as a MONAI Label infer task: the restored volume, float32 in physical units, on the input's grid."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pydicom
import torch
from monai.inferers import Inferer
from monai.transforms import SaveImaged
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from monai_rwkv.apps.bundle import bundle_metadata, load_bundle_config, model_name_version, restoring_configs
from monai_rwkv.data import write_nifti
from monai_rwkv.data.provenance import nifti_restoration_note
from monai_rwkv.inference import load_network, resolve_device
from monai_rwkv.inferers import CoarseFusionInferer, CoarseScaleFusion, ResidualSmoothing, ResidualSmoothingInferer
from monai_rwkv.networks.nets import BlendWithInput, check_strength

__all__ = ["RestorationInferTask"]

logger = logging.getLogger(__name__)

#: monai_rwkv's DICOM reader needs pydicom 3 (deferred pixel data left unread); MONAI Label 0.8.5 needs pydicom 2
#: (pydicom-seg, pynetdicom 2.1), so in its environment DICOM inputs are refused with this message.
DICOM_NEEDS_PYDICOM_3 = (
    "DICOM input needs pydicom>=3 for monai_rwkv's reader, and MONAI Label 0.8.5 needs pydicom<3 "
    f"(this environment has {pydicom.__version__}): convert the series to NIfTI, or use `monai-rwkv restore`"
)

#: the data key where :meth:`RestorationInferTask.inferer` records whether the volume got the coarse pass
_FUSED = "restore_rwkv_coarse_fusion"
#: ... and whether its result got the residual smoothing
_SMOOTHED = "restore_rwkv_residual_smoothing"
#: ... and whether the coarse-scale fusion was on for it (applied or not: the CLI's recorded version says so too)
_FUSION_ON = "restore_rwkv_coarse_fusion_on"


def _is_dicom(image: str) -> bool:
    return os.path.isdir(image) or image.lower().endswith((".dcm", ".dicom"))


class RestorationInferTask(BundleInferTask):
    """
    MONAI Label's :class:`BundleInferTask` for one of this project's bundles, of type ``"others"``.

    The bundle's model-zoo keys do the work as in any bundle task: ``preprocessing`` (our SimpleITK reader, float32,
    intensity normalisation), ``inferer`` (slice-wise sliding window) on the network ``network_def`` with the
    weights, and ``postprocessing`` (back to physical units). What differs from a segmentation bundle:

    * the result is an image, not a label map: it is written as float32 NIfTI (HU, MR units, SUV: the bundle's
      units) with the input's affine by :func:`monai_rwkv.data.write_nifti`, the writer ``monai-rwkv restore`` uses.
      MONAI Label's own writer would take the file type from the input (a DICOM series has none, so no file would
      be written) and applies ``result_dtype`` (e.g. ``uint8`` for label maps);
    * no ``Restored`` post-transform (nothing is resampled, so there is nothing to undo);
    * the weights are loaded with :func:`monai_rwkv.inference.load_network` (strict: a checkpoint that does not fit
      ``network_def`` is an error, not a warning); the train task's fine-tuned weights are used when they exist.

    A request may set ``strength`` (a number in [0, 1]; default the bundle config's, 1): the fraction of the
    network's change kept, as ``monai-rwkv restore --strength``; another value is refused as invalid input. It may
    set ``coarse_fusion`` (true or false; default the bundle config's) for a bundle whose config has a
    ``coarse_fusion_def`` (:class:`~monai_rwkv.inferers.CoarseScaleFusion`): volumes whose in-plane pixels are fine
    enough (from the preprocessed image's affine) are then also restored on a coarser grid, as ``monai-rwkv restore
    --set coarse_fusion=true``; a bundle without one refuses ``true``. Likewise ``residual_smoothing`` (a bundle's
    ``residual_smoothing_def``, :class:`~monai_rwkv.inferers.ResidualSmoothing`): each restored slice is smoothed
    with non-local means as strongly as the network's change to its flat region calls for. For one task of a
    bundle serving several, the task's bundle has the definitions and the serving bundle the defaults (the
    all-in-one's CT task: the CT bundle's post-processing).

    The result JSON has ``bundle``, ``version`` (with the request's settings, as ``monai-rwkv restore`` records
    it, e.g. ``0.15.0 coarse fusion residual smoothing``; also in the NIfTI ``descrip``), ``units``, ``modality``,
    ``dtype``, ``shape``, ``weights``, ``strength``, ``coarse_fusion`` (whether this volume got the coarse pass),
    ``residual_smoothing`` (whether its result went through the residual smoothing) and, for a task of a bundle
    serving several, ``task`` (chosen by ``overrides={"task": ...}``: config items set on the bundle's configs, as
    ``monai-rwkv restore --task`` does).
    """

    def __init__(
        self,
        bundle: str | os.PathLike,
        conf: dict[str, str],
        finetuned: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None,
    ):
        self.finetuned = Path(finetuned) if finetuned is not None else None
        self.overrides = dict(overrides or {})  # config items set on the bundle's configs, e.g. {"task": "mri"}
        self._task_config: Any = None  # see _restoring_config
        super().__init__(
            os.fspath(bundle),
            conf,
            type=InferType.OTHERS,
            post_filter=[SaveImaged],
            extend_load_image=False,
            add_post_restore=False,
            load_strict=True,
        )
        if self.valid and self.network is None:  # only a TorchScript models/model.ts: not what our bundles ship
            logger.warning("%s: no models/model.pt; not served", bundle)
            self.valid = False
        if not self.valid:
            return
        # what the restorations are checked against and named by (for a bundle serving several tasks: its task's),
        # from the config BundleInferTask has parsed through _load_bundle_config (overrides applied)
        self.metadata = bundle_metadata(self.bundle_config)
        self.dimension = 3  # 2D networks, applied slice by slice: the task takes and returns volumes
        self.labels = {}
        self._config.pop("model_filename", None)  # one weights file per bundle (plus the fine-tuned one)
        shipped = Path(bundle) / "models" / self.const.model_pytorch()
        # BasicInferTask uses the last existing path: the fine-tuned weights once the train task wrote them
        self.path = [os.fspath(shipped)] + ([os.fspath(self.finetuned)] if self.finetuned is not None else [])

    def pre_transforms(self, data: Any = None) -> Any:
        image = (data or {}).get("image")
        if isinstance(image, str) and _is_dicom(image) and int(pydicom.__version__.split(".")[0]) < 3:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{image}: {DICOM_NEEDS_PYDICOM_3}")
        return super().pre_transforms(data)

    def _load_bundle_config(self, path: str, config: str) -> Any:
        # as `monai-rwkv restore` parses it: with metadata.json as _meta_, bundle_root = the bundle folder, overrides
        return load_bundle_config(path, Path(config).name, self.overrides)

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["bundle"] = os.path.basename(self.bundle_path)
        if "task" in self.overrides:
            info["task"] = self.overrides["task"]
        return info

    def _get_network(self, device: str, data: Any) -> torch.nn.Module:
        path = self.get_path()
        mtime = os.stat(path).st_mtime if path else 0.0
        cached = self._networks.get(device)
        if cached is not None and cached[1] == mtime and cached[2] == path:
            return self._blend(cached[0], data)
        if cached is not None:
            logger.info("%s: loading weights %s (changed since the last request)", self.bundle_path, path)
        network = load_network(copy.deepcopy(self.network), path, resolve_device(device))
        self._networks[device] = (network, mtime, path)
        return self._blend(network, data)

    def _strength(self, data: Any) -> float:
        """The request's ``strength`` (the bundle config's when the request has none); 400-style error otherwise."""
        value = (data or {}).get("strength", self.bundle_config.get("strength", 1.0))
        try:
            return check_strength(value)
        except ValueError as e:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, str(e)) from None

    def _restoring_config(self) -> Any:
        """The config whose post-processing switches this task's restorations follow: the bundle's, or for one task
        of a bundle serving several, that task bundle's with the bundle's switches set (see
        :func:`~monai_rwkv.apps.bundle.restoring_configs`)."""
        if self._task_config is None:
            self._task_config = next(iter(restoring_configs(self.bundle_config).values()))
        return self._task_config

    def _switched(self, data: Any, key: str) -> Any:
        """The ``<key>_def`` of :meth:`_restoring_config`, instantiated, if the request (else that config) turns
        ``key`` on; None when off, or when only the config turns it on and defines none. A request that turns it on
        where there is no ``<key>_def`` is invalid input."""
        config = self._restoring_config()
        asked = (data or {}).get(key)
        value = config.get(key, False) if asked is None else asked
        if not isinstance(value, bool):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{key}: expected true or false, got {value!r}")
        if not value:
            return None
        if config.get(f"{key}_def") is None:
            if asked is None:
                return None
            task = f" task {self.overrides['task']}" if "task" in self.overrides else ""
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"{key}: bundle {os.path.basename(self.bundle_path)}{task} has no {key}_def; leave it false",
            )
        return config.get_parsed_content(f"{key}_def", instantiate=True)

    def _coarse_fusion(self, data: Any) -> CoarseScaleFusion | None:
        """The bundle's ``coarse_fusion_def`` if the request (else the bundle config) turns it on; None when off."""
        return self._switched(data, "coarse_fusion")

    def _residual_smoothing(self, data: Any) -> ResidualSmoothing | None:
        """The bundle's ``residual_smoothing_def`` if the request (else the bundle config) turns it on."""
        return self._switched(data, "residual_smoothing")

    def inferer(self, data: Any = None) -> Inferer:
        """The bundle's ``inferer``; run through the coarse-scale fusion when it is on (:meth:`_coarse_fusion`), the
        inferer is a slice inferer and the volume's pixels are fine enough (``CoarseScaleFusion.applies_to``); then
        through the residual smoothing when it is on and the inferer is a slice inferer."""
        inferer = super().inferer(data)
        if data is None:
            return inferer
        fusion = self._coarse_fusion(data)
        axis = getattr(inferer, "spatial_dim", None)
        fused = fusion is not None and axis is not None and fusion.applies_to(data.get(self.input_key), int(axis))
        data[_FUSED] = fused  # for the result JSON
        data[_FUSION_ON] = fusion is not None
        smoothing = self._residual_smoothing(data)
        data[_SMOOTHED] = smoothing is not None and axis is not None
        inferer = CoarseFusionInferer(inferer, fusion) if fused else inferer
        return ResidualSmoothingInferer(inferer, smoothing) if data[_SMOOTHED] else inferer

    def _blend(self, network: torch.nn.Module, data: Any) -> torch.nn.Module:
        strength = self._strength(data)
        return BlendWithInput(network, strength).eval() if strength < 1.0 else network

    def _version(self, data: dict[str, Any]) -> str:
        """The bundle version with this request's settings, as ``monai-rwkv restore`` records it for the same
        settings (:func:`~monai_rwkv.apps.bundle.model_name_version`), e.g. ``"0.15.0 coarse fusion"``."""
        settings = {
            "strength": self._strength(data),
            "coarse_fusion": bool(data.get(_FUSION_ON, False)),
            "residual_smoothing": bool(data.get(_SMOOTHED, False)),
        }
        return model_name_version({**self.metadata, "version": str(self.version)}, settings)[1]

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[Any, Any]:
        pred = data[self.output_label_key]
        image = data[self.input_key]
        handle, name = tempfile.mkstemp(suffix=".nii.gz", prefix="restore_rwkv_")
        os.close(handle)
        model = self.metadata.get("name") or os.path.basename(self.bundle_path)
        version = self._version(data)
        note = nifti_restoration_note(model, version)  # marks the result as restored (bundles refuse it)
        path = write_nifti(
            pred, name, affine=image.affine, dtype="float32", overwrite=True, channel_first=True, description=note
        )
        spec = self.metadata["network_data_format"]["outputs"][self.key_pred]
        result = dict(data.get(self.output_json_key) or {})
        result.update(
            {
                "bundle": os.path.basename(self.bundle_path),
                "version": version,
                "units": spec.get("format"),
                "modality": spec.get("modality"),
                "dtype": "float32",
                "shape": [int(s) for s in pred.shape[1:]],
                "weights": self.get_path(),
                "strength": self._strength(data),
                "coarse_fusion": bool(data.get(_FUSED, False)),
                "residual_smoothing": bool(data.get(_SMOOTHED, False)),
                **({"task": self.overrides["task"]} if "task" in self.overrides else {}),
            }
        )
        return os.fspath(path), result
