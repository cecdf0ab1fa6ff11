#!/usr/bin/env python
"""Prepare the real brain T1 MRI used to train and test MRI super-resolution.

Sources (all offline once installed; the geometry is read from each file, never from constants here):

* ``colin1mm``: Colin27 T1, 1 mm (``/usr/share/mricron/templates/ch2.nii.gz`` of the Debian package
  ``mricron-data``, BSD-3; installed with apt-get when missing). One real subject, averaged over 27 scans, with skull.
* ``colin05mm``: the same subject at 0.5 mm (``ch2better.nii.gz``, same package): finer detail.
* ``mni152``: the ICBM 2009a symmetric T1 template (an average of 152 brains, brain-masked), 1 mm, read from inside
  the ``nilearn`` wheel (installed nilearn if present, else ``pip download --no-deps nilearn`` into a temporary
  folder; the wheel is read, not installed).

All three live in the same MNI-like world space (RAS, millimetres), so one split by world height ``z`` keeps the same
anatomy out of training for all of them:

* test: ``0 <= z < 30`` mm (basal ganglia and lateral ventricles);
* validation: ``36 <= z < 56`` mm (centrum semiovale);
* training: ``z < -6`` mm (cerebellum, brainstem, temporal lobes) and ``z >= 62`` mm (vertex), two slabs per source.

The 6 mm gaps keep neighbouring, highly correlated slices out of different splits. Training uses axial, coronal and
sagittal slices of its slabs (``RandSliced`` in the bundle's train.json); validation and test are axial slices.

Intensities: each source is scaled linearly so that its maximum is 4095 (the paper's MRI range [0, 4095]) and
stored as float32; the metrics of the paper's protocol are computed in these units.

Outputs, in ``--out`` (default ``data/mri`` under the repository, which git ignores): one NIfTI per source and split
(``<source>_<split>.nii.gz``, the slab's own affine), ``datalist.json`` (Decathlon style: ``{"training":
[{"label": file}], "validation": [...], "test": [...]}``), ``DATA_LICENSE.txt`` and ``split.json`` (sources, slabs,
sha256 of every file), written last: it marks the folder complete. Re-running is idempotent (nothing is written when
every file listed exists with its hash; ``--force`` rewrites); every file is written atomically.

Usage::

    python scripts/prepare_mri_data.py [--out data/mri] [--sample bundles/restore_rwkv_mri_sr/sample]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataprep import (  # noqa: E402 - the shared helpers live beside this script
    PrepareError,
    atomic_write,
    debian_package_version,
    ensure_debian_file,
    nifti_bytes,
    sha256_file,
    write_hashed,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "mri"
DEBIAN_PACKAGE = "mricron-data"
COLIN_1MM = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_05MM = Path("/usr/share/mricron/templates/ch2better.nii.gz")
MNI_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MAX_VALUE = 4095.0
#: half-open world-z ranges in mm; training is everything below the first and above the last bound, gaps apart.
SPLITS_MM = {"test": (0.0, 30.0), "val": (36.0, 56.0)}
GAP_MM = 6.0
DATALIST_KEYS = {"train": "training", "val": "validation", "test": "test"}
#: sources whose validation slab is listed for train.json's validation (the 0.5 mm slab quadruples its cost; it is
#: still written and used to tune the classical baselines)
VALIDATION_SOURCES = ("colin1mm", "mni152")
SPLIT_FILE, DATALIST_FILE, LICENSE_FILE = "split.json", "datalist.json", "DATA_LICENSE.txt"
FORMAT_VERSION = 2

LICENSE_TEXT = """\
Data licence note
=================
colin1mm, colin05mm: the Colin27 T1 template (ch2.nii.gz, ch2better.nii.gz) from the Debian package mricron-data
({mricron}), distributed under the BSD-3-clause licence (see /usr/share/doc/mricron-data/copyright). The package's
HarvardOxford atlases are not used.
mni152: the ICBM 2009a nonlinear symmetric T1 template as shipped inside the nilearn wheel ({nilearn}), BSD-3
(nilearn) with the MNI template's permissive copyright notice (Copyright (C) 1993-2009 Louis Collins, McConnell
Brain Imaging Centre, Montreal Neurological Institute, McGill University).
The files here are rescaled (maximum 4095) slabs of these images.
"""


def read_nifti_bytes(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def mni_wheel_bytes(member: str = MNI_MEMBER) -> tuple[bytes, str]:
    """A file of the nilearn wheel (default the MNI152 T1 template): from an installed nilearn, else from its wheel
    downloaded without installing. Returns the bytes and where they came from."""
    spec = importlib.util.find_spec("nilearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))).parent / member
        if path.is_file():
            import nilearn  # noqa: PLC0415

            return path.read_bytes(), f"nilearn {nilearn.__version__} (installed)"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, "nilearn"]
        print("running:", " ".join(cmd), flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("nilearn-*.whl"))
        if result.returncode != 0 or not wheels:
            reason = result.stderr[-300:]
            raise PrepareError(f"could not download the nilearn wheel (pip exit {result.returncode}): {reason}")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            try:
                return wheel.read(member), wheels[-1].name
            except KeyError:
                raise PrepareError(f"{wheels[-1].name} has no {member}") from None


def load_sources(install: bool = True) -> tuple[dict[str, nib.Nifti1Image], dict[str, str]]:
    """The three source images and a provenance string for each."""
    version = ""
    images, provenance = {}, {}
    for name, path in (("colin1mm", COLIN_1MM), ("colin05mm", COLIN_05MM)):
        ensure_debian_file(path, DEBIAN_PACKAGE, install=install)
        version = version or debian_package_version(DEBIAN_PACKAGE)
        images[name] = read_nifti_bytes(path.read_bytes())
        provenance[name] = f"{path} ({DEBIAN_PACKAGE} {version})"
    data, source = mni_wheel_bytes()
    images["mni152"] = read_nifti_bytes(data)
    provenance["mni152"] = f"{MNI_MEMBER} in {source}"
    return images, provenance


def check_axes(name: str, image: nib.Nifti1Image) -> None:
    """The split is along the third array axis: it must be the world's z (superior) axis, with no rotation."""
    linear = image.affine[:3, :3]
    if nib.aff2axcodes(image.affine) != ("R", "A", "S") or not np.allclose(linear, np.diag(np.diag(linear))):
        raise PrepareError(f"{name}: expected an axis-aligned RAS affine, got {nib.aff2axcodes(image.affine)}")


def slab_ranges(image: nib.Nifti1Image) -> dict[str, list[tuple[int, int]]]:
    """Half-open index ranges along axis 2 of each split (training: two slabs), from the world z of each slice."""
    n = image.shape[2]
    z = image.affine[2, 2] * np.arange(n) + image.affine[2, 3]
    (t0, t1), (v0, v1) = SPLITS_MM["test"], SPLITS_MM["val"]

    def where(mask: np.ndarray) -> tuple[int, int]:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            raise PrepareError(f"no slice in a split range (z from {z[0]:.1f} to {z[-1]:.1f} mm)")
        return int(idx[0]), int(idx[-1]) + 1

    return {
        "train": [where(z < t0 - GAP_MM), where(z >= v1 + GAP_MM)],
        "val": [where((z >= v0) & (z < v1))],
        "test": [where((z >= t0) & (z < t1))],
    }


def slab(image: nib.Nifti1Image, start: int, stop: int, scale: float) -> nib.Nifti1Image:
    """Slices ``[start, stop)`` along axis 2, rescaled, float32, with the affine of their own first voxel."""
    data = np.asanyarray(image.dataobj)[:, :, start:stop].astype(np.float32) * np.float32(scale)
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.array([0.0, 0.0, float(start)]) + image.affine[:3, 3]
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm")
    out.header.set_qform(affine, code=1)
    out.header.set_sform(affine, code=1)
    return out


def is_complete(out: Path) -> bool:
    try:
        info = json.loads((out / SPLIT_FILE).read_text())
        if info.get("format_version") != FORMAT_VERSION:
            return False
        files = info["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((out / name).is_file() and sha256_file(out / name) == digest for name, digest in files.items())


def prepare(out: Path, install: bool = True) -> dict[str, Any]:
    images, provenance = load_sources(install)
    files: dict[str, str] = {}
    datalist: dict[str, list[dict[str, str]]] = {key: [] for key in DATALIST_KEYS.values()}
    slabs: dict[str, Any] = {}
    for name, image in images.items():
        check_axes(name, image)
        maximum = float(np.max(np.asanyarray(image.dataobj)))
        if not maximum > 0:
            raise PrepareError(f"{name}: empty image")
        ranges = slab_ranges(image)
        slabs[name] = {"shape": list(image.shape), "spacing_mm": [float(v) for v in image.header.get_zooms()[:3]]}
        for split, parts in ranges.items():
            for part, (start, stop) in enumerate(parts):
                suffix = f"_{part}" if len(parts) > 1 else ""
                file = f"{name}_{split}{suffix}.nii.gz"
                data = nifti_bytes(slab(image, start, stop, MAX_VALUE / maximum), compress=True)
                write_hashed(out, file, data, files)
                if split != "val" or name in VALIDATION_SOURCES:
                    datalist[DATALIST_KEYS[split]].append({"label": file})
                slabs[name][f"{split}{suffix}"] = [start, stop]
    license_text = LICENSE_TEXT.format(mricron=provenance["colin1mm"], nilearn=provenance["mni152"]).encode()
    write_hashed(out, LICENSE_FILE, license_text, files)
    datalist_bytes = (json.dumps(datalist, indent=2) + "\n").encode()
    write_hashed(out, DATALIST_FILE, datalist_bytes, files)
    info = {
        "format_version": FORMAT_VERSION,
        "sources": provenance,
        "split_world_z_mm": {"test": SPLITS_MM["test"], "val": SPLITS_MM["val"], "gap": GAP_MM},
        "slabs_index_ranges_along_axis_2": slabs,
        "intensity": f"each source scaled linearly to maximum {MAX_VALUE:g}, float32",
        "files": files,
    }
    atomic_write(out / SPLIT_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return info


def write_sample(out: Path, sample: Path, n_slices: int = 6) -> None:
    """A demo sample: ``n_slices`` axial slices from the middle of colin1mm's test slab and their x4 input."""
    sys.path.insert(0, str(REPO))
    import torch  # noqa: PLC0415

    from monai_rwkv.transforms.kspace import truncate_kspace  # noqa: PLC0415

    test = nib.load(out / "colin1mm_test.nii.gz")
    mid = test.shape[2] // 2
    start = mid - n_slices // 2
    clean = slab(test, start, start + n_slices, 1.0)
    low = truncate_kspace(torch.from_numpy(np.asarray(clean.dataobj)), 4.0, dims=(0, 1)).numpy().astype(np.float32)
    for folder, image in (("reference", clean), ("x4", nib.Nifti1Image(low, clean.affine, clean.header))):
        atomic_write(sample / folder / "colin_t1.nii.gz", nifti_bytes(image, compress=True))
    atomic_write(sample / "DATA_LICENSE.txt", (out / LICENSE_FILE).read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install mricron-data when missing")
    parser.add_argument("--force", action="store_true", help="rewrite even when the folder is complete")
    parser.add_argument("--sample", type=Path, default=None, help="also write a small demo sample to this folder")
    args = parser.parse_args(argv)
    try:
        if args.force or not is_complete(args.out):
            info = prepare(args.out, install=not args.no_install)
            slabs = json.dumps(info["slabs_index_ranges_along_axis_2"])
            print(f"wrote {args.out}: {len(info['files'])} files; slabs {slabs}")
        else:
            print(f"{args.out} is complete (split.json hashes match); nothing to do")
        if args.sample is not None:
            write_sample(args.out, args.sample)
            print(f"wrote sample {args.sample}")
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
