"""
Helpers for this project's MONAI bundles: locate the bundle being run, parse a bundle's configs from Python,
and the ``run`` entries of the bundles (thin wrappers that turn failures into one-line exits).

Bundles hold configs, docs and weights only; all code they run is imported from ``monai_rwkv``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from torch import nn

from monai_rwkv.apps.evaluate import evaluate_restoration
from monai_rwkv.apps.restore import RestoreReport, error_line, restore_dataset
from monai_rwkv.apps.signals import Terminated, terminate_as_interrupt
from monai_rwkv.bundles import BundleNotFoundError, find_bundle
from monai_rwkv.data import InputSpec
from monai_rwkv.data.errors import ImageReadError, one_line
from monai_rwkv.inference import VolumeRestorer, load_network
from monai_rwkv.networks.nets import BlendWithInput, SelfEnsemble, check_strength

__all__ = [
    "bundle_input_spec",
    "bundle_metadata",
    "bundle_root",
    "exit_on_errors",
    "flag",
    "load_bundle_config",
    "load_bundle_network",
    "model_name_version",
    "post_processing",
    "restoring_configs",
    "run_evaluate",
    "run_restore",
    "task_config",
    "weights_for",
]

logger = logging.getLogger(__name__)


def _workflow() -> Any:
    """The ``monai.bundle`` ``ConfigWorkflow`` on the call stack that has a config folder, if any."""
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigWorkflow) and getattr(candidate, "config_root_path", None) is not None:
            return candidate
        frame = frame.f_back
    return None


def _workflow_bundle_root() -> Path | None:
    """The bundle folder of the ``monai.bundle`` ``ConfigWorkflow`` on the call stack, if any."""
    workflow = _workflow()
    if workflow is None:
        return None
    root = Path(workflow.config_root_path)
    return root.parent if root.name == "configs" else root


def bundle_root(default: str | os.PathLike = ".") -> str:
    """
    Absolute path of the bundle whose config is being run, for a config's ``"bundle_root"``.

    Under ``python -m monai.bundle run --config_file <bundle>/configs/x.json`` (or ``monai.bundle.run`` /
    ``ConfigWorkflow`` from Python) this is ``<bundle>``, the folder above the configs, whatever the current
    directory; elsewhere it is ``default``. ``--bundle_root DIR`` on the command line still overrides it.
    """
    root = _workflow_bundle_root()
    return os.path.abspath(root if root is not None else default)


def load_bundle_config(
    bundle_dir: str | os.PathLike,
    config: str | Sequence[str] = "inference.json",
    overrides: Mapping[str, Any] | None = None,
) -> ConfigParser:
    """
    Parse ``<bundle_dir>/configs/<config>`` with its ``metadata.json`` (as ``_meta_``), ``bundle_root`` set to
    ``bundle_dir``, then apply ``overrides`` (config ids such as ``"device"`` or ``"network_def#dim"``; a value may
    be an object, e.g. a network for ``"network"``). Several configs (``["inference.json", "train.json"]``) are
    merged in order, as ``monai.bundle run --config_file "[a,b]"`` does.

    Raises:
        FileNotFoundError: the bundle has no such config.
    """
    configs = Path(bundle_dir) / "configs"
    files = [configs / name for name in ([config] if isinstance(config, str) else config)]
    for config_file in files:
        if not config_file.is_file():
            raise FileNotFoundError(f"{bundle_dir}: not a bundle (no configs/{config_file.name})")
    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in files])
    if (configs / "metadata.json").is_file():
        parser.read_meta(os.fspath(configs / "metadata.json"))
    parser["bundle_root"] = os.path.abspath(bundle_dir)
    parser.update(dict(overrides or {}))
    return parser


def task_config(
    tasks: Mapping[str, str],
    task: str,
    config: str | Sequence[str] = "inference.json",
    overrides: Mapping[str, Any] | None = None,
) -> ConfigParser:
    """
    The configs of the bundle that runs ``task``, for a bundle that serves several tasks with one network (the
    all-in-one bundle): each task then reads, normalises, infers and writes exactly as its own bundle does.

    Args:
        tasks: task name -> bundle name or folder (see :func:`monai_rwkv.bundles.find_bundle`), e.g.
            ``{"ct": "restore_rwkv_ct_denoise", "mri": "restore_rwkv_mri_sr"}``.
        task: a key of ``tasks``.
        config: the config file(s) of that bundle, merged in order (:func:`load_bundle_config`).
        overrides: config ids of that bundle to set, e.g. ``{"network": network, "device": "cpu"}``.

    Exits with one line when ``task`` is not a key of ``tasks`` or its bundle cannot be found.
    """
    key = str(task).strip().lower()
    if key not in tasks:
        raise SystemExit(f"error: --task {task!r}: expected one of {', '.join(tasks)}")
    try:
        folder = find_bundle(tasks[key])
    except BundleNotFoundError as e:
        raise SystemExit(f"error: task {key!r}: {e}") from None
    return load_bundle_config(folder, config, overrides)


def bundle_metadata(parser: ConfigParser) -> dict[str, Any]:
    """
    The metadata that a bundle's restorations are checked against (``network_data_format``) and named by (name,
    version): the config's ``"metadata"`` entry when it has one (a bundle serving several tasks gives the chosen
    task's input format there), its ``metadata.json`` (``_meta_``) otherwise. Loads no network.
    """
    if "metadata" in parser:
        return dict(parser.get_parsed_content("metadata"))
    return dict(parser.get("_meta_", {}))


def bundle_input_spec(parser: ConfigParser) -> Any:
    """
    What a bundle's restorations check their inputs against: the config's ``"input_spec"`` entry when it has one
    (a bundle that chooses the task of each input gives a :class:`~monai_rwkv.apps.routing.TaskSpecs` there),
    else the :class:`~monai_rwkv.data.InputSpec` of :func:`bundle_metadata`. Loads no network.
    """
    if "input_spec" in parser:
        return parser.get_parsed_content("input_spec")
    return InputSpec.from_metadata(bundle_metadata(parser))


def load_bundle_network(
    network_def: nn.Module | None,
    weights: str | os.PathLike,
    device: str | None = "auto",
    self_ensemble: bool | str = False,
    strength: float | str = 1.0,
) -> nn.Module:
    """
    :func:`~monai_rwkv.inference.load_network` for bundle configs: a missing or unsuitable checkpoint exits with
    one line ``error: <checkpoint>: <problem>`` instead of a traceback through the config parser. With
    ``self_ensemble`` (a bool or a command-line string, see :func:`flag`) the loaded network is wrapped in
    :class:`~monai_rwkv.networks.nets.SelfEnsemble` (the average over 8 flips and rotations, 8 times the compute)
    of the network's ``spatial_dims`` (2 when it has none). A ``strength`` below 1 (a number in [0, 1], also as
    command-line text) wraps the result in :class:`~monai_rwkv.networks.nets.BlendWithInput`: that fraction of the
    network's change to each pixel is kept; a value outside [0, 1] exits with one line.
    """
    strength = _strength(strength)
    try:
        network = load_network(network_def, weights, device)
    except RuntimeError as e:  # load_state_dict: keys or shapes differ
        problem = f"checkpoint does not fit network_def ({one_line(e)})"
        raise SystemExit(f"error: {os.fspath(weights)}: {problem}") from None
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {error_line(weights, e)}") from None
    if flag(self_ensemble, "self_ensemble"):
        network = SelfEnsemble(network, getattr(network, "spatial_dims", 2)).eval()
    if strength < 1.0:
        network = BlendWithInput(network, strength).eval()
    return network


def _strength(value: Any) -> float:
    try:
        return check_strength(value)
    except ValueError as e:
        raise SystemExit(f"error: --strength: {e}") from None


def weights_for(bundle_root: str | os.PathLike, files: Mapping[str, str], value: Any, name: str = "factor") -> str:
    """
    The checkpoint of a bundle that ships one set of weights per value of a setting (one per super-resolution
    factor, say). ``files`` maps the value written as ``f"{float(value):g}"`` (``"4"``, ``"2"``, ``"2.5"``) to a
    path relative to ``bundle_root``. A value without weights exits with one line naming the values that have them.
    """
    try:
        key = f"{float(value):g}"
    except (TypeError, ValueError):
        raise SystemExit(f"error: {name} {value!r} is not a number") from None
    if key not in files:
        have = ", ".join(sorted(files, key=float))
        raise SystemExit(
            f"error: {os.fspath(bundle_root)}: no trained weights for {name} {key} (weights exist for {name} "
            f"{have}); set weights to a checkpoint of your own (--weights FILE with monai.bundle run, "
            f"--set weights=FILE with monai-rwkv)"
        )
    return os.path.join(os.fspath(bundle_root), files[key])


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def flag(value: Any, name: str = "option") -> bool:
    """
    A boolean config value as given on the ``monai.bundle`` command line.

    ``--overwrite false`` reaches a config as the *string* ``"false"``, which Python treats as true; this accepts
    booleans, 0 / 1 and the strings true/false, yes/no, on/off, 1/0 (any case) and exits with one line otherwise.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise SystemExit(f"error: --{name}: expected True or False, got {value!r}")


#: the optional post-processing of a restoration bundle: config switch -> its words in the model version. Each
#: switch comes with a ``<switch>_def`` item (what it applies) in the bundles that offer it.
POST_PROCESSING = {"coarse_fusion": "coarse fusion", "residual_smoothing": "residual smoothing"}


def restoring_configs(config: Any) -> dict[str | None, Any]:
    """
    The configs that say which post-processing (:data:`POST_PROCESSING`) a bundle config's restorations get, without
    building a network: ``{None: config}`` for a bundle of one task; for a bundle that serves several tasks with one
    network (``tasks`` and ``task`` items, the all-in-one bundle) the inference config of each task bundle that
    ``task`` runs (every task for ``"auto"``), with ``config``'s own post-processing switches set on it, as that
    bundle passes them to its tasks (``task_settings``). A switch counts where the task's config also defines it.
    """
    if not isinstance(config, ConfigParser) or "tasks" not in config or "task" not in config:
        return {None: config}
    from monai_rwkv.apps.routing import is_auto_task  # noqa: PLC0415 - routing builds on this module

    tasks = config.get_parsed_content("tasks")
    task = config.get_parsed_content("task")
    names = list(tasks) if is_auto_task(task) else [str(task).strip().lower()]
    switches = {key: config.get_parsed_content(key) for key in POST_PROCESSING if key in config}
    return {name: task_config(tasks, name, "inference.json", switches) for name in names}


def post_processing(config: Any) -> list[str]:
    """The switches of :data:`POST_PROCESSING` that ``config`` (one task's config or a mapping) turns on and defines."""
    return [
        key
        for key in POST_PROCESSING
        if flag(config.get(key, False), key) and (not isinstance(config, ConfigParser) or f"{key}_def" in config)
    ]


def model_name_version(metadata: Mapping[str, Any], config: Any = None) -> tuple[str, str]:
    """
    ``(name, version)`` of a bundle's metadata, for DICOM descriptions, manifests and reports. The settings of the
    bundle ``config`` (a ``ConfigParser`` or a mapping; None: the defaults) that change
    what the weights produce are part of the version: a partial restoration (``strength`` below 1, see
    :func:`load_bundle_network`) and the post-processing that is on (:func:`post_processing` of each of
    :func:`restoring_configs`: the coarse-scale fusion, :class:`~monai_rwkv.inferers.CoarseScaleFusion`, and the
    residual smoothing, :class:`~monai_rwkv.inferers.ResidualSmoothing`), e.g. ``"0.13.0 strength 0.5"``,
    ``"0.14.0 coarse fusion"``, or for an ``auto`` run of a bundle serving several tasks
    ``"0.2.5 (ct: coarse fusion residual smoothing)"``: derived DICOM series say so, and studies finished with
    other settings are redone.
    """
    settings = config if config is not None else {}
    version = str(metadata.get("version", "0"))
    strength = _strength(settings.get("strength", 1.0))
    if strength < 1.0:
        version = f"{version} strength {strength:g}"
    steps = {
        task: " ".join(POST_PROCESSING[key] for key in post_processing(c))
        for task, c in restoring_configs(settings).items()
    }
    if len(steps) == 1:
        words = next(iter(steps.values()))
        version = f"{version} {words}" if words else version
    elif any(steps.values()):
        version = f"{version} ({'; '.join(f'{task}: {words}' for task, words in steps.items() if words)})"
    return str(metadata.get("name", "Restore-RWKV")), version


def exit_on_errors(report: RestoreReport) -> RestoreReport:
    """
    Return ``report``, or exit with status 1 and a one-line summary when inputs failed (each failure was
    already logged as one ``error: <file>: <problem>`` line), so ``monai.bundle run`` does not print a traceback.
    """
    if report.ok:
        return report
    summary = "; ".join(report.errors[:3]) + ("; ..." if len(report.errors) > 3 else "")
    raise SystemExit(f"error: {len(report.errors)} input(s) failed: {summary}")


def _count(value: Any, name: str) -> int:
    """A positive integer config value (``--workers 2`` may reach a config as the string ``"2"``)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1 or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise SystemExit(f"error: --{name}: expected a positive integer, got {value!r}")
    return number


def _worker_factory(restorer: Any) -> Any:
    """The factory each worker builds the restorer with: ``restorer`` itself, or the running bundle's config."""
    from monai_rwkv.apps.workers import BundleRestorerFactory, RestorerFactory

    if isinstance(restorer, RestorerFactory):
        return restorer
    workflow = _workflow()
    if workflow is None:
        raise SystemExit(
            "error: workers > 1 needs a bundle run (python -m monai.bundle run) or a RestorerFactory: each worker "
            "builds its own model"
        )
    return BundleRestorerFactory.from_parser(workflow.parser)


def run_restore(
    restorer: VolumeRestorer,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    metadata: Mapping[str, Any],
    overwrite: bool = False,
    dicom_output: bool = True,
    summary_file: str | os.PathLike | None = None,
    allow_mismatch: bool = False,
    workers: int | str | None = None,
    worker_threads: int | str | None = None,
    spec: Any = None,
) -> RestoreReport:
    """
    The ``run`` entry of the restoration bundles: :func:`~monai_rwkv.apps.restore.restore_dataset` with the model
    name, version and input spec (modality, channels, value range) from the bundle's metadata (resumable; summary
    in ``<output_dir>/restore_summary.csv`` unless ``summary_file``), exiting with status 1 and one line after all
    studies ran when any failed. Inputs that do not fit the spec fail unless ``allow_mismatch``. SIGTERM and
    SIGHUP stop the run like Ctrl-C (nothing partial is left) with exit status ``128 + signal``.

    ``workers`` > 1 restores studies in that many worker processes (see :mod:`monai_rwkv.apps.workers`), each
    building the restorer from the running bundle's config (with the command line's overrides), or from
    ``restorer`` when it is a :class:`~monai_rwkv.apps.workers.RestorerFactory`. None: the running bundle config's
    ``workers`` item if it has one (``--workers N`` on the ``monai.bundle run`` command line), else 1.
    ``worker_threads``: torch threads per worker (None: the config's ``worker_threads``, else torch's thread count
    divided by ``workers``).
    ``spec``: what inputs are checked against (an :class:`~monai_rwkv.data.InputSpec` or
    :class:`~monai_rwkv.apps.routing.TaskSpecs`); None: the spec of ``metadata``.
    """
    if dataset_dir is None:
        raise SystemExit("error: dataset_dir is required: pass --dataset_dir <folder, NIfTI file or DICOM series>")
    overwrite, dicom_output = flag(overwrite, "overwrite"), flag(dicom_output, "dicom_output")
    allow_mismatch = flag(allow_mismatch, "allow_mismatch")
    workflow = _workflow()
    config = workflow.parser if workflow is not None else ConfigParser()
    name, version = model_name_version(metadata, config)
    workers = _count(config.get("workers", 1) if workers is None else workers, "workers")
    worker_threads = config.get("worker_threads") if worker_threads is None else worker_threads
    worker_threads = None if worker_threads is None else _count(worker_threads, "worker_threads")
    progress = False
    if workers > 1:  # a bar over studies in this process (the workers show none)
        restorer = _worker_factory(restorer)
        progress = flag(config.get("progress", False), "progress")
    try:
        with terminate_as_interrupt():
            report = restore_dataset(
                restorer,
                dataset_dir,
                output_dir,
                name,
                version,
                overwrite,
                dicom_output,
                summary_file=summary_file,
                spec=InputSpec.from_metadata(metadata) if spec is None else spec,
                allow_mismatch=allow_mismatch,
                workers=workers,
                worker_threads=worker_threads,
                progress=progress,
            )
    except Terminated as e:
        print(f"error: {dataset_dir}: terminated ({e.name}); finished studies are kept", file=sys.stderr, flush=True)
        raise SystemExit(e.exit_status) from None
    except (OSError, ValueError, ImageReadError) as e:
        raise SystemExit(f"error: {e}") from None
    counts = len(report.written), len(report.skipped), len(report.errors)
    logger.info("%d output(s) written, %d skipped, %d error(s)", *counts)
    return exit_on_errors(report)


def run_evaluate(
    restorer: VolumeRestorer,
    dataset_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    metadata: Mapping[str, Any],
    **kwargs: Any,
) -> dict[str, Any]:
    """
    The ``run`` entry of the evaluation configs: :func:`~monai_rwkv.apps.evaluate.evaluate_restoration` with the
    model name and version from the metadata, exiting with one line on failure.

    Args:
        kwargs: ``degradation`` (the config's), ``window``, ``degraded_dir``, ``save_images``, ``overwrite``.
    """
    if dataset_dir is None:
        raise SystemExit("error: dataset_dir is required: pass --dataset_dir <folder of clean reference volumes>")
    workflow = _workflow()
    name, version = model_name_version(metadata, workflow.parser if workflow is not None else None)
    for key in ("save_images", "overwrite"):
        if key in kwargs:
            kwargs[key] = flag(kwargs[key], key)
    try:
        summary = evaluate_restoration(
            restorer, dataset_dir, output_dir, model_name=name, model_version=version, **kwargs
        )
    except (OSError, ValueError, ImageReadError) as e:
        raise SystemExit(f"error: {e}") from None
    if summary["errors"]:
        raise SystemExit(f"error: {len(summary['errors'])} volume(s) failed: {'; '.join(summary['errors'][:3])}")
    return summary
