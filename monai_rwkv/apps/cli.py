"""
The ``monai-rwkv`` command line.

``monai-rwkv restore --bundle BUNDLE INPUT OUTPUT`` restores one image with a bundle: the network, weights and
sliding-window settings come from the bundle's ``configs/inference.json`` (options override them), and the work is
done by :func:`monai_rwkv.apps.restore.restore_task`, the same function the bundle's ``run`` entry uses. BUNDLE is a
bundle folder or the name of a bundle installed with the package (``ct_denoise`` or ``restore_rwkv_ct_denoise``;
see :func:`monai_rwkv.bundles.find_bundle`).

``monai-rwkv bundles`` lists the installed bundles (name, version, task from each ``metadata.json``);
``--json`` gives the same with each bundle's folder, ``--path NAME`` prints one bundle's folder.

``monai-rwkv batch --bundle BUNDLE INPUT_DIR OUTPUT_DIR`` restores every NIfTI file and DICOM series under
INPUT_DIR with :func:`monai_rwkv.apps.restore.restore_dataset`, as the bundle's ``run`` does: resumable (studies
verified finished are skipped, others redone), one failing study does not stop the others, and a per-study summary
is written to ``OUTPUT_DIR/restore_summary.csv`` (see docs/batch.md). ``--workers N`` restores N studies at a
time in worker processes (one model each; :mod:`monai_rwkv.apps.workers`); each study is claimed while it is
restored, so runs sharing OUTPUT_DIR never restore a study twice (:mod:`monai_rwkv.apps.claims`).

Exit status: 0 success, 1 error (one line ``error: <file>: <problem>`` on stderr), 2 usage error, 130 interrupted
(Ctrl-C), 143 / 129 terminated (SIGTERM: ``docker stop``, ``kill``, SLURM; SIGHUP). Warnings (e.g. NaN voxels, gaps
between DICOM slices) are one line ``warning: <message>`` each. On any error or signal nothing is left under
OUTPUT (outputs are written under a temporary name and renamed when complete).

Before any work the outputs are checked: an output never equals, lies inside or contains an input (compared by
real identity: ``..``, symbolic links and hard links see through spellings), ``--overwrite`` replaces a file only
by a file and a folder only by a DICOM series this program wrote, and an input the bundle's model was not made for
(another modality, colour, values outside its range; from the bundle's ``metadata.json``) is refused unless
``--allow-mismatch`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from monai_rwkv.apps.signals import Terminated, terminate_as_interrupt

__all__ = ["json_or_text", "main", "parse_args"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class _UsageError(Exception):
    """A wrong combination of arguments (exit status 2)."""


class _CommandError(Exception):
    """A failed precondition (missing INPUT, existing OUTPUT, no CUDA): exit status 1, message ``<what>: <problem>``."""


_BUNDLE_HELP = (
    "bundle name (see `monai-rwkv bundles`, e.g. ct_denoise) or bundle folder (configs/, models/); "
    "a bundle folder of that name in the current directory comes first"
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _overlap(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _strength(text: str) -> float:
    from monai_rwkv.networks.nets.blend import check_strength

    try:
        return check_strength(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-rwkv", description="Restore-RWKV medical image restoration.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    restore = commands.add_parser(
        "restore",
        help="restore one image with a bundle",
        description="Restore a NIfTI file, a DICOM file or a DICOM series folder with a MONAI bundle. "
        "OUTPUT ending with .nii or .nii.gz gets a NIfTI image; any other OUTPUT is a folder that gets a derived "
        "DICOM series (DICOM input only). The input is only read; outputs are written atomically.",
    )
    restore.add_argument("--bundle", required=True, metavar="BUNDLE", help=_BUNDLE_HELP)
    restore.add_argument("input", metavar="INPUT", help="NIfTI file, DICOM file or DICOM series folder")
    restore.add_argument("output", metavar="OUTPUT", help=".nii/.nii.gz file, or a folder for a DICOM series")
    restore.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    restore.add_argument("--series-uid", metavar="UID", help="series to read when the folder holds several")
    _add_bundle_options(restore)
    batch = commands.add_parser(
        "batch",
        help="restore every image under a folder with a bundle (resumable)",
        description="Restore every NIfTI file and DICOM series under INPUT_DIR into OUTPUT_DIR, as the bundle's run "
        "does: <name>_restored.nii.gz for each input, plus a <name>_restored/ DICOM series for DICOM inputs. "
        "Re-running skips the studies verified finished and redoes the others; a failing study does not stop the "
        "others; a per-study summary is written to OUTPUT_DIR/restore_summary.csv. Exit status 1 if any failed. "
        "Each study is claimed while it is restored (a hidden .<name>_restored.lock), so runs that share OUTPUT_DIR "
        "never restore the same study twice: a study another live run holds is reported 'claimed' and left to it; "
        "the claim of a process that is gone is taken over.",
    )
    batch.add_argument("--bundle", required=True, metavar="BUNDLE", help=_BUNDLE_HELP)
    batch.add_argument("input", metavar="INPUT_DIR", help="folder of NIfTI files and DICOM series (or one of them)")
    batch.add_argument("output", metavar="OUTPUT_DIR", help="output folder")
    batch.add_argument("--overwrite", action="store_true", help="redo every study, even those verified finished")
    batch.add_argument("--no-dicom", action="store_true", help="NIfTI outputs only (no DICOM series outputs)")
    batch.add_argument("--summary", metavar="FILE", help="summary CSV (default: OUTPUT_DIR/restore_summary.csv)")
    batch.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="restore N studies at a time in N worker processes, each loading the model once (on CUDA they share "
        "the GPU); default 1: all in this process",
    )
    batch.add_argument(
        "--worker-threads",
        type=_positive_int,
        metavar="T",
        help="torch threads per worker (default: torch's thread count divided by --workers, at least 1)",
    )
    _add_bundle_options(batch)
    listing = commands.add_parser(
        "bundles",
        help="list the bundles installed with monai-rwkv",
        description="List the bundles that come with monai-rwkv (name, version and task from each bundle's "
        "configs/metadata.json). Any of these names is accepted by --bundle, as is the bundle's folder name or a "
        "path to a bundle folder.",
    )
    shown = listing.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="a JSON list with each bundle's folder and title")
    shown.add_argument("--path", metavar="NAME", help="print the folder of bundle NAME (e.g. for monai.bundle run)")
    return parser


def _add_bundle_options(command: argparse.ArgumentParser) -> None:
    """Options that override the bundle's inference config (shared by ``restore`` and ``batch``)."""
    command.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    command.add_argument("--roi", nargs=2, type=_positive_int, metavar=("H", "W"), help="sliding-window patch size")
    command.add_argument("--overlap", type=_overlap, metavar="F", help="sliding-window overlap in [0, 1)")
    command.add_argument(
        "--sw-batch-size",
        type=_positive_int,
        metavar="N",
        help="patches per network call (default: the bundle's, auto: 32 on CUDA, 4 on the CPU)",
    )
    command.add_argument("--dtype", choices=("float32", "int16"), help="NIfTI output type (default: the bundle's)")
    command.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the network over 8 flips and rotations of each patch (8x the compute; see the bundle's README)",
    )
    command.add_argument(
        "--strength",
        type=_strength,
        metavar="S",
        help="keep this fraction in [0, 1] of the network's change to each pixel (default: the bundle's, 1: the "
        "whole restoration; lower keeps more of the input's noise and texture, see the bundle's README)",
    )
    command.add_argument(
        "--task",
        metavar="NAME",
        help="the task, for a bundle that serves several (all_in_one: ct, mri or pet, or auto: each DICOM series by "
        "its Modality; default: the bundle's)",
    )
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.add_argument(
        "-v", "--verbose", action="store_true", help="say on stderr which device and Bi-WKV kernels run, and threads"
    )
    command.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="restore inputs that do not fit the bundle's input (another modality, colour, other units) with a "
        "warning instead of refusing them",
    )
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="override any bundle config item (VALUE parsed as JSON when possible), e.g. network_def#dim=8",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 on usage errors)."""
    return _parser().parse_args(argv)


def json_or_text(text: str) -> Any:
    """A config value given as text on a command line: parsed as JSON when it is JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Bundle config items set by the options."""
    overrides: dict[str, Any] = {"device": args.device, "progress": not args.no_progress}
    if args.roi is not None:
        overrides["roi_size"] = list(args.roi)
    if args.overlap is not None:
        overrides["overlap"] = args.overlap
    if args.sw_batch_size is not None:
        overrides["sw_batch_size"] = args.sw_batch_size
    if args.dtype is not None:
        overrides["output_dtype"] = args.dtype
    if args.self_ensemble:
        overrides["self_ensemble"] = True
    if args.strength is not None:
        overrides["strength"] = args.strength
    if args.task is not None:
        overrides["task"] = args.task
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"--set expects ID=VALUE, got {item!r}")
        overrides[key] = json_or_text(value)
    return overrides


def _load_config(args: argparse.Namespace, overrides: Mapping[str, Any]) -> Any:
    """The bundle's inference config with ``overrides``; ``--task`` only for a bundle that serves several tasks."""
    from monai_rwkv.apps.bundle import load_bundle_config
    from monai_rwkv.bundles import served_tasks

    parser = load_bundle_config(args.bundle, "inference.json", overrides)
    if args.task is not None and not served_tasks(parser):
        raise _UsageError(f"--task: {args.bundle} serves one task; --task is for bundles that serve several")
    return parser


def _is_nifti(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(_NIFTI_SUFFIXES)


def _check_paths(args: argparse.Namespace) -> None:
    """Cheap checks of the bundle, INPUT and OUTPUT (the same output checks as a batch study), before any loading."""
    from monai_rwkv.apps.restore import InputImage, RestoreTask, check_outputs
    from monai_rwkv.data.outputs import InputGuard, OutputConflictError

    source, output = Path(args.input), Path(args.output)
    if not (Path(args.bundle) / "configs" / "inference.json").is_file():
        raise _CommandError(f"{args.bundle}: not a bundle (no configs/inference.json)")
    if not (source.exists() or source.is_symlink()):
        raise _CommandError(f"{source}: no such file or folder")
    if not source.exists():
        raise _CommandError(f"{source}: a symbolic link that cannot be followed (broken, or a loop)")
    if not (source.is_file() or source.is_dir()):
        raise _CommandError(f"{source}: not a regular file or folder (a pipe, socket or device)")
    if not _is_nifti(output) and _is_nifti(source):
        raise _UsageError(f"a DICOM series OUTPUT needs a DICOM INPUT; give OUTPUT a .nii.gz name for {source}")
    nifti = _is_nifti(output)
    task = RestoreTask(InputImage(source, source.name), output if nifti else None, None if nifti else output)
    try:
        check_outputs(task, InputGuard([source]), args.overwrite)
    except (OutputConflictError, FileExistsError) as e:
        raise _CommandError(str(e)) from None
    folder = output.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise _CommandError(f"{output}: cannot write the output: {folder} is not a writable folder (permission denied)")


def _restore(args: argparse.Namespace) -> list[Path]:
    """Read INPUT, build the bundle's restorer, restore with the bundles' own :func:`restore_task`."""
    from monai_rwkv.apps.bundle import bundle_input_spec, bundle_metadata, model_name_version
    from monai_rwkv.apps.restore import InputImage, RestoreTask, check_input, error_line, read_volume, restore_task
    from monai_rwkv.data import MultipleSeriesError, check_dicom_source
    from monai_rwkv.inference import resolve_device

    overrides = _config_overrides(args)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise _CommandError(f"--device {args.device}: {e}") from None
    _say_backend(args, device)
    parser = _load_config(args, overrides)  # parsed only: no network is built yet
    metadata = bundle_metadata(parser)
    spec = bundle_input_spec(parser)
    source, output = Path(args.input), Path(args.output)
    image = InputImage(source, source.name, series_uid=args.series_uid, is_dicom=not _is_nifti(source))
    nifti = _is_nifti(output)
    task = RestoreTask(image, nifti_output=output if nifti else None, dicom_output=None if nifti else output)
    try:
        volume = read_volume(image)  # an unreadable input fails before the model is loaded
    except MultipleSeriesError as e:
        listing = "; ".join(f"{uid} {desc}" for uid, desc in e.series.items())
        if args.series_uid is not None:
            raise _CommandError(
                f"{e.path}: --series-uid {args.series_uid} not found; series present: {listing}"
            ) from None
        raise _CommandError(
            f"{e.path}: {len(e.series)} DICOM series in this folder (never mixed); restore one at a time "
            f"with --series-uid UID: {listing}"
        ) from None
    try:  # before the model is loaded and the volume restored
        check_input(spec, volume, source, args.allow_mismatch)
        if not nifti:
            check_dicom_source(volume.meta)
    except ValueError as e:
        raise _CommandError(error_line(source, e)) from None
    restorer = parser.get_parsed_content("restorer")
    name, version = model_name_version(metadata, parser)
    return restore_task(restorer, task, name, version, overwrite=args.overwrite, volume=volume)


def _say_backend(args: argparse.Namespace, device: torch.device) -> None:
    """With ``--verbose``: one ``info:`` line on stderr naming the device, the Bi-WKV kernels and the threads."""
    if not args.verbose:
        return
    import torch  # noqa: F811 - imported lazily: the CLI starts without torch

    from monai_rwkv.ops import describe_backend

    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    print(f"info: device {device}{threads}; Bi-WKV kernels: {describe_backend(device)}", file=sys.stderr)


def _check_batch_paths(args: argparse.Namespace) -> None:
    """Cheap checks of the bundle and INPUT_DIR before anything is loaded."""
    if not (Path(args.bundle) / "configs" / "inference.json").is_file():
        raise _CommandError(f"{args.bundle}: not a bundle (no configs/inference.json)")
    from monai_rwkv.data.outputs import file_identity, real_path

    if not Path(args.input).exists():
        raise _CommandError(f"{args.input}: no such file or folder")
    identity = file_identity(args.output)
    if real_path(args.output) == real_path(args.input) or (identity and identity == file_identity(args.input)):
        raise _UsageError("OUTPUT_DIR must differ from INPUT_DIR (compared after resolving links and '..')")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise _CommandError(f"{args.output}: not a folder; OUTPUT_DIR must be a folder (or not exist yet)")


def _batch(args: argparse.Namespace) -> int:
    """Restore a folder with the bundle's :func:`restore_dataset`; one line per study, then the counts."""
    from monai_rwkv.apps.bundle import bundle_input_spec, bundle_metadata, model_name_version
    from monai_rwkv.apps.restore import logger as restore_logger
    from monai_rwkv.apps.restore import restore_dataset
    from monai_rwkv.apps.workers import BundleRestorerFactory
    from monai_rwkv.inference import resolve_device

    overrides = _config_overrides(args)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise _CommandError(f"--device {args.device}: {e}") from None
    _say_backend(args, device)
    parser = _load_config(args, overrides)
    if args.workers > 1:  # each worker builds the model from the same config and overrides
        restorer = BundleRestorerFactory.from_parser(parser, args.bundle)
    else:
        restorer = parser.get_parsed_content("restorer")
    metadata = bundle_metadata(parser)
    name, version = model_name_version(metadata, parser)

    def show(outcome: Any) -> None:
        if outcome.status == "failed":
            print(f"error: {outcome.detail}", file=sys.stderr, flush=True)
        else:
            print(outcome.line(), flush=True)

    restore_logger.setLevel(logging.CRITICAL)  # each study is printed by `show`
    report = restore_dataset(
        restorer,
        args.input,
        args.output,
        name,
        version,
        args.overwrite,
        not args.no_dicom,
        args.summary,
        show,
        spec=bundle_input_spec(parser),
        allow_mismatch=args.allow_mismatch,
        workers=args.workers,
        worker_threads=args.worker_threads,
        progress=not args.no_progress,
    )
    print(f"{len(report.studies)} studies: {report.counts_line()}; summary: {report.summary}")
    if report.errors:
        print(f"error: {len(report.errors)} input(s) failed (see {report.summary})", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _resolve_bundle(args: argparse.Namespace) -> None:
    """Replace a bundle name in ``args.bundle`` by the bundle's folder (a folder path is kept as given)."""
    from monai_rwkv.bundles import BundleNotFoundError, find_bundle

    try:
        folder = find_bundle(args.bundle)
    except BundleNotFoundError as e:
        raise _CommandError(str(e)) from None
    if folder != Path(args.bundle):  # messages keep a folder as the user spelled it
        args.bundle = os.fspath(folder)


def _bundles(args: argparse.Namespace) -> int:
    """``monai-rwkv bundles``: a table of name, version and task; ``--json``; ``--path NAME``."""
    from monai_rwkv.bundles import BundleNotFoundError, find_bundle, list_bundles

    try:
        if args.path is not None:
            if not args.path:
                raise BundleNotFoundError("--path: expected a bundle name")
            print(os.path.abspath(find_bundle(args.path)))
            return EXIT_OK
        bundles = list_bundles()
    except BundleNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps([info.as_dict() for info in bundles], indent=2))
        return EXIT_OK
    rows = [("name", "version", "task")] + [(info.name, info.version, info.task) for info in bundles]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, version, task in rows:
        print(f"{name:<{widths[0]}}  {version:<{widths[1]}}  {task}".rstrip())
    return EXIT_OK


def _error_line(args: argparse.Namespace, error: BaseException) -> str:
    from monai_rwkv.apps.restore import error_line

    message = str(error)
    if message.startswith((os.fspath(args.output), os.path.abspath(args.output))):
        return message  # about the output (e.g. it appeared while restoring)
    return error_line(args.input, error)


def _quiet_optional_backends() -> None:
    """Silence MONAI's notices about an optional GPU DICOM decoder (nvImageCodec) that this command never uses."""
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` replacement: one line ``warning: <message>`` on stderr, no source location."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``monai-rwkv``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    with warnings.catch_warnings():
        warnings.simplefilter("default", UserWarning)  # each distinct warning once, even if main() runs again
        _quiet_optional_backends()
        warnings.showwarning = _show_warning
        with terminate_as_interrupt():
            return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the command; every failure becomes one ``error: <file>: <problem>`` line and an exit status."""
    if args.command == "bundles":
        return _bundles(args)
    try:
        _resolve_bundle(args)
        if args.command == "batch":
            _check_batch_paths(args)
            return _batch(args)
        _check_paths(args)
        written = _restore(args)
    except _UsageError as e:
        parser.error(str(e))  # exits with status 2
    except _CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as e:  # bundle helpers exit with a one-line message
        if isinstance(e.code, str):
            print(e.code if e.code.startswith("error: ") else f"error: {e.code}", file=sys.stderr)
            return EXIT_ERROR
        raise
    except KeyboardInterrupt as e:
        done = "finished studies are kept; run again to resume" if args.command == "batch" else "no output was written"
        what = f"terminated ({e.name})" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"
        print(f"error: {args.input}: {what}; {done}", file=sys.stderr)
        return e.exit_status if isinstance(e, Terminated) else EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every failure is reported as one line
        print(f"error: {_error_line(args, e)}", file=sys.stderr)
        return EXIT_ERROR
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
