#!/usr/bin/env python
"""Prepare the real head CT used to train and test low-dose CT denoising.

Source: ``Cranium.inv3`` of the Debian package ``invesalius-examples`` (an InVesalius 3 project, GPL-2; installed
with apt-get when missing). The project is a gzip tar holding ``main.plist`` (the geometry: matrix file name, shape,
dtype, spacing, orientation, scalar range) and ``matrix.dat`` (the raw voxels). Members are read into memory, never
extracted to disk; the geometry comes from ``main.plist``, not from constants in this script.

Outputs, in ``--out`` (default ``data/ct`` under the repository, which git ignores):

* ``cranium_ct.nii.gz``: the whole volume, int16 HU, NIfTI array axes ``(i, j, k)`` = (column, row, slice).
* ``cranium_ct_{train,val,test}.nii.gz``: the slices of each split, with affines that keep world coordinates.
* ``split.json``: the split (half-open slice ranges ``[start, stop)`` along ``k``), the files with their sha256,
  the geometry and the source; it is written last and marks the folder as complete.
* ``datalist.json``: the split files as a MONAI (Decathlon-style) datalist, ``{"training": [{"label": file}],
  "validation": [...], "test": [...]}``: clean volumes for the bundle's ``configs/train.json``.
* ``DATA_LICENSE.txt``: where the data came from and its licence.

Orientation: InVesalius stores axial slices with the row axis flipped with respect to DICOM (anatomy confirms: the
face is at the high row indices and slices run from the skull base up to the vertex). The affine is therefore
``diag(-sx, +sy, +sz)`` in RAS+ (columns towards the patient's left, rows anterior, slices superior), with the first
voxel at the world origin because the archive stores no origin. Left/right cannot be checked from a symmetric head;
it assumes InVesalius kept the DICOM column direction.

Split (108 axial slices of 1.5 mm): train ``[0, 64)`` (skull base to mid brain), test ``[68, 88)`` (mid and upper
brain), validation ``[92, 108)`` (upper brain to vertex); the 4-slice (6 mm) gaps keep neighbouring, highly
correlated slices out of different splits.

Re-running is cheap and idempotent: when ``split.json`` lists files that exist with matching hashes nothing is
written (``--force`` rewrites). Every file is written to a temporary name in the same folder and then renamed.

``--sample PATH`` also writes a small demo sample (``--sample-slices`` slices from the middle of the test split) as
NIfTI to PATH, with a licence note beside it (``<name>.LICENSE.txt``).

Usage::

    python scripts/prepare_ct_data.py [--out data/ct] [--sample demo/ct_head_sample.nii.gz]
"""

from __future__ import annotations

import argparse
import json
import plistlib
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataprep import (  # noqa: E402 - the shared helpers live beside this script
    PrepareError,
    atomic_write,
    debian_package_version,
    ensure_debian_file,
    nifti_bytes,
    sha256_bytes,
    sha256_file,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "ct"
DEBIAN_PACKAGE = "invesalius-examples"
DEFAULT_ARCHIVE = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
VOLUME_FILE = "cranium_ct.nii.gz"
SPLIT_FILE = "split.json"
DATALIST_FILE = "datalist.json"
#: datalist keys (MONAI Decathlon style, as the bundle's train.json reads them) of each split
DATALIST_KEYS = {"train": "training", "val": "validation", "test": "test"}
LICENSE_FILE = "DATA_LICENSE.txt"
GAP_SLICES = 4
# half-open [start, stop) ranges along the slice axis (inferior -> superior), for the 108-slice volume
SPLIT_RANGES = {"train": (0, 64), "test": (68, 88), "val": (92, 108)}
MAX_MEMBER_BYTES = 256 * 2**20  # refuse absurd members (decompression bombs) before reading them
# InVesalius 3 orientation constants (invesalius/constants.py): AXIAL = 1, CORONAL = 2, SAGITAL = 3
INVESALIUS_ORIENTATIONS = {1: "AXIAL", 2: "CORONAL", 3: "SAGITAL"}
FORMAT_VERSION = 1

LICENSE_TEXT = """\
Data licence note
=================

These images are derived from "Cranium.inv3", an example head CT (InVesalius project "{name}",
modality {modality}) shipped by the Debian package "invesalius-examples" ({package_version}),
read from {archive}.

Upstream: InVesalius, Centro de Tecnologia da Informacao Renato Archer (CTI), Brazil,
https://github.com/invesalius/invesalius3 . The Debian copyright file of the package
(/usr/share/doc/invesalius-examples/copyright) gives its licence as GPL-2
(full text: /usr/share/common-licenses/GPL-2 on Debian systems).

The voxel values (int16 Hounsfield units) are unchanged; they were only re-wrapped as NIfTI with
the geometry stored in the project (voxel size {spacing} mm, x/y/z). Copies must follow the
GPL-2 terms of the source package and keep this note with them.
"""


@dataclass
class Inv3Volume:
    """A volume read from an InVesalius project.

    Attributes:
        voxels: ``(Z, Y, X)`` int16 array (slice, row, column), as stored in ``matrix.dat``.
        spacing: ``(sx, sy, sz)`` voxel size in mm (column, row, slice), as stored in ``main.plist``.
        orientation: slice orientation name (``AXIAL``, ...).
        metadata: the other scalar entries of ``main.plist`` (name, modality, scalar_range, ...).
    """

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    orientation: str
    metadata: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------- source
# ---------------------------------------------------------------------------------------------------------- archive
def _safe_member_name(name: str) -> PurePosixPath:
    """Validate a tar member name (relative, no ``..``); it is only used as a key, never as a path to write."""
    posix = PurePosixPath(name)
    if posix.is_absolute() or ".." in posix.parts or not posix.parts:
        raise PrepareError(f"unsafe member name in archive: {name!r}")
    return posix


def read_members(archive: tarfile.TarFile, wanted: set[str]) -> dict[str, bytes]:
    """Read the regular-file members whose base names are in ``wanted`` into memory (nothing touches the disk).

    Links, devices and directories are ignored; duplicated or oversized members are refused.
    """
    found: dict[str, bytes] = {}
    for member in archive:
        base = _safe_member_name(member.name).name
        if base not in wanted or not member.isreg():
            continue
        if base in found:
            raise PrepareError(f"archive holds {base} twice")
        if member.size > MAX_MEMBER_BYTES:
            raise PrepareError(f"archive member {member.name} is too large ({member.size} bytes)")
        handle = archive.extractfile(member)
        if handle is None:
            raise PrepareError(f"cannot read archive member {member.name}")
        found[base] = handle.read(MAX_MEMBER_BYTES + 1)
    return found


def _parse_orientation(value: Any) -> str:
    """Map InVesalius' orientation entry (an int constant or a name) to a name."""
    if isinstance(value, str):
        return value.upper()
    if isinstance(value, int) and value in INVESALIUS_ORIENTATIONS:
        return INVESALIUS_ORIENTATIONS[value]
    raise PrepareError(f"unknown orientation entry in main.plist: {value!r}")


def _decode_voxels(raw: bytes, shape: tuple[int, ...], dtype_name: str, scalar_range: Optional[list]) -> np.ndarray:
    """Decode raw voxels; the byte order is the one whose values fit the plist's ``scalar_range``.

    InVesalius writes the matrix with numpy's native (little-endian on x86) byte order and records no byte order, so
    both are tried and checked against the stored range.
    """
    base = np.dtype(dtype_name)
    if len(raw) != int(np.prod(shape)) * base.itemsize:
        raise PrepareError(f"matrix has {len(raw)} bytes, expected {int(np.prod(shape)) * base.itemsize} for {shape}")
    orders = ["<", ">"] if base.itemsize > 1 else ["|"]
    for order in orders:
        voxels = np.frombuffer(raw, dtype=base.newbyteorder(order)).reshape(shape)
        if scalar_range is None:
            return voxels.astype(base.newbyteorder("="))
        lo, hi = int(voxels.min()), int(voxels.max())
        if scalar_range[0] <= lo and hi <= scalar_range[1]:
            return voxels.astype(base.newbyteorder("="))
    raise PrepareError(f"matrix values do not fit the stored scalar_range {scalar_range} in either byte order")


def read_inv3(path: Path) -> Inv3Volume:
    """Read the image volume and its geometry from an InVesalius 3 project (``.inv3``, a gzip tar).

    Raises:
        PrepareError: when the archive lacks the expected entries or they disagree.
    """
    try:
        with tarfile.open(path, mode="r:gz") as archive:  # first pass: the geometry (member order is not fixed)
            plists = read_members(archive, {"main.plist"})
        if "main.plist" not in plists:
            raise PrepareError(f"{path} has no main.plist; is it an InVesalius 3 project?")
        main = plistlib.loads(plists["main.plist"])
        matrix = main.get("matrix") or {}
        needed = {"filename", "shape", "dtype"}
        if not needed <= set(matrix) or "spacing" not in main:
            raise PrepareError(f"main.plist lacks matrix {sorted(needed)} or spacing: {sorted(main)}")
        matrix_name = PurePosixPath(matrix["filename"]).name
        with tarfile.open(path, mode="r:gz") as archive:  # second pass: only the matrix
            archive_raw = read_members(archive, {matrix_name})
    except (tarfile.TarError, OSError, plistlib.InvalidFileException, EOFError) as err:
        raise PrepareError(f"cannot read {path}: {err}") from err
    if matrix_name not in archive_raw:
        raise PrepareError(f"{path} has no {matrix_name}")
    shape = tuple(int(s) for s in matrix["shape"])
    spacing = tuple(float(s) for s in main["spacing"])
    if len(shape) != 3 or len(spacing) != 3 or min(spacing) <= 0:
        raise PrepareError(f"unexpected geometry: shape {shape}, spacing {spacing}")
    scalar_range = main.get("scalar_range")
    voxels = _decode_voxels(archive_raw[matrix_name], shape, str(matrix["dtype"]), scalar_range)
    orientation = _parse_orientation(main.get("orientation", "AXIAL"))
    metadata = {k: v for k, v in main.items() if isinstance(v, (str, int, float, list)) and k != "matrix"}
    return Inv3Volume(voxels, (spacing[0], spacing[1], spacing[2]), orientation, metadata)


# ------------------------------------------------------------------------------------------------------------ NIfTI
def nifti_affine(spacing: tuple[float, float, float], first_slice: int = 0) -> np.ndarray:
    """RAS+ affine for the NIfTI array ``(column, row, slice)`` (see the module docstring), 4x4 float64.

    ``first_slice`` shifts the origin so a sub-volume starting at that slice keeps the full volume's coordinates.
    """
    sx, sy, sz = spacing
    affine = np.diag([-sx, sy, sz, 1.0])
    affine[2, 3] = first_slice * sz
    return affine


def to_nifti(voxels_zyx: np.ndarray, spacing: tuple[float, float, float], first_slice: int = 0) -> nib.Nifti1Image:
    """Wrap ``(Z, Y, X)`` HU voxels as an int16 NIfTI image with the axial affine (qform and sform, mm units)."""
    data = np.ascontiguousarray(voxels_zyx.transpose(2, 1, 0)).astype(np.int16)
    affine = nifti_affine(spacing, first_slice)
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    image.header["descrip"] = b"InVesalius Cranium.inv3 head CT, HU"
    image.header.set_slope_inter(1.0, 0.0)
    return image


# ----------------------------------------------------------------------------------------------------------- split
def check_split(n_slices: int, ranges: dict[str, tuple[int, int]], gap: int) -> None:
    """Check the ranges are inside the volume, non-empty, ordered apart by at least ``gap`` slices."""
    spans = sorted(ranges.values())
    for start, stop in spans:
        if not 0 <= start < stop <= n_slices:
            raise PrepareError(f"split range [{start}, {stop}) does not fit {n_slices} slices")
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        if start - stop < gap:
            raise PrepareError(f"split ranges closer than {gap} slices: {ranges}")


def split_file_name(split: str) -> str:
    return VOLUME_FILE.replace(".nii.gz", f"_{split}.nii.gz")


def is_complete(out: Path) -> bool:
    """True when ``out/split.json`` and ``out/datalist.json`` exist and every file listed exists with its sha256."""
    try:
        info = json.loads((out / SPLIT_FILE).read_text())
        if json.loads((out / DATALIST_FILE).read_text()) != datalist(info["splits"]):
            return False
        entries = [info["volume"], *info["splits"].values()]
        if info.get("format_version") != FORMAT_VERSION:
            return False
        files = [(e["file"], e["sha256"]) for e in entries] + [(LICENSE_FILE, info["license_sha256"])]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((out / name).is_file() and sha256_file(out / name) == digest for name, digest in files)


def datalist(splits: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """The Decathlon-style datalist of the split files (each item a clean volume under ``"label"``)."""
    return {DATALIST_KEYS[name]: [{"label": entry["file"]}] for name, entry in splits.items()}


def license_note(volume: Inv3Volume, archive: Path) -> str:
    """The data licence note for files derived from ``archive``."""
    return LICENSE_TEXT.format(
        archive=archive,
        name=volume.metadata.get("name", "?"),
        modality=volume.metadata.get("modality", "?"),
        package_version=debian_package_version(DEBIAN_PACKAGE),
        spacing=" x ".join(f"{s:g}" for s in volume.spacing),
    )


def prepare(volume: Inv3Volume, archive: Path, out: Path) -> dict[str, Any]:
    """Write the volume, the split volumes, the licence note and ``split.json`` (last) into ``out``.

    Returns:
        The content of ``split.json``.
    """
    if volume.orientation != "AXIAL":
        raise PrepareError(f"only axial projects are supported, this one is {volume.orientation}")
    n_slices = volume.voxels.shape[0]
    check_split(n_slices, SPLIT_RANGES, GAP_SLICES)
    full = nifti_bytes(to_nifti(volume.voxels, volume.spacing), compress=True)
    atomic_write(out / VOLUME_FILE, full)
    splits = {}
    for name, (start, stop) in SPLIT_RANGES.items():
        data = nifti_bytes(to_nifti(volume.voxels[start:stop], volume.spacing, first_slice=start), compress=True)
        atomic_write(out / split_file_name(name), data)
        splits[name] = {
            "slices": [start, stop],
            "n_slices": stop - start,
            "file": split_file_name(name),
            "sha256": sha256_bytes(data),
        }
    note = license_note(volume, archive).encode()
    atomic_write(out / LICENSE_FILE, note)
    info = {
        "format_version": FORMAT_VERSION,
        "description": (
            "Axial slice split of the InVesalius 'Cranium' head CT. Ranges are half-open [start, stop) slice indices "
            "along the NIfTI k axis (inferior -> superior) of the full volume; split files hold exactly those slices "
            f"and keep world coordinates. Gaps of {GAP_SLICES} slices separate the splits."
        ),
        "gap_slices": GAP_SLICES,
        "volume": {
            "file": VOLUME_FILE,
            "sha256": sha256_bytes(full),
            "shape_ijk": [int(s) for s in volume.voxels.shape[::-1]],
            "spacing_mm": list(volume.spacing),
            "orientation": "LAS (affine diag(-sx, +sy, +sz)); axial slices",
            "units": "HU (int16)",
        },
        "splits": splits,
        "license_file": LICENSE_FILE,
        "license_sha256": sha256_bytes(note),
        "source": {
            "debian_package": DEBIAN_PACKAGE,
            "package_version": debian_package_version(DEBIAN_PACKAGE),
            "archive": str(archive),
            "archive_sha256": sha256_file(archive),
            "license": "GPL-2 (Debian package)",
            "project_metadata": volume.metadata,
        },
    }
    atomic_write(out / DATALIST_FILE, (json.dumps(datalist(splits), indent=2) + "\n").encode())
    atomic_write(out / SPLIT_FILE, (json.dumps(info, indent=2, default=str) + "\n").encode())
    return info


def write_sample(volume: Inv3Volume, archive: Path, path: Path, n_slices: int = 4) -> Path:
    """Write ``n_slices`` contiguous slices from the middle of the test split to ``path`` plus a licence note.

    Returns:
        The path of the licence note (``<name>.LICENSE.txt`` beside the sample).
    """
    if not path.name.endswith((".nii", ".nii.gz")):
        raise PrepareError(f"sample path must end with .nii or .nii.gz: {path}")
    start, stop = SPLIT_RANGES["test"]
    if not 0 < n_slices <= stop - start:
        raise PrepareError(f"sample slices must be in 1..{stop - start}, got {n_slices}")
    first = start + (stop - start - n_slices) // 2
    image = to_nifti(volume.voxels[first : first + n_slices], volume.spacing, first_slice=first)
    atomic_write(path, nifti_bytes(image, compress=path.name.endswith(".gz")))
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.name[: -len(".nii")]
    note_path = path.with_name(f"{stem}.LICENSE.txt")
    note = license_note(volume, archive) + (
        f"\nThis sample holds slices [{first}, {first + n_slices}) of the test split [{start}, {stop}).\n"
    )
    atomic_write(note_path, note.encode())
    return note_path


# ------------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="the Cranium.inv3 file")
    parser.add_argument("--no-install", action="store_true", help="fail instead of running apt-get when missing")
    parser.add_argument("--force", action="store_true", help="rewrite the outputs even when they are complete")
    parser.add_argument("--sample", type=Path, help="also write a small test-split sample (.nii or .nii.gz) here")
    parser.add_argument("--sample-slices", type=int, default=4, help="slices in the sample (default 4)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        complete = not args.force and is_complete(args.out)
        if complete and args.sample is None:
            print(f"{args.out} is complete; nothing to do (use --force to rewrite).")
            return 0
        archive = ensure_debian_file(args.archive, DEBIAN_PACKAGE, install=not args.no_install)
        volume = read_inv3(archive)
        shape, hu = volume.voxels.shape, (int(volume.voxels.min()), int(volume.voxels.max()))
        print(f"read {archive}: (Z, Y, X) {shape}, spacing {volume.spacing} mm, {volume.orientation}, HU {hu}")
        if complete:
            print(f"{args.out} is complete; kept.")
        else:
            info = prepare(volume, archive, args.out)
            ranges = {name: tuple(s["slices"]) for name, s in info["splits"].items()}
            files = f"{SPLIT_FILE}, {DATALIST_FILE}, {LICENSE_FILE}"
            print(f"wrote {args.out}: {VOLUME_FILE}, split files {ranges}, {files}")
        if args.sample is not None:
            note = write_sample(volume, archive, args.sample, args.sample_slices)
            print(f"wrote sample {args.sample} and {note}")
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
