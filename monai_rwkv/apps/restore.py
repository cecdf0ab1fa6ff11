"""
Restore image files end to end: find the inputs, read them, restore them slice-wise, write NIfTI / DICOM outputs.

Used by the bundles' ``run`` entries and by the ``monai-rwkv restore`` command, so both take the same path:
:func:`restore_task` does the work for one input, whatever chose its outputs.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.data import MetaTensor

from monai_rwkv.apps.batch import (
    STATUSES,
    SUMMARY_NAME,
    StudyOutcome,
    fingerprint,
    manifest_path,
    read_manifest_problem,
    write_manifest,
    write_summary,
)
from monai_rwkv.apps.claims import CLAIM_TIMEOUT, StudyClaimed, acquire_claim, claim_path
from monai_rwkv.data import (
    DICOM_SOURCE_FILES,
    ImageReadError,
    SimpleITKReader,
    sanitize_filename,
    sitk_load_image,
    write_dicom_series,
    write_nifti,
)
from monai_rwkv.data.dicom_series import scan_dicom_folder
from monai_rwkv.data.dicom_writer import is_restored_series
from monai_rwkv.data.errors import one_line
from monai_rwkv.data.outputs import InputGuard, check_replaceable, real_path
from monai_rwkv.data.provenance import nifti_restoration_note
from monai_rwkv.data.spec import InputSpec
from monai_rwkv.inference import VolumeRestorer

if TYPE_CHECKING:
    from monai_rwkv.apps.workers import RestorerFactory

__all__ = [
    "NIFTI_SUFFIXES",
    "InputImage",
    "InputMismatchError",
    "InputSpec",
    "check_input",
    "check_outputs",
    "RestoreReport",
    "RestoreTask",
    "StudyOutcome",
    "error_line",
    "find_inputs",
    "is_nifti",
    "plan_tasks",
    "read_volume",
    "unique_names",
    "restore_dataset",
    "restore_task",
    "restore_tasks",
    "run_study",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: appended to the input's name to name its outputs.
OUTPUT_POSTFIX = "_restored"

logger = logging.getLogger(__name__)


def is_nifti(path: str | os.PathLike) -> bool:
    """True for names ending with ``.nii`` or ``.nii.gz`` (any case)."""
    return os.fspath(path).lower().endswith(NIFTI_SUFFIXES)


def _nifti_stem(name: str) -> tuple[str, str]:
    """``"a.nii.gz"`` -> ``("a", ".nii.gz")``."""
    suffix = next(s for s in sorted(NIFTI_SUFFIXES, key=len, reverse=True) if name.lower().endswith(s))
    return name[: -len(suffix)], name[-len(suffix) :]


def error_line(path: str | os.PathLike, error: BaseException) -> str:
    """One line ``"<path>: <problem>"`` for an error (reader errors already name their file)."""
    if isinstance(error, ImageReadError):
        return str(error)
    # a mismatch lists every problem and ends with what to do: not cut at one_line's usual length
    message = one_line(error, 2000) if isinstance(error, InputMismatchError) else one_line(error)
    path = os.fspath(path)
    return message if message.startswith(path) else f"{path}: {message}"


class InputMismatchError(ValueError):
    """An input that the model was not made for (another modality, colour, other units); one line."""


def check_input(
    spec: InputSpec | None, image: MetaTensor, path: str | os.PathLike, allow_mismatch: bool = False
) -> None:
    """
    Check ``image`` (as read from ``path``) against what the model accepts.

    Args:
        spec: the model's input spec (None: no check).
        image: channel-first image with its meta.
        path: the input, named in the message.
        allow_mismatch: warn (one line per problem) and go on instead of refusing.

    Raises:
        InputMismatchError: ``"<path>: not an input for this model (expects ...): <problems>; ..."``.
    """
    if spec is None:
        return
    problems = spec.problems(image, getattr(image, "meta", {}), path)
    if not problems:
        return
    if allow_mismatch:
        for problem in problems:
            warnings.warn(f"{path}: {problem}; restored anyway (allow_mismatch)", stacklevel=2)
        return
    raise InputMismatchError(
        f"{path}: not an input for this model (it expects {spec.describe()}): {'; '.join(problems)}; "
        "pass --allow-mismatch (bundle: --allow_mismatch true) to restore it anyway"
    )


@dataclass(frozen=True)
class InputImage:
    """
    One image to restore.

    Attributes:
        path: a NIfTI file, a DICOM file or a DICOM series folder.
        name: base name of its outputs, a relative POSIX path of safe components (no suffix).
        suffix: output suffix of the NIfTI output (the input's for NIfTI inputs, ``.nii.gz`` for DICOM).
        series_uid: the series to read when a folder holds several DICOM series.
        is_dicom: whether the input is DICOM (then a DICOM series output is possible).
        key: the input's relative path in its dataset (POSIX, ``#<uid>`` appended for one series of several);
            it tells inputs apart when their names collide. Empty: the path as given.
        problem: why this input cannot be read, found while searching (a broken link, a symbolic link loop,
            an unreadable folder); such an input is a failed study, the others still run.
    """

    path: Path
    name: str
    suffix: str = ".nii.gz"
    series_uid: str | None = None
    is_dicom: bool = False
    key: str = ""
    problem: str | None = None


@dataclass(frozen=True)
class RestoreTask:
    """One input and where its restored version goes (None: that output is not written)."""

    image: InputImage
    nifti_output: Path | None = None
    dicom_output: Path | None = None

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.nifti_output, self.dicom_output) if p is not None]


@dataclass
class RestoreReport:
    """
    What :func:`restore_tasks` did.

    Attributes:
        written: outputs written (new or redone).
        skipped: outputs kept because their study was verified finished (see :mod:`monai_rwkv.apps.batch`).
        errors: one line ``<file>: <problem>`` per failed study.
        studies: one :class:`~monai_rwkv.apps.batch.StudyOutcome` per study, in order.
        summary: the CSV summary written, if any.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    studies: list[StudyOutcome] = field(default_factory=list)
    summary: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Number of studies per status (``written``, ``skipped``, ``redone``, ``failed``, ``claimed``)."""
        return {status: sum(s.status == status for s in self.studies) for status in STATUSES}

    def counts_line(self) -> str:
        """``"W written, S skipped, R redone, F failed"``, then ``", C claimed"`` when some studies were claimed."""
        counts = self.counts()
        if not counts["claimed"]:
            del counts["claimed"]
        return ", ".join(f"{n} {status}" for status, n in counts.items())


def _safe_parts(relative: Path) -> list[str]:
    return [sanitize_filename(part) for part in relative.parts if part not in ("", ".")]


def _dicom_series_inputs(folder: Path, root: Path) -> list[InputImage]:
    """The DICOM series directly inside ``folder`` (one input per SeriesInstanceUID); [] if there are none."""
    try:
        headers = scan_dicom_folder(folder)
    except ImageReadError:
        return []
    groups: dict[str, list] = {}
    for header in headers:
        groups.setdefault(header.series_uid, []).append(header)
    base = _safe_parts(folder.relative_to(root)) or [sanitize_filename(folder.absolute().name)]
    key = folder.relative_to(root).as_posix()
    inputs = []
    for index, uid in enumerate(sorted(groups)):
        name = list(base)
        if len(groups) > 1:
            name[-1] = f"{name[-1]}_series{index + 1}"
        several = len(groups) > 1
        inputs.append(
            InputImage(
                folder,
                "/".join(name),
                series_uid=uid if several else None,
                is_dicom=True,
                key=f"{key}#{uid}" if several else key,
            )
        )
    return inputs


def _visible(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed (a loop, a missing target), or None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop: cannot be read"
        return f"broken symbolic link to {os.readlink(path)} ({e.strerror})"
    return None


def find_inputs(path: str | os.PathLike) -> list[InputImage]:
    """
    Every NIfTI file and every DICOM series under ``path`` (recursively; hidden files and folders ignored;
    symbolically linked folders followed, each real folder once), or ``path`` itself when it is a file.

    What cannot be searched or followed (a symbolic link loop, a broken link, a folder that cannot be listed) is
    returned as an input with a ``problem``: a failed study of its own, so one bad entry never stops the others.
    Names are made unique with :func:`unique_names`.

    Raises:
        ImageReadError: ``path`` does not exist, or a folder holds no NIfTI file and no DICOM series.
    """
    root = Path(path)
    problem = _link_problem(root)
    if problem is not None:
        raise ImageReadError(root, problem)
    if root.is_file():
        if is_nifti(root):
            stem, suffix = _nifti_stem(root.name)
            return [InputImage(root, sanitize_filename(stem), suffix, key=root.name)]
        return [InputImage(root, sanitize_filename(root.stem or root.name), is_dicom=True, key=root.name)]
    if not root.is_dir():
        raise ImageReadError(root, "no such file or folder")
    inputs: list[InputImage] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else root
        name = "/".join(_safe_parts(folder.relative_to(root))) or sanitize_filename(root.absolute().name)
        key = folder.relative_to(root).as_posix()
        inputs.append(InputImage(folder, name, key=key, problem=f"cannot list the folder ({error.strerror})"))

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
        folder_path = Path(folder)
        st = os.stat(folder_path)
        if (st.st_dev, st.st_ino) in seen:  # a linked folder already searched (or a cycle of links)
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = _visible(dirs)
        visible = _visible(files)
        regular = []
        for name in visible:
            entry = folder_path / name
            problem = _link_problem(entry)
            if problem is None and not entry.is_file():  # never opened: reading a pipe would block
                problem = "not a regular file (a pipe, socket or device)"
            if problem is None:
                regular.append(name)
                continue
            relative = entry.relative_to(root)
            stem, suffix = _nifti_stem(name) if is_nifti(name) else (name, ".nii.gz")
            parts = _safe_parts(relative.parent) + [sanitize_filename(stem)]
            inputs.append(InputImage(entry, "/".join(parts), suffix, key=relative.as_posix(), problem=problem))
        nifti = [f for f in regular if is_nifti(f)]
        for name in nifti:
            stem, suffix = _nifti_stem(name)
            relative = (folder_path / name).relative_to(root)
            parts = _safe_parts(relative.parent) + [sanitize_filename(stem)]
            inputs.append(InputImage(folder_path / name, "/".join(parts), suffix, key=relative.as_posix()))
        if len(nifti) < len(regular):
            inputs.extend(_dicom_series_inputs(folder_path, root))
    if not inputs:
        raise ImageReadError(root, "no NIfTI files (.nii, .nii.gz) and no DICOM series found")
    return unique_names(inputs)


def _name_key(name: str) -> str:
    """Names that collide on a case-insensitive file system (or after Unicode folding) share a key."""
    return name.casefold()


def unique_names(inputs: Sequence[InputImage]) -> list[InputImage]:
    """
    ``inputs`` with output names that never collide: inputs whose names are equal, or equal but for case (a
    case-insensitive file system would merge their outputs), such as ``\u00fcber.nii.gz`` and ``uber.nii.gz`` (both
    sanitised to ``uber``), ``a.nii`` and ``a.nii.gz``, or a folder ``a`` and ``a.nii.gz``, each get
    ``_<8 hex digits>`` appended, a hash of their :attr:`InputImage.key`: the same input keeps the same name in
    every run, whatever else the dataset holds.
    """
    groups: dict[str, list[int]] = {}
    for index, image in enumerate(inputs):
        groups.setdefault(_name_key(image.name), []).append(index)
    result = list(inputs)
    taken = set(groups)
    for members in groups.values():
        if len(members) == 1:
            continue
        for index in members:
            image = inputs[index]
            key = image.key or os.fspath(image.path) + (f"#{image.series_uid}" if image.series_uid else "")
            digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
            for length in range(8, len(digest) + 1, 4):
                name = f"{image.name}_{digest[:length]}"
                if _name_key(name) not in taken:
                    break
            taken.add(_name_key(name))
            result[index] = replace(image, name=name)
    return result


def plan_tasks(
    inputs: Sequence[InputImage], output_dir: str | os.PathLike, dicom_output: bool = True
) -> list[RestoreTask]:
    """
    Output paths under ``output_dir`` for each input: ``<name>_restored<suffix>`` (NIfTI, every input) and
    ``<name>_restored/`` (a DICOM series folder, DICOM inputs when ``dicom_output``). Colliding names are made
    unique first (:func:`unique_names`), so distinct inputs never share an output or a manifest.
    """
    out = Path(output_dir)
    tasks = []
    for image in unique_names(inputs):
        base = out / f"{image.name}{OUTPUT_POSTFIX}"
        tasks.append(
            RestoreTask(
                image,
                nifti_output=base.with_name(base.name + image.suffix),
                dicom_output=base if (image.is_dicom and dicom_output) else None,
            )
        )
    return tasks


def read_volume(image: InputImage) -> MetaTensor:
    """
    Read one input with :class:`~monai_rwkv.data.SimpleITKReader` alone (no fallback readers).

    Returns:
        ``(1, i, j, k)`` (or ``(C, ...)``) MetaTensor in physical units with RAS ``affine`` and the reader's meta.

    Raises:
        ImageReadError: unreadable input (one line naming the file).
    """
    loader = sitk_load_image(SimpleITKReader(series_uid=image.series_uid), image_only=True, ensure_channel_first=True)
    try:
        return loader(os.fspath(image.path))
    except ImageReadError:
        raise
    except Exception as e:  # MONAI wraps reader errors; report the cause in one line
        cause = e.__cause__ if isinstance(e.__cause__, ImageReadError) else e
        if isinstance(cause, ImageReadError):
            raise cause from None
        raise ImageReadError(image.path, f"cannot read image ({one_line(e)})") from None


def _pending(task: RestoreTask, overwrite: bool) -> tuple[Path | None, Path | None]:
    """The task's outputs still to write (existing ones are kept unless ``overwrite``)."""

    def todo(path: Path | None) -> Path | None:
        return path if path is not None and (overwrite or not (path.exists() or path.is_symlink())) else None

    return todo(task.nifti_output), todo(task.dicom_output)


def restore_task(
    restorer: VolumeRestorer,
    task: RestoreTask,
    model_name: str,
    model_version: str,
    overwrite: bool = False,
    volume: MetaTensor | None = None,
    spec: InputSpec | None = None,
    allow_mismatch: bool = False,
) -> list[Path]:
    """
    Read ``task.image``, check it against ``spec``, restore it, write its outputs. The input is only read.

    The NIfTI output is on the restorer's grid (``restorer.output_dtype``, physical units): the input's affine and
    shape, unless the pipeline refines the grid (k-space zero-filling). The DICOM output is a derived series
    mirroring the source slices (new UIDs, ``DERIVED``, the model name and version in the descriptions). Each output
    is written atomically (complete or absent).

    Args:
        restorer: the slice-wise restorer (network, sliding window, intensity range).
        task: input and outputs.
        model_name, model_version: recorded in DICOM descriptions.
        overwrite: replace existing outputs; otherwise they are left alone (and not written).
        volume: ``task.image`` already read with :func:`read_volume` (it is read here otherwise).
        spec: what the model accepts (see :func:`check_input`); None: no check.
        allow_mismatch: restore an input that does not fit ``spec``, with a warning per problem.

    Returns:
        the outputs written.

    Raises:
        ImageReadError: the input cannot be read.
        InputMismatchError: the input does not fit ``spec``.
        FileExistsError: an output appeared while restoring and ``overwrite`` is False.
        ValueError: a DICOM output was asked for a non-DICOM input, or the image cannot be written.
    """
    nifti_out, dicom_out = _pending(task, overwrite)
    if nifti_out is None and dicom_out is None:
        return []
    image = read_volume(task.image) if volume is None else volume
    check_input(spec, image, task.image.path, allow_mismatch)
    if dicom_out is not None and DICOM_SOURCE_FILES not in image.meta:
        raise ValueError(f"{task.image.path}: a DICOM series output needs a DICOM input; write NIfTI (.nii.gz)")
    restored = restorer(image, desc=task.image.path.name)
    written: list[Path] = []
    if nifti_out is not None:
        note = nifti_restoration_note(model_name, model_version)
        written.append(_write_nifti(restored, nifti_out, restorer.output_dtype, overwrite, note))
    if dicom_out is not None:
        files = write_dicom_series(restored, image.meta, dicom_out, model_name, model_version, overwrite=overwrite)
        written.append(files[0].parent)
    return written


def _write_nifti(restored: torch.Tensor, path: Path, dtype: str, overwrite: bool, note: str) -> Path:
    return write_nifti(
        restored, path, affine=restored.affine, dtype=dtype, overwrite=overwrite, channel_first=True, description=note
    )


def _input_fingerprint(image: InputImage) -> dict:
    """Fingerprint of an input: the file, or the visible files directly in a DICOM series folder."""
    return fingerprint(image.path, recursive=False)


def check_outputs(task: RestoreTask, guard: InputGuard | None, overwrite: bool) -> None:
    """
    Before any work: no output of ``task`` equals, lies inside or contains an input (``guard``), and each output
    that exists is replaceable by its kind (a NIfTI file replaces a file; a DICOM series folder replaces an empty
    folder or a series this program wrote) when ``overwrite`` is given.

    Raises:
        OutputConflictError: an output that must never be written there.
        FileExistsError: an output exists and ``overwrite`` is False.
    """
    for path in task.outputs:
        if guard is not None:
            guard.check(path)
    if task.nifti_output is not None:
        check_replaceable(task.nifti_output, "file", overwrite, what="NIfTI output", option="--overwrite")
    if task.dicom_output is not None:
        check_replaceable(
            task.dicom_output, "folder", overwrite, is_restored_series, what="DICOM series output", option="--overwrite"
        )


def _restore_study(
    restorer: VolumeRestorer,
    task: RestoreTask,
    model: tuple[str, str],
    overwrite: bool,
    guard: InputGuard | None = None,
    spec: InputSpec | None = None,
    allow_mismatch: bool = False,
    claim_timeout: float = CLAIM_TIMEOUT,
) -> StudyOutcome:
    """
    Claim, verify, (re)do and record one study; raises on failure (the caller records it), and
    :class:`~monai_rwkv.apps.claims.StudyClaimed` when another live process holds the study.
    """
    if task.image.problem is not None:
        raise ImageReadError(task.image.path, task.image.problem)
    check_outputs(task, guard, overwrite=True)  # where and what the outputs are; whether they may be replaced: below
    with acquire_claim(claim_path(task.outputs), claim_timeout, task.outputs) as claim:
        outcome = _verify_and_restore(restorer, task, model, overwrite, spec, allow_mismatch)
    if claim.note:
        outcome.detail = f"{claim.note}; {outcome.detail}" if outcome.detail else claim.note
    return outcome


def _verify_and_restore(
    restorer: VolumeRestorer,
    task: RestoreTask,
    model: tuple[str, str],
    overwrite: bool,
    spec: InputSpec | None,
    allow_mismatch: bool,
) -> StudyOutcome:
    """The claimed part of :func:`_restore_study`: skip a verified study, or restore it and write its manifest."""
    outcome = StudyOutcome(task.image.name, task.image.path, "written", outputs=list(task.outputs))
    manifest = manifest_path(task.outputs)
    source = _input_fingerprint(task.image)  # before reading: a change while restoring is seen next time
    existing = [p for p in task.outputs if p.exists() or p.is_symlink()]
    if overwrite:
        if existing:
            outcome.status, outcome.detail = "redone", "overwrite"
    elif existing and not (manifest.exists() or manifest.is_symlink()):
        raise FileExistsError(
            f"output {existing[0]} exists and no manifest says this program wrote it; "
            "pass overwrite to replace it, or move it away"
        )
    elif existing or manifest.exists():
        problem = read_manifest_problem(manifest, source, task.outputs, model)
        if problem is None:
            outcome.status = "skipped"
            return outcome
        outcome.status, outcome.detail = "redone", problem
    replace_outputs = overwrite or outcome.status == "redone"
    # claim the outputs before writing them: a run interrupted between its outputs leaves this record (no outputs),
    # so the next run knows they are ours and redoes the study instead of refusing to touch them
    write_manifest(manifest, source, [], model)
    try:
        written = restore_task(
            restorer, task, *model, overwrite=replace_outputs, spec=spec, allow_mismatch=allow_mismatch
        )
    except BaseException:
        if not any(p.exists() or p.is_symlink() for p in task.outputs):
            manifest.unlink(missing_ok=True)  # nothing written: leave no claim behind
        raise
    describe = getattr(restorer, "describe", None)
    write_manifest(manifest, source, task.outputs, model, describe() if callable(describe) else None)
    outcome.outputs = written
    return outcome


def run_study(
    restorer: VolumeRestorer,
    task: RestoreTask,
    model: tuple[str, str],
    overwrite: bool = False,
    guard: InputGuard | None = None,
    spec: InputSpec | None = None,
    allow_mismatch: bool = False,
    claim_timeout: float = CLAIM_TIMEOUT,
) -> StudyOutcome:
    """
    One study of a batch, never raising for the study's own problems: its outcome (``failed`` with the one-line
    error, ``claimed`` when another live process holds it), with the seconds spent. Nothing is logged here.
    """
    start = time.perf_counter()
    try:
        outcome = _restore_study(restorer, task, model, overwrite, guard, spec, allow_mismatch, claim_timeout)
    except StudyClaimed as e:
        outcome = StudyOutcome(task.image.name, task.image.path, "claimed", detail=str(e))
    except Exception as e:  # noqa: BLE001 - one failing study must not stop the others
        outcome = StudyOutcome(task.image.name, task.image.path, "failed", detail=error_line(task.image.path, e))
    outcome.seconds = time.perf_counter() - start
    return outcome


def restore_tasks(
    restorer: VolumeRestorer | RestorerFactory,
    tasks: Sequence[RestoreTask],
    model_name: str,
    model_version: str,
    overwrite: bool = False,
    summary_file: str | os.PathLike | None = None,
    callback: Callable[[StudyOutcome], None] | None = None,
    spec: InputSpec | None = None,
    allow_mismatch: bool = False,
    guard: InputGuard | None = None,
    workers: int = 1,
    worker_threads: int | None = None,
    progress: bool = False,
    claim_timeout: float = CLAIM_TIMEOUT,
) -> RestoreReport:
    """
    Run :func:`restore_task` on every task (a study), resumably; a study that fails is logged as one line
    (``error: <file>: <problem>``) and the others still run. Each study is claimed exclusively while it is
    verified and restored (see :mod:`monai_rwkv.apps.claims`): one that another live process holds is
    ``claimed`` (left to that process, not a failure).

    A study whose outputs exist is skipped only when it is verified finished by its manifest (input, model and
    every output unchanged; see :mod:`monai_rwkv.apps.batch`), otherwise it is redone: its outputs are replaced
    atomically. ``overwrite`` redoes every study.

    Args:
        restorer: the slice-wise restorer, or a :class:`~monai_rwkv.apps.workers.RestorerFactory` that builds it
            (required for ``workers > 1``: each worker process builds its own).
        tasks: the studies, each with its outputs.
        model_name, model_version: recorded in DICOM descriptions and in the manifests.
        overwrite: redo every study, even those verified finished.
        summary_file: where to write the CSV summary (see :func:`~monai_rwkv.apps.batch.write_summary`);
            None: no summary file (the outcomes are still logged and returned).
        callback: called with each study's outcome once it is done (progress, monitoring).
        spec: what the model accepts; an input that does not fit fails (see :func:`check_input`).
        allow_mismatch: restore such inputs anyway, with a warning.
        guard: refuses outputs that would touch an input (default: built from the tasks' inputs).
        workers: worker processes (``spawn``), each building the model once from the factory and pulling studies
            from a shared queue; 1: every study in this process (see :mod:`monai_rwkv.apps.workers`).
        worker_threads: torch threads per worker (default: this process's torch threads / ``workers``, at least 1).
        progress: with ``workers > 1``, a progress bar over studies (the workers show none).
        claim_timeout: seconds after which another host's claim on a study is stale.

    Returns:
        the report; ``report.studies`` has one outcome per task, in the tasks' order (``callback`` is called in
        the order studies finish).
    """
    report = RestoreReport()
    model = (model_name, model_version)
    guard = InputGuard(t.image.path for t in tasks) if guard is None else guard
    if summary_file is not None:
        guard.check(summary_file)
    done = 0

    def record(outcome: StudyOutcome) -> None:
        nonlocal done
        done += 1
        if outcome.status == "failed":
            logger.error("error: %s", outcome.detail)
        else:
            logger.info("[%d/%d] %s", done, len(tasks), outcome.line())
        if callback is not None:
            callback(outcome)

    from monai_rwkv.apps.workers import RestorerFactory, restore_in_workers

    if workers > 1:
        studies = restore_in_workers(
            restorer,
            tasks,
            model,
            overwrite,
            guard,
            spec,
            allow_mismatch,
            claim_timeout,
            workers,
            worker_threads,
            progress,
            record,
        )
    else:
        if isinstance(restorer, RestorerFactory):
            restorer = restorer.build()  # a RestorerFactory: build the model here, once
        studies = []
        for task in tasks:
            outcome = run_study(restorer, task, model, overwrite, guard, spec, allow_mismatch, claim_timeout)
            studies.append(outcome)
            record(outcome)
    for outcome in studies:
        if outcome.status == "skipped":
            report.skipped += outcome.outputs
        elif outcome.status in ("written", "redone"):
            report.written += outcome.outputs
    report.studies = studies
    report.errors = [s.detail for s in studies if s.status == "failed"]
    if summary_file is not None and tasks:
        report.summary = write_summary(summary_file, report.studies)
    _log_summary(report)
    return report


def _log_summary(report: RestoreReport) -> None:
    n = len(report.studies)
    logger.info("%d stud%s: %s", n, "y" if n == 1 else "ies", report.counts_line())
    for outcome in report.studies:
        if outcome.status == "failed":
            logger.info("failed: %s", outcome.detail)
    if report.summary is not None:
        logger.info("summary: %s", report.summary)


def restore_dataset(
    restorer: VolumeRestorer,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_name: str,
    model_version: str,
    overwrite: bool = False,
    dicom_output: bool = True,
    summary_file: str | os.PathLike | None = None,
    callback: Callable[[StudyOutcome], None] | None = None,
    spec: InputSpec | None = None,
    allow_mismatch: bool = False,
    workers: int = 1,
    worker_threads: int | None = None,
    progress: bool = False,
    claim_timeout: float = CLAIM_TIMEOUT,
) -> RestoreReport:
    """
    Restore every NIfTI file and DICOM series under ``dataset_dir`` (or the single file / series it names) into
    ``output_dir`` (see :func:`plan_tasks` for the names): NIfTI for every input, plus a DICOM series for DICOM
    inputs when ``dicom_output``. Resumable (see :func:`restore_tasks`); the summary is written to ``summary_file``,
    by default ``<output_dir>/restore_summary.csv``. When ``output_dir`` is inside ``dataset_dir``, the files under
    ``output_dir`` are not inputs (a re-run does not restore the outputs again).

    Inputs that cannot be followed or read, outputs that would touch an input (see :func:`check_outputs`) and
    inputs that do not fit ``spec`` are failed studies; the others still run. ``restorer`` may be a
    :class:`~monai_rwkv.apps.workers.RestorerFactory`; ``workers``, ``worker_threads``, ``progress`` and
    ``claim_timeout`` are those of :func:`restore_tasks`.

    Raises:
        ImageReadError: ``dataset_dir`` does not exist or holds no images.
        OutputConflictError: the output folder or the summary file is (or is inside) an input.
    """
    out = real_path(output_dir)
    found = find_inputs(dataset_dir)
    inputs = [i for i in found if not real_path(i.path).is_relative_to(out)]
    if not inputs:  # everything found is an output of an earlier run
        raise ImageReadError(dataset_dir, f"no images found outside the output folder {output_dir}")
    guard = InputGuard(i.path for i in inputs)
    guard.check(output_dir, may_contain=True)  # a folder above the inputs is fine: each output is checked
    tasks = plan_tasks(inputs, output_dir, dicom_output=dicom_output)
    logger.info("restoring %d input(s) from %s into %s", len(tasks), dataset_dir, output_dir)
    summary = Path(output_dir) / SUMMARY_NAME if summary_file is None else summary_file
    return restore_tasks(
        restorer,
        tasks,
        model_name,
        model_version,
        overwrite,
        summary,
        callback,
        spec,
        allow_mismatch,
        guard,
        workers=workers,
        worker_threads=worker_threads,
        progress=progress,
        claim_timeout=claim_timeout,
    )
