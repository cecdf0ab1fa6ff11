"""
Slice-wise restoration of whole volumes with a 2D network and MONAI's sliding-window inferer.

Shared by the MONAI bundles (``bundles/*/configs``) and the ``monai-rwkv`` command line, so that both run
exactly the same code: intensity normalisation with a fixed physical range, per-slice sliding-window
inference with Gaussian blending, de-normalisation back to physical units, geometry kept.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn
from tqdm.auto import tqdm

from monai_rwkv.inferers import CoarseScaleFusion, ResidualSmoothing, SliceRestorationInferer
from monai_rwkv.networks.nets import BlendWithInput, RestoreRWKV, SelfEnsemble
from monai_rwkv.networks.nets.restore_rwkv import _unwrap_state_dict
from monai_rwkv.runtime import reuse_freed_memory
from monai_rwkv.transforms.intensity import SCALE_KEY, KeepOutside

__all__ = [
    "CT_INTENSITY_RANGE",
    "OUTPUT_DTYPES",
    "Restorer",
    "SliceWiseRestorer",
    "VolumeRestorer",
    "denormalize_intensity",
    "load_network",
    "load_weights",
    "normalize_intensity",
    "resolve_device",
    "resolve_sw_batch_size",
]

#: fixed CT intensity range of the paper, in HU, mapped to [0, 1] before the network.
CT_INTENSITY_RANGE = (-1024.0, 3072.0)
#: output types a restorer can produce.
OUTPUT_DTYPES = {"float32": torch.float32, "int16": torch.int16}


def normalize_intensity(x: torch.Tensor, intensity_range: Sequence[float] = CT_INTENSITY_RANGE) -> torch.Tensor:
    """
    Physical units -> [0, 1]: ``(x - low) / (high - low)``, clipped; NaN becomes 0 (the low end).

    Args:
        x: any shape, physical units (e.g. HU).
        intensity_range: ``(low, high)`` in physical units, ``low < high``.

    Returns:
        float32 tensor of the same shape, values in [0, 1].
    """
    low, high = (float(v) for v in intensity_range)
    scaled = (x.float() - low) / (high - low)
    return torch.nan_to_num(scaled, nan=0.0).clamp_(0.0, 1.0)


def denormalize_intensity(y: torch.Tensor, intensity_range: Sequence[float] = CT_INTENSITY_RANGE) -> torch.Tensor:
    """[0, 1] -> physical units: ``y * (high - low) + low`` (no clipping), float32."""
    low, high = (float(v) for v in intensity_range)
    return y.float() * (high - low) + low


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """
    ``"auto"`` (or None): CUDA when available, else CPU; any other value as ``torch.device``.

    Raises:
        ValueError: CUDA was asked for but is not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    return device


#: patches per network call for ``sw_batch_size="auto"``: on CUDA a large batch fills the card (a 512^2 slice is 25
#: patches of 128^2 at overlap 0.25, so 32 takes them in one call); on the CPU a larger batch only costs memory.
#: Measured in benchmarks/NOTES.md ("sw_batch_size").
AUTO_SW_BATCH_SIZE = {"cuda": 32, "cpu": 4}


def resolve_sw_batch_size(sw_batch_size: int | str, device: str | torch.device) -> int:
    """``"auto"``: :data:`AUTO_SW_BATCH_SIZE` for the device type (4 for other types); else a positive integer.

    Raises:
        ValueError: neither ``"auto"`` nor a positive integer.
    """
    if isinstance(sw_batch_size, str) and sw_batch_size == "auto":
        return AUTO_SW_BATCH_SIZE.get(torch.device(device).type, AUTO_SW_BATCH_SIZE["cpu"])
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, (int, np.integer)) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be 'auto' or a positive integer, got {sw_batch_size!r}.")
    return int(sw_batch_size)


def load_network(
    network: nn.Module | None = None,
    weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = "cpu",
    strict: bool = True,
) -> nn.Module:
    """
    Prepare a network for inference: load its weights, move it to ``device``, eval mode, channels-last memory.

    Args:
        network: the network to fill (e.g. built from a bundle's ``network_def``). None builds a
            :class:`RestoreRWKV` whose configuration is inferred from ``weights`` (``RestoreRWKV.from_official``).
        weights: a state dict or the path of a checkpoint (read with ``torch.load(weights_only=True)``; plain
            state dicts, BasicSR/Lightning-style wrappers and ``module.`` prefixes are accepted). None keeps the
            network's current weights.
        device: where the network will run (``"auto"`` allowed).
        strict: require the checkpoint keys to match the network exactly.

    Raises:
        FileNotFoundError: ``weights`` is a path that does not exist.
        ValueError: no network and no weights, not a state dict, or an unsafe / unreadable checkpoint
            (see :func:`load_weights`).
    """
    if isinstance(weights, (str, os.PathLike)):
        weights = load_weights(weights)
    if network is None:
        if weights is None:
            raise ValueError("either a network or a checkpoint (weights) is required.")
        network = RestoreRWKV.from_official(weights)
    elif weights is not None:
        network.load_state_dict(_unwrap_state_dict(weights, "cpu"), strict=strict)
    return network.to(resolve_device(device)).eval().to(memory_format=torch.channels_last)


def _blocked_global(error: BaseException) -> str | None:
    """The global a weights-only ``torch.load`` refused to import (e.g. ``posix.system``), if that was the reason."""
    match = re.search(r"GLOBAL\s+([\w.]+)", str(error))
    return match.group(1) if match else None


def _unpickling_problem(error: BaseException) -> str:
    """The informative line of a weights-only unpickling failure (not torch's advice about ``weights_only``)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file", "Check the doc"))]
    return " ".join((useful or lines)[:1])[:200]


def load_weights(path: str | os.PathLike) -> Any:
    """
    Read a checkpoint file with ``torch.load(weights_only=True)`` on the CPU: tensors and plain containers only,
    never code. A pickle that would import or call anything else (e.g. ``os.system`` in ``__reduce__``) is refused
    before any of it runs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line ``"<path>: <problem>"``: an unsafe pickle, or not a PyTorch checkpoint at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: model weights not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = _blocked_global(e)
        if blocked is None:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({_unpickling_problem(e)})") from None
        raise ValueError(
            f"{path}: refused to load: not a plain state dict of tensors, loading it could run code "
            f"(it imports {blocked}); save weights with torch.save(model.state_dict())"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises KeyError, RuntimeError, EOFError... for non-checkpoints
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


@runtime_checkable
class VolumeRestorer(Protocol):
    """
    What the applications (dataset runner, CLI, evaluation) need of a restorer, whatever its network, modality or
    inferer: ``restorer(volume, desc=None)`` maps a channel-first volume ``(C, i, j[, k])`` in physical units to the
    restored volume with the same meta (a MetaTensor keeps its affine), ``output_dtype`` names the type of that
    result, and ``describe()`` returns the settings recorded in manifests and reports.
    """

    output_dtype: str

    def __call__(self, volume: torch.Tensor, desc: str | None = None) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


class Restorer:
    """
    Restore a channel-first volume with an image-to-image network and an inferer, in physical units:
    ``denormalize(clip(inferer(normalize(volume), network)))``, each channel on its own, meta (affine) kept.

    The inferer decides how the network sees the volume: a
    :class:`~monai_rwkv.inferers.SliceRestorationInferer` (a 2D network over slices) is fed slabs of
    :attr:`slab_size` slices along its ``spatial_dim`` (patches of several slices share a network call, memory stays
    bounded); any other inferer (e.g. :class:`~monai_rwkv.inferers.RestorationInferer` for a 3D network on 3D
    patches) gets the whole volume at once. Nothing here is modality-specific: a bundle's config passes its own
    ``normalize`` / ``denormalize`` (also used by its ``preprocessing`` / ``postprocessing``) and ``inferer``.

    Args:
        network: the image-to-image module on ``device`` (see :func:`load_network`), or any callable.
        inferer: called as ``inferer(x, network)`` on ``(C, 1, *spatial)`` normalised inputs.
        normalize: physical units -> the network's range, applied to the whole ``(C, i, j, k)`` volume (a MetaTensor)
            once: it may compute per-volume statistics and record them in the meta it returns.
        denormalize: the network's range -> physical units, given the restored volume with that meta.
        device: where the inferer's inputs are sent; ``"auto"`` picks CUDA when available.
        output_dtype: ``"float32"`` or ``"int16"`` (rounded and clipped to the int16 range).
        clip_output: clip the network's output to [0, 1] before ``denormalize`` (for models trained on [0, 1]).
        progress: show a progress bar over slices.
        intensity_range: ``(low, high)`` the model's physical range, only named in the warning about NaN values.
        network_input: for a network that takes more than the image (e.g. a per-slice noise-level map,
            :class:`~monai_rwkv.transforms.NoiseLevelMap`), ``(1, *spatial) -> (C_in, *spatial)`` applied to each
            channel's normalised slab of whole slices before the inferer (never to a patch: the sliding window
            cuts its result). None: the network gets the image alone.
        coarse_fusion: a :class:`~monai_rwkv.inferers.CoarseScaleFusion` for a slice inferer: slices whose in-plane
            pixel size (from the volume's affine) it :meth:`~monai_rwkv.inferers.CoarseScaleFusion.applies` to are
            also restored on a coarser grid and the two results fused; other volumes are restored as without it.
            None: every slice on its own grid only.
        residual_smoothing: a :class:`~monai_rwkv.inferers.ResidualSmoothing` for a slice inferer: every restored slice
            (after the coarse-scale fusion, if any) is smoothed with non-local means as strongly as the network's
            change to its flat region calls for (none below the smoothing's threshold). None: the network's result.
        keep_outside: a :class:`~monai_rwkv.transforms.KeepOutside`: input voxels outside its bounds (in the input's
            units, e.g. a CT scanner's padding and metal) keep their input values in the output, after
            ``denormalize`` (``normalize`` must keep the input's grid). None: every voxel as restored.

    On the CPU the restorer calls :func:`monai_rwkv.runtime.reuse_freed_memory` (glibc ``malloc`` settings for the
    whole process: freed feature maps are reused instead of being unmapped and faulted in again on every call).
    """

    #: slices restored per call of a slice inferer (their patches are batched together).
    slab_size = 16

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        inferer: Callable[..., torch.Tensor],
        normalize: Callable[[torch.Tensor], torch.Tensor],
        denormalize: Callable[[torch.Tensor], torch.Tensor],
        device: str | torch.device | None = "auto",
        output_dtype: str = "float32",
        clip_output: bool = True,
        progress: bool = True,
        intensity_range: Sequence[float] | None = None,
        network_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
        coarse_fusion: CoarseScaleFusion | None = None,
        residual_smoothing: ResidualSmoothing | None = None,
        keep_outside: KeepOutside | None = None,
    ) -> None:
        if output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {sorted(OUTPUT_DTYPES)}, got {output_dtype!r}.")
        self.network = network
        self.inferer = inferer
        self.normalize, self.denormalize = normalize, denormalize
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            reuse_freed_memory()  # large feature maps: reuse freed pages instead of faulting them in per call
        self.output_dtype = output_dtype
        self.clip_output = clip_output
        self.progress = progress
        self.intensity_range = None if intensity_range is None else tuple(float(v) for v in intensity_range)
        self.network_input = network_input
        if coarse_fusion is not None and (self._slab_axis() is None or network_input is not None):
            raise ValueError(
                "coarse_fusion needs a slice inferer (one with a spatial_dim, e.g. SliceRestorationInferer) and a "
                "network that takes the image alone (no network_input); set coarse_fusion to None."
            )
        self.coarse_fusion = coarse_fusion
        if residual_smoothing is not None and self._slab_axis() is None:
            raise ValueError(
                "residual_smoothing needs a slice inferer (one with a spatial_dim, e.g. SliceRestorationInferer); "
                "set residual_smoothing to None."
            )
        self.residual_smoothing = residual_smoothing
        self.keep_outside = keep_outside

    def _infer(self, normalised: torch.Tensor, coarse: bool = False) -> torch.Tensor:
        """
        Normalised ``(B, 1, *spatial)`` -> restored, float32 on the CPU: through :attr:`coarse_fusion` when
        ``coarse``, then :attr:`residual_smoothing` if any, then clipped to [0, 1] when ``clip_output``.
        """
        inputs = normalised.to(self.device, torch.float32)
        if self.network_input is not None:
            inputs = torch.stack([torch.as_tensor(self.network_input(item)) for item in inputs]).float()
        if coarse:
            out = self.coarse_fusion(inputs, self.network, self.inferer).float()
        else:
            out = self.inferer(inputs, self.network).float()
        if self.residual_smoothing is not None:  # the image the network was given, slices along the slab axis
            out = self.residual_smoothing.apply(normalised.to(out.device, torch.float32), out, self._slab_axis() + 1)
        if self.clip_output:  # after the smoothing, as a bundle's postprocessing clips the inferer's result
            out = out.clamp(0.0, 1.0)
        return out.cpu()

    def _slab_axis(self) -> int | None:
        """The axis of ``(C, i, j, k)`` that slabs are cut along, or None for whole volumes."""
        spatial_dim = getattr(self.inferer, "spatial_dim", None)
        return None if spatial_dim is None else int(spatial_dim) + 1

    def __call__(self, volume: torch.Tensor | np.ndarray, desc: str | None = None) -> torch.Tensor:
        """
        Restore ``volume``.

        Args:
            volume: ``(C, i, j, k)`` or ``(C, i, j)`` (one slice) in physical units, channel first as
                ``sitk_load_image(ensure_channel_first=True)`` returns it; a MetaTensor keeps its meta.
            desc: label of the progress bar and of warnings (e.g. the file name).

        Warns:
            UserWarning: NaN / infinite voxels (``normalize`` maps them into range: the output stays finite).

        Returns:
            the restored volume in physical units, ``output_dtype``, with the meta (affine, ...) that ``normalize``
            returns: the input's shape and geometry unless ``normalize`` changes the grid (e.g. zero-fills k-space).
        """
        if not isinstance(volume, torch.Tensor):
            volume = torch.as_tensor(np.asarray(volume))
        if volume.ndim not in (3, 4):
            raise ValueError(f"expected a channel-first volume (C, i, j[, k]), got shape {tuple(volume.shape)}.")
        self._warn_about_values(volume, desc)
        planar = volume.ndim == 3
        source = volume[..., None] if planar else volume
        # the whole volume at once: per-volume statistics (e.g. a percentile scale) and grid changes (e.g. k-space
        # zero-filling onto a finer grid) see all of it, and its meta travels to denormalize
        normalised = self.normalize((source if isinstance(source, MetaTensor) else MetaTensor(source)).float())
        scale = normalised.meta.get(SCALE_KEY, 1.0) if isinstance(normalised, MetaTensor) else 1.0
        self._warn_about_clipping(source, float(scale), desc)
        data = normalised.as_tensor() if isinstance(normalised, MetaTensor) else torch.as_tensor(normalised)
        if data.ndim != 4:
            raise ValueError(f"normalize must return a (C, i, j, k) volume, got shape {tuple(data.shape)}.")
        out = torch.empty(data.shape, dtype=torch.float32)
        axis = self._slab_axis()
        # the pixel size comes from the input's affine (a plain tensor has none: its slices keep their own grid)
        geometry = normalised if isinstance(normalised, MetaTensor) else volume
        coarse = isinstance(volume, MetaTensor) and self._coarse_applies(MetaTensor(data, affine=geometry.affine))
        n_slices = data.shape[axis] if axis is not None else 1
        step = self.slab_size if axis is not None else 1
        bar = tqdm(total=data.shape[0] * n_slices, desc=desc, unit="slice", disable=not self.progress, leave=False)
        with bar, torch.no_grad():
            for start in range(0, n_slices, step):
                index = [slice(None)] * data.ndim
                if axis is not None:
                    index[axis] = slice(start, min(start + step, n_slices))
                out[tuple(index)] = self._infer(data[tuple(index)].float()[:, None], coarse)[:, 0]  # channels as batch
                bar.update(data.shape[0] * (min(start + step, n_slices) - start))
        meta = dict(normalised.meta) if isinstance(normalised, MetaTensor) else dict(getattr(volume, "meta", {}))
        restored = self.denormalize(MetaTensor(out, meta=meta))
        restored = (restored.as_tensor() if isinstance(restored, MetaTensor) else torch.as_tensor(restored)).float()
        if self.keep_outside is not None:
            restored = self.keep_outside(restored, torch.as_tensor(source).float())
        restored = self._cast(restored[..., 0] if planar else restored)
        if isinstance(volume, MetaTensor):
            return MetaTensor(restored, meta=meta)
        return restored

    def _coarse_applies(self, volume: torch.Tensor) -> bool:
        """Whether the slices of ``volume`` (``(C, i, j, k)``, its affine giving the pixel size) get the coarse pass."""
        if self.coarse_fusion is None:
            return False
        return self.coarse_fusion.applies_to(volume, self._slab_axis() - 1)  # the slice axis among (i, j, k)

    def _warn_about_values(self, data: torch.Tensor, desc: str | None) -> None:
        """
        Warn (one line) about NaN / infinite voxels, which ``normalize`` maps to the range's edges (the output is
        always finite). Whether the image is in the model's units at all is checked before, against the bundle's
        input spec (:class:`~monai_rwkv.data.InputSpec`).
        """
        if not data.is_floating_point():
            return
        bad = int(data.numel() - torch.isfinite(data).sum())
        if not bad:
            return
        name = desc or "volume"
        if self.intensity_range is None:
            where = "the model's range's edges"
        else:
            low, high = self.intensity_range
            where = f"the intensity range's edges (NaN and -inf as {low:g}, +inf as {high:g})"
        warnings.warn(f"{name}: {bad} NaN/infinite voxel(s) restored as {where}; the output is finite", stacklevel=3)

    def _warn_about_clipping(self, source: torch.Tensor, scale: float, desc: str | None) -> None:
        """
        Warn (one line) about finite voxels above the top of the model's range (:attr:`intensity_range`, in the
        model's units: ``source`` times ``scale``, e.g. a PET series' SUV factor) that the restoration clips to that
        top, i.e. that :attr:`keep_outside` does not hand through: a silently lowered maximum is a lost measurement
        (a PET lesion's SUVmax).
        """
        if self.intensity_range is None:
            return
        values = source.float() * scale if scale != 1.0 else source.float()
        top = self.intensity_range[1]
        above = torch.isfinite(values) & (values > top)
        if self.keep_outside is not None:
            above &= ~self.keep_outside.mask(source)
        count = int(above.sum())
        if count:
            peak = float(values[above].max())
            warnings.warn(
                f"{desc or 'volume'}: {count} voxel(s) above {top:g} in the model's units (up to {peak:.4g}) "
                f"restored as at most {top:g}, the top of its range",
                stacklevel=3,
            )

    def _cast(self, out: torch.Tensor) -> torch.Tensor:
        """float32 as is, or int16 rounded and clipped to the int16 range."""
        if self.output_dtype == "float32":
            return out
        info = torch.iinfo(torch.int16)
        return out.round().clamp(info.min, info.max).to(torch.int16)

    def describe(self) -> dict[str, Any]:
        """The settings of this restorer, for logs and reports."""
        inferer = self.inferer
        roi = getattr(inferer, "patch_size", None) or getattr(inferer, "roi_size", None)
        network, strength = self.network, 1.0
        if isinstance(network, BlendWithInput):
            network, strength = network.network, network.strength
        return {
            "inferer": type(inferer).__name__,
            "roi_size": list(roi) if roi is not None else None,
            "overlap": getattr(inferer, "overlap", None),
            "sw_batch_size": getattr(inferer, "sw_batch_size", None),
            "mode": str(getattr(inferer, "mode", "")),
            "intensity_range": list(self.intensity_range) if self.intensity_range is not None else None,
            "device": str(self.device),
            "amp": bool(getattr(inferer, "amp", False)),
            "output_dtype": self.output_dtype,
            "clip_output": self.clip_output,
            "self_ensemble": isinstance(network, SelfEnsemble),
            "strength": strength,
            "network_input": None if self.network_input is None else type(self.network_input).__name__,
            "coarse_fusion": None if self.coarse_fusion is None else self.coarse_fusion.describe(),
            "residual_smoothing": None if self.residual_smoothing is None else self.residual_smoothing.describe(),
            "keep_outside": None if self.keep_outside is None else [self.keep_outside.low, self.keep_outside.high],
        }


class SliceWiseRestorer(Restorer):
    """
    A :class:`Restorer` for a 2D network over the slices of a volume (along its last axis), built from settings, with
    a fixed physical intensity range.

    For each channel ``c`` and each slice ``k`` of a volume ``(C, i, j, k)`` in physical units:

    1. normalise with the fixed ``intensity_range`` to [0, 1] (clipped; NaN to the low end);
    2. run :class:`~monai_rwkv.inferers.SliceRestorationInferer` (MONAI's ``SliceInferer``): each slice is presented
       as an image of ``(rows, columns) = (j, i)`` (the display orientation, the layout of the training slices) and
       restored with ``roi_size`` patches, ``overlap`` and Gaussian blending; slices smaller than the ROI are
       padded with 0 (the low end of the range) and cropped;
    3. de-normalise back to physical units, optionally after clipping the network output to [0, 1].

    Args:
        network: a 2D image-to-image module ``(B, 1, H, W) -> (B, 1, H, W)`` on ``device``
            (see :func:`load_network`), or any callable with that contract.
        roi_size: sliding-window patch size ``(H, W)`` in pixels (use the training crop size).
        overlap: fraction of overlap between neighbouring patches, in [0, 1).
        sw_batch_size: patches per network call, or ``"auto"`` (:func:`resolve_sw_batch_size`: 32 on CUDA, 4 on
            the CPU).
        mode: blending of overlapping patches, ``"gaussian"`` or ``"constant"``.
        intensity_range: ``(low, high)`` physical range mapped to [0, 1], e.g. :data:`CT_INTENSITY_RANGE`.
        device: where the network runs; ``"auto"`` picks CUDA when available.
        amp: float16 autocast on CUDA (ignored on CPU).
        output_dtype, clip_output, progress: see :class:`Restorer`.

    Example::

        net = load_network(RestoreRWKV.from_preset("light"), "models/model.pt", device="auto")
        restorer = SliceWiseRestorer(net, roi_size=(128, 128), overlap=0.25, intensity_range=CT_INTENSITY_RANGE)
        image = sitk_load_image(image_only=True, ensure_channel_first=True)("ct.nii.gz")  # (1, i, j, k) HU
        restored = restorer(image)  # (1, i, j, k) HU, same affine and meta
    """

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        roi_size: Sequence[int] | int = (128, 128),
        overlap: float = 0.25,
        sw_batch_size: int | str = "auto",
        mode: str = "gaussian",
        intensity_range: Sequence[float] = CT_INTENSITY_RANGE,
        device: str | torch.device | None = "auto",
        amp: bool = True,
        output_dtype: str = "float32",
        clip_output: bool = True,
        progress: bool = True,
    ) -> None:
        if not 0 <= float(overlap) < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        low, high = (float(v) for v in intensity_range)
        if not low < high:
            raise ValueError(f"intensity_range must be (low, high) with low < high, got {tuple(intensity_range)}.")
        roi = (int(roi_size),) * 2 if isinstance(roi_size, (int, np.integer)) else tuple(int(r) for r in roi_size)
        if len(roi) != 2 or min(roi) < 1:
            raise ValueError(f"roi_size must be two positive integers (H, W), got {roi_size}.")
        resolved = resolve_device(device)
        inferer = SliceRestorationInferer(
            roi_size=roi,
            spatial_dim=2,
            transpose=True,
            amp=bool(amp) and resolved.type == "cuda",
            sw_batch_size=resolve_sw_batch_size(sw_batch_size, resolved),
            overlap=float(overlap),
            mode=mode,
            sw_device=resolved,
            device=resolved,
        )
        super().__init__(
            network,
            inferer,
            lambda x: normalize_intensity(x, (low, high)),
            lambda y: denormalize_intensity(y, (low, high)),
            device=resolved,
            output_dtype=output_dtype,
            clip_output=clip_output,
            progress=progress,
            intensity_range=(low, high),
        )

    @torch.no_grad()
    def restore_slice(self, image: torch.Tensor) -> torch.Tensor:
        """
        Restore normalised 2D images.

        Args:
            image: ``(B, 1, H, W)`` values in [0, 1], any device.

        Returns:
            ``(B, 1, H, W)`` float32 on the CPU, normalised (clipped to [0, 1] when ``clip_output``).
        """
        volume = image.transpose(-1, -2)[..., None]  # (B, 1, i = columns, j = rows, k = 1)
        return self._infer(volume)[..., 0].transpose(-1, -2)
