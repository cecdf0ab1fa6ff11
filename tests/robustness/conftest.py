"""
Shared helpers of the robustness suite: the tiny bundle, the two ways to run ``monai-rwkv restore`` (in-process
``main(argv)`` and a real subprocess), ``monai.bundle run``, checks that nothing partial is left, and builders of
awkward inputs (synthetic CT series with any geometry, compressed and enhanced multi-frame DICOM, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_rwkv.apps.cli import main
from tests.bundles.utils import REPO, TINY_BUNDLE_ARGS, TINY_CLI_ARGS, make_tiny_bundle
from tests.data.conftest import CT5N, pydicom_file, tree_digest

__all__ = ["assert_changes_within", "tree_digest", "tree_state"]

#: names of the temporary files and folders of the atomic writers (``monai_rwkv.data.atomic``).
TEMP_NAME = re.compile(r"^\.(tmp-|.*\.tmp-|.*\.old-)")


#: the test's temporary folder, whose whole tree every run helper below snapshots before and after the command.
_WATCHED: list[Path] = []


@pytest.fixture(autouse=True)
def _watch_tmp_path(tmp_path: Path):
    """Make :func:`run_main`, :func:`run_cli` and :func:`run_bundle` check the whole ``tmp_path`` tree."""
    _WATCHED.append(tmp_path)
    yield
    _WATCHED.pop()


def tree_state(root: Path) -> dict[str, tuple]:
    """
    Everything under ``root``: relative path -> ``("dir",)``, ``("link", target)``, ``("file", sha256, mode)`` or
    ``("special", mode)`` (pipes, sockets, devices: never opened). Links are recorded, not followed.
    """
    state: dict[str, tuple] = {}
    if not root.exists():
        return state
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                state[relative] = ("dir",)
            elif path.is_file():
                state[relative] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
            else:  # a pipe, socket or device: never opened
                state[relative] = ("special", path.stat().st_mode)
    return state


def assert_changes_within(root: Path, before: dict, after: dict, outputs: Sequence[str | Path]) -> None:
    """
    The invariant of every run: the only paths created, removed or changed under ``root`` are the declared
    ``outputs``, what lies inside them, and folders created to hold them. Inputs and every other file stay
    byte-identical; no temporary file is left.
    """
    allowed = [Path(os.path.abspath(o)) for o in outputs]
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}

    def permitted(relative: str) -> bool:
        path = root / relative
        if any(path == o or o in path.parents for o in allowed):
            return True
        # a folder created for an output (absent before, a folder now)
        return after.get(relative) == ("dir",) and relative not in before and any(path in o.parents for o in allowed)

    unexpected = sorted(p for p in changed if not permitted(p))
    assert not unexpected, f"created, removed or changed outside the outputs {allowed}: {unexpected}"


def _watched(outputs: Sequence[str | Path]):
    """Context: snapshot the watched tree, run, check that only ``outputs`` changed."""
    root = _WATCHED[-1] if _WATCHED else None

    class _Check:
        def __enter__(self):
            self.before = tree_state(root) if root is not None else None
            return self

        def __exit__(self, kind, value, traceback):
            if kind is None and root is not None:
                assert_changes_within(root, self.before, tree_state(root), outputs)
            return False

    return _Check()


def _output_argument(args: Sequence[str | Path]) -> list[str | Path]:
    """The OUTPUT of ``restore INPUT OUTPUT [options]``: the second positional argument."""
    positional = [a for a in args if not str(a).startswith("--")]
    return positional[1:2]


@pytest.fixture(scope="package")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the CT bundle with a tiny random network (plumbing only)."""
    return make_tiny_bundle(tmp_path_factory.mktemp("robustness") / "bundle")


def run_main(capsys: pytest.CaptureFixture, bundle: Path, *args: str | Path) -> tuple[int, list[str], str]:
    """``monai-rwkv restore --bundle B ARGS`` in-process: (exit status, stderr lines, stdout)."""
    with _watched(_output_argument(args)):
        code = main(["restore", "--bundle", str(bundle), *map(str, args), *TINY_CLI_ARGS])
    out, err = capsys.readouterr()
    return code, err.splitlines(), out


def run_cli(bundle: Path, *args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m monai_rwkv.apps.cli restore --bundle B ARGS`` as a real subprocess."""
    command = [sys.executable, "-m", "monai_rwkv.apps.cli", "restore", "--bundle", str(bundle), *map(str, args)]
    with _watched(_output_argument(args)):
        return subprocess.run(command + TINY_CLI_ARGS, capture_output=True, text=True, cwd=REPO, timeout=300, **kwargs)


def run_bundle(bundle: Path, dataset: Path, output: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file <bundle>/configs/inference.json --dataset_dir D --output_dir O``."""
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(output),
        "--device",
        "cpu",
        *args,
        *TINY_BUNDLE_ARGS,
    ]
    with _watched([output]):
        return subprocess.run(command, capture_output=True, text=True, cwd=output.parent, timeout=300)


def error_lines(lines: Sequence[str] | str) -> list[str]:
    """The ``error: ...`` lines of a command's stderr."""
    lines = lines.splitlines() if isinstance(lines, str) else lines
    return [line[line.index("error: ") :] for line in lines if "error: " in line]


def leftovers(folder: Path) -> list[Path]:
    """Temporary files or folders of the atomic writers left anywhere under ``folder``."""
    return [p for p in folder.rglob(".*") if TEMP_NAME.match(p.name)] if folder.exists() else []


def assert_failed_cleanly(code: int, lines: Sequence[str], source: Path, output: Path, digest: dict) -> str:
    """
    The contract of every error: non-zero exit, exactly one ``error: <source>: <problem>`` line (no traceback),
    the input untouched, nothing under the output name and no temporary files beside it. Returns the problem.
    """
    errors = error_lines(lines)
    assert code == 1, lines
    assert len(errors) == 1, lines
    assert errors[0].startswith(f"error: {source}: "), errors[0]
    assert not any("Traceback" in line for line in lines)
    assert not output.exists()
    assert leftovers(output.parent) == []
    assert tree_digest(source) == digest
    return errors[0][len(f"error: {source}: ") :]


def template_slice() -> Dataset:
    """The first slice of pydicom's 5-slice CT test series (16 x 16, int16, rescale -1024)."""
    return pydicom.dcmread(sorted(Path(pydicom_file(CT5N)).iterdir())[0])


def write_ct_series(
    folder: Path,
    n: int = 5,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-70.0, -140.0, 10.0),
    step: Sequence[float] | None = None,
    positions: np.ndarray | None = None,
    spacing: float = 0.5,
    series_uid: str | None = None,
    description: str = "synthetic CT",
    seed: int = 0,
    prefix: str = "IM",
) -> list[Path]:
    """
    Write a single-frame CT series (16 x 16 slices, stored int16, HU = stored - 1024) with any geometry:
    slice ``k`` at ``origin + k * step`` (default: 2 mm along the slice normal) or at ``positions[k]``.
    Files are named in reverse slice order so that name order is never the geometric order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    if positions is None:
        step = 2.0 * normal if step is None else np.asarray(step, float)
        positions = np.asarray(origin, float) + np.arange(n)[:, None] * step
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for k, position in enumerate(positions):
        ds = template_slice()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
        ds.SeriesDescription = description
        ds.InstanceNumber = len(positions) - k
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceLocation = float(position @ normal)
        ds.PixelData = rng.integers(0, 2000, size=(16, 16)).astype("<i2").tobytes()
        path = folder / f"{prefix}{len(positions) - k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_mr_series(folder: Path, n: int = 4, seed: int = 0, spacing: float = 0.9) -> list[Path]:
    """
    Write a single-frame MR series (16 x 16 slices, 3 mm apart, stored uint16 with no Modality LUT, as most MR
    scanners store their units) from the CT template with MR headers: MR Image Storage, Modality MR, echo and
    repetition times, field strength.
    """
    paths = write_ct_series(folder, n=n, seed=seed, spacing=spacing, description="synthetic T1", step=(0, 0, 3.0))
    rng = np.random.default_rng(seed)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.Modality = "MR"
        for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType", "KVP", "ConvolutionKernel"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.PixelRepresentation = 0
        ds.BitsStored, ds.HighBit = 12, 11
        ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength = "4.6", "9.8", "3"
        ds.ScanningSequence, ds.SequenceVariant = "GR", "SP"
        ds.PixelData = rng.integers(0, 4096, size=(16, 16)).astype("<u2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    return paths


#: half-life of fluorine-18 in seconds (the PET headers of write_pet_series).
F18_HALF_LIFE_S = 6586.2


def pet_header(ds: Dataset, weight_kg: float, dose_bq: float, minutes: float, decay: str = "START") -> None:
    """PET Series and PET Isotope attributes: injection at 09:00:00, the series ``minutes`` later."""
    ds.Units, ds.DecayCorrection, ds.PatientWeight = "BQML", decay, f"{weight_kg:g}"
    ds.SeriesDate = "20261202"
    start = 9 * 3600 + int(round(minutes * 60))
    ds.SeriesTime = f"{start // 3600:02d}{start % 3600 // 60:02d}{start % 60:02d}.000000"
    drug = Dataset()
    drug.RadiopharmaceuticalStartTime = "090000.00"
    drug.RadionuclideTotalDose = f"{dose_bq:g}"
    drug.RadionuclideHalfLife = f"{F18_HALF_LIFE_S:g}"
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([drug])


def write_pet_series(
    folder: Path, suv: np.ndarray, weight_kg: float = 70.0, dose_bq: float = 3e8, minutes: float = 60.0
) -> float:
    """
    A PET series of the ``(16, 16, n)`` SUV volume (index ``[i, j, k]`` = column, row, slice), stored uint16 in
    Bq/ml with its own RescaleSlope per slice, as PET scanners write it. Returns the factor Bq/ml -> SUV.
    """
    paths = write_ct_series(folder, n=suv.shape[2], step=(0, 0, 3.0), spacing=2.0, description="synthetic PET")
    factor = 1000.0 * weight_kg / (dose_bq * 2.0 ** (-minutes * 60.0 / F18_HALF_LIFE_S))
    positions = []
    for path in paths:
        ds = pydicom.dcmread(path)
        positions.append(float(ds.ImagePositionPatient[2]))
    order = np.argsort(positions)  # slice k of the volume is the k-th lowest position
    for rank, index in enumerate(order):
        path = paths[index]
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128"  # PET Image Storage
        ds.Modality = "PT"
        for keyword in ("RescaleType", "KVP", "ConvolutionKernel"):
            if keyword in ds:
                delattr(ds, keyword)
        pet_header(ds, weight_kg, dose_bq, minutes)
        bqml = suv[:, :, rank].T / factor  # (rows, columns)
        slope = float(bqml.max()) / 30000.0 or 1.0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", "0"
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 16, 15
        ds.PixelData = np.rint(bqml / float(ds.RescaleSlope)).astype("<u2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    return factor


def compress_slice(path: Path, compressor: str) -> str:
    """
    Re-encode one DICOM file in place with SimpleITK/GDCM's encoder (``"JPEG"``: lossless process 14,
    ``"JPEG2000"``: lossless), keeping its header. Returns the new transfer syntax UID.
    """
    ds = pydicom.dcmread(path)
    image = sitk.GetImageFromArray(ds.pixel_array.astype(np.int16))
    encoded = path.with_name(f"encoded_{path.name}")
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(encoded))
    writer.SetUseCompression(True)
    writer.SetCompressor(compressor)
    writer.Execute(image)
    donor = pydicom.dcmread(encoded)
    encoded.unlink()
    ds.PixelData = donor.PixelData
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = donor.file_meta.TransferSyntaxUID
    ds.save_as(path, enforce_file_format=True)
    return str(donor.file_meta.TransferSyntaxUID)


def write_enhanced_ct(path: Path, n: int = 4, rows: int = 12, columns: int = 10) -> np.ndarray:
    """
    An Enhanced CT Image (multi-frame, geometry in functional groups, rescale in the shared group); frames 2 mm
    apart with a 3 mm SliceThickness. Returns the HU values, shape ``(frames, rows, columns)``.
    """
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Enhanced", "E1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, plane, value = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.6], 3.0
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    value.RescaleIntercept, value.RescaleSlope, value.RescaleType = -1024, 1, "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [plane]
    shared.PixelValueTransformationSequence = [value]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(n):
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = [-5.0, -3.0, 10.0 + 2.0 * k]
        frame.PlanePositionSequence = [position]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    stored = np.random.default_rng(0).integers(0, 2000, size=(n, rows, columns)).astype(np.int16)
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return stored.astype(np.int32) - 1024
