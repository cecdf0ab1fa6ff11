#!/usr/bin/env python
"""Prepare the digital FDG brain phantoms and their simulated PET scans for low-count -> full-count PET restoration.

No real PET data is reachable, so the data set is a documented digital phantom (BrainWeb style, see
:mod:`monai_rwkv.transforms.pet`):

* Tissue maps: the ICBM 2009a nonlinear symmetric grey- and white-matter probability maps (1 mm) read from inside the
  ``nilearn`` wheel, as scripts/prepare_mri_data.py reads its T1 template (installed nilearn if present, else ``pip
  download --no-deps nilearn``; the wheel is read, not installed). The wheel ships no CSF map, so CSF is the rest of
  the brain-masked T1 template's support: ``csf = clip(1 - gm - wm, 0, 1)`` where ``T1 > 0``. With ``--maps-dir`` the
  maps are read from ``gm.nii.gz``, ``wm.nii.gz`` and ``csf.nii.gz`` there instead (probabilities in [0, 1], an
  axis-aligned RAS affine; the tests use small synthetic maps).
* Grid: the maps are averaged over blocks to 2 mm voxels (a clinical PET voxel) and padded in plane to ``--fov`` x
  ``--fov`` axial slices (default 128: a 256 mm field of view; the head must fit in its inscribed disc).
* Split by world height z exactly as scripts/prepare_mri_data.py (its ``slab_ranges``): test ``0 <= z < 30`` mm,
  validation ``36 <= z < 56`` mm, training ``z < -6`` and ``z >= 62`` mm (two slabs), 6 mm gaps.
* Anatomy variants: variant ``v`` deforms the whole 2 mm volume of tissue maps by a random smooth displacement field
  (:func:`~monai_rwkv.transforms.pet.random_deformation`, largest displacement ``--deform-mm``, default 4 mm, 24 mm
  FWHM smoothness, seed ``SeedSequence([seed, 1000, v])``) before it is cut into slabs, so phantoms of one slab differ
  in anatomy as well as in activity.
* Phantoms: ``--train-variants`` (default 8) per training slab, ``--variants`` (4) per validation and test slab, from
  :class:`~monai_rwkv.transforms.pet.RandFDGPhantom` on the variant's tissue (grey : white uniform in [3, 5], CSF :
  white in [0, 0.1], white matter 2 SUV, 0-3 spherical lesions of radius 2-6 voxels (4-12 mm) and contrast 0.3-3
  times the local activity, clipped to [0, 20] SUV), seeded by ``--seed``: variant ``v`` of split part ``p`` uses
  the seed ``SeedSequence([seed, p, v])`` (parts in the order train_0, train_1, val, test). The ratios and lesions
  drawn are recorded in split.json, and the lesions written as a label map
  (:func:`~monai_rwkv.transforms.pet.lesion_labels`).
* Attenuation: :func:`~monai_rwkv.transforms.pet.attenuation_map` of the variant's 2 mm volume (water, 0.0096 /mm,
  inside the brain grown by 8 mm for skull and scalp, smoothed by 4 mm FWHM), computed in 3-D then cut into slabs.
* Scans: each axial slice gets the same expected counts (``shared_scale=False``, as 2-D slices simulated one at a
  time), with the defaults of :func:`~monai_rwkv.transforms.pet.simulate_pet`: full count
  :data:`FULL_COUNTS_PER_SLICE` expected true counts per slice, low count 1/12 of it, 30 % randoms + scatter, OSEM 3
  iterations x 16 subsets, 3.5 mm system resolution and 3 mm post-filter. Every training phantom is scanned
  ``--train-scans`` times (default 3: independent noise for the network to learn from), every validation and test
  phantom once. The low and full scans have independent noise (scan ``n`` seeds ``SeedSequence([seed, p, v,
  2n + 1])`` and ``[..., 2n + 2]``), and both are clipped to the paper's range [0, 20] SUV.

Outputs, in ``--out`` (default ``data/pet`` under the repository, which git ignores), NIfTI with the slab's own 2 mm
affine, for each part ``<part>`` in train_0, train_1, val, test and variant ``v``: ``tissue_<part>_v<v>.nii.gz`` (4-D,
the last axis grey, white, CSF), ``mu_<part>_v<v>.nii.gz`` (1/mm), ``phantom_<part>_v<v>.nii.gz`` (SUV),
``lesions_<part>_v<v>.nii.gz`` (uint8 labels, 0 outside lesions), ``low_<part>_v<v>[_n<n>].nii.gz`` and
``full_<part>_v<v>[_n<n>].nii.gz`` (SUV; ``_n<n>`` for the training scans); ``datalist.json`` (Decathlon style: every
item ``{"image": low, "label": full, "phantom", "mu", "tissue", "lesions"}``), ``DATA_LICENSE.txt`` and
``split.json`` (sources, settings, slabs, each phantom's ratios and lesions, sha256 of every file), written last: it
marks the folder complete. Re-running is idempotent (nothing is written when split.json has the same settings and
every file listed exists with its hash; ``--force`` rewrites); every file is written atomically.

``--sample DIR`` also writes a bundle sample (:func:`write_sample`): the middle ``--sample-slices`` slices of the first
test phantom's low-count and full-count scans as ``DIR/lowcount/`` and ``DIR/fullcount/pet_brain_phantom.nii.gz``.

Usage::

    python scripts/prepare_pet_phantoms.py [--out data/pet] [--variants 4] [--train-variants 8] [--train-scans 3]
        [--deform-mm 4] [--seed 0] [--maps-dir DIR] [--sample bundles/restore_rwkv_pet_synthesis/sample]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prepare_mri_data  # noqa: E402 - the sibling script that reads the nilearn wheel
from dataprep import PrepareError, atomic_write, nifti_bytes, sha256_file, write_hashed  # noqa: E402
from prepare_mri_data import DATALIST_KEYS, GAP_MM, SPLITS_MM, check_axes, read_nifti_bytes, slab_ranges  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "pet"
WHEEL_DIR = "nilearn/datasets/data/"
MEMBERS = {name: f"{WHEEL_DIR}mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("gm", "wm", "t1")}
VOXEL_MM = 2.0
SPLIT_FILE, DATALIST_FILE, LICENSE_FILE = "split.json", "datalist.json", "DATA_LICENSE.txt"
FORMAT_VERSION = 2

LICENSE_TEXT = """\
Data licence note
=================
The phantoms are derived from the ICBM 2009a nonlinear symmetric grey- and white-matter probability maps and the T1
template (for the brain mask that defines CSF) as shipped inside the nilearn wheel ({source}). nilearn is BSD-3; the
MNI templates carry this permissive notice: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University. Permission to use, copy, modify, and distribute this software and
its documentation for any purpose and without fee is hereby granted, provided that the above copyright notice
appear in all copies. The authors and McGill University make no representations about the suitability of this
software for any purpose. It is provided "as is" without express or implied warranty.
The files here are resampled (2 mm) maps, synthetic activity phantoms and simulated PET reconstructions made from
them by scripts/prepare_pet_phantoms.py; they contain no data of any person beyond the population-average template.
"""


def _repo_imports() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def wheel_member(member: str) -> tuple[bytes, str]:
    """A file of the nilearn wheel (see prepare_mri_data.mni_wheel_bytes)."""
    return prepare_mri_data.mni_wheel_bytes(member)


def load_wheel_maps() -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Grey, white and CSF probabilities (float64 in [0, 1]), their affine and a provenance string."""
    images, source = {}, ""
    for name, member in MEMBERS.items():
        data, source = wheel_member(member)
        images[name] = read_nifti_bytes(data)
        check_axes(name, images[name])
    affine = images["gm"].affine
    for name, image in images.items():
        if image.shape != images["gm"].shape or not np.allclose(image.affine, affine):
            raise PrepareError(f"the wheel's {name} map is not on the grey-matter map's grid")
    gm, wm, t1 = (np.asanyarray(images[k].dataobj).astype(np.float64) for k in ("gm", "wm", "t1"))
    gm, wm = gm / 255.0, wm / 255.0  # stored as uint8 probabilities 0 .. 255
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * (t1 > 0)
    return {"gm": gm, "wm": wm, "csf": csf}, affine, f"{WHEEL_DIR}mni_icbm152_{{gm,wm,t1}}_... in {source}"


def load_dir_maps(maps_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Grey, white and CSF probability maps from ``maps_dir/{gm,wm,csf}.nii.gz``."""
    maps, affine = {}, None
    for name in ("gm", "wm", "csf"):
        path = maps_dir / f"{name}.nii.gz"
        if not path.is_file():
            raise PrepareError(f"--maps-dir {maps_dir} has no {path.name}")
        image = nib.load(path)
        check_axes(name, image)
        data = np.asanyarray(image.dataobj).astype(np.float64)
        if affine is None:
            affine, shape = image.affine, data.shape
        elif data.shape != shape or not np.allclose(image.affine, affine):
            raise PrepareError(f"{path.name} is not on the grid of gm.nii.gz")
        if data.ndim != 3 or not np.isfinite(data).all() or data.min() < 0 or data.max() > 1 + 1e-6:
            raise PrepareError(f"{path.name} must be a 3-D probability map with values in [0, 1]")
        maps[name] = np.clip(data, 0.0, 1.0)
    return maps, affine, f"{maps_dir} (gm, wm, csf.nii.gz)"


def downsample(maps: dict[str, np.ndarray], affine: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Block averages to 2 mm voxels (a trailing partial block is dropped) and the matching affine."""
    zooms = np.abs(np.diag(affine)[:3])
    factors = np.round(VOXEL_MM / zooms).astype(int)
    if np.any(factors < 1) or not np.allclose(factors * zooms, VOXEL_MM, rtol=1e-3):
        raise PrepareError(f"voxels of {zooms.tolist()} mm do not divide {VOXEL_MM} mm")
    out = {}
    for name, data in maps.items():
        n = np.array(data.shape) // factors
        if np.any(n < 1):
            raise PrepareError(f"the maps ({data.shape}) are smaller than one {VOXEL_MM} mm voxel")
        crop = data[: n[0] * factors[0], : n[1] * factors[1], : n[2] * factors[2]]
        out[name] = crop.reshape(n[0], factors[0], n[1], factors[1], n[2], factors[2]).mean(axis=(1, 3, 5))
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * factors[None, :]
    new[:3, 3] = affine[:3, :3] @ ((factors - 1) / 2.0) + affine[:3, 3]  # centre of the first block
    return out, new


def pad_in_plane(maps: dict[str, np.ndarray], affine: np.ndarray, fov: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Zero-pad axes 0 and 1 to ``fov`` voxels, centred; the affine keeps the world position of every voxel."""
    shape = next(iter(maps.values())).shape
    if shape[0] > fov or shape[1] > fov:
        raise PrepareError(f"the {shape[0]} x {shape[1]} slices do not fit in --fov {fov}")
    before = [(fov - shape[0]) // 2, (fov - shape[1]) // 2, 0]
    pads = [(before[0], fov - shape[0] - before[0]), (before[1], fov - shape[1] - before[1]), (0, 0)]
    out = {name: np.pad(data, pads) for name, data in maps.items()}
    new = affine.copy()
    new[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.array(before, dtype=np.float64)
    return out, new


def nifti(data: np.ndarray, affine: np.ndarray, dtype: Any = np.float32) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.header.set_xyzt_units("mm")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    return image


def part_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def simulate_slices(activity: np.ndarray, mu: np.ndarray, count_fraction: float, seed: int) -> np.ndarray:
    """Every axial slice ``activity[:, :, k]`` scanned with its own count scale (as a 2-D slice on its own; all in one
    batch), the reconstructions clipped to [0, MAX_SUV]."""
    _repo_imports()
    import torch  # noqa: PLC0415

    from monai_rwkv.transforms.pet import MAX_SUV, RandPETAcquisition  # noqa: PLC0415

    scan = RandPETAcquisition(count_fraction=count_fraction, spacing=VOXEL_MM, shared_scale=False)
    scan.set_random_state(seed)
    act = torch.from_numpy(activity[None].astype(np.float32))
    att = torch.from_numpy(mu[None].astype(np.float32))
    return scan(act, att)[0].clamp(0.0, MAX_SUV).numpy()


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that determines the files, compared with split.json's to decide whether the folder is complete."""
    _repo_imports()
    from monai_rwkv.transforms.pet import LOW_COUNT_FRACTION, RandFDGPhantom, RandPETAcquisition  # noqa: PLC0415

    scan, phantom = RandPETAcquisition(), RandFDGPhantom()
    if args.maps_dir is not None:
        inputs = {f"{n}.nii.gz": _hash_or_none(args.maps_dir / f"{n}.nii.gz") for n in ("gm", "wm", "csf")}
        source: Any = {"maps_dir": str(args.maps_dir.resolve()), "sha256": inputs}
    else:
        source = "nilearn wheel"
    return {
        "source": source,
        "seed": int(args.seed),
        "variants": int(args.variants),
        "train_variants": int(args.train_variants),
        "train_scans": int(args.train_scans),
        "deform_mm": float(args.deform_mm),
        "fov": int(args.fov),
        "voxel_mm": VOXEL_MM,
        "phantom": {
            "gm_ratio_range": list(phantom.gm_ratio_range),
            "csf_ratio_range": list(phantom.csf_ratio_range),
            "max_lesions": phantom.max_lesions,
            "lesion_radius_range_voxels": list(phantom.lesion_radius_range),
            "lesion_contrast_range": list(phantom.lesion_contrast_range),
            "white_matter_suv": phantom.white_matter_suv,
            "max_suv": phantom.max_value,
        },
        "scan": {
            "full_counts_per_slice": scan.full_counts,
            "low_count_fraction": LOW_COUNT_FRACTION,
            "background_fraction": scan.background_fraction,
            "iterations": scan.iterations,
            "subsets": scan.subsets,
            "resolution_fwhm_mm": scan.resolution_fwhm_mm,
            "post_filter_fwhm_mm": scan.post_filter_fwhm_mm,
        },
    }


def _hash_or_none(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def is_complete(out: Path, expected: dict[str, Any]) -> bool:
    try:
        info = json.loads((out / SPLIT_FILE).read_text())
        if info.get("format_version") != FORMAT_VERSION or info.get("settings") != expected:
            return False
        files = info["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((out / name).is_file() and sha256_file(out / name) == digest for name, digest in files.items())


def prepare(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    _repo_imports()
    import torch  # noqa: PLC0415

    from monai_rwkv.transforms.pet import (  # noqa: PLC0415
        LOW_COUNT_FRACTION,
        RandFDGPhantom,
        attenuation_map,
        lesion_labels,
        random_deformation,
    )

    expected = settings(args)
    if not args.force and is_complete(out, expected):
        print(f"{out} is complete (split.json settings and hashes match); nothing to do")
        return json.loads((out / SPLIT_FILE).read_text())
    maps, affine, source = load_dir_maps(args.maps_dir) if args.maps_dir else load_wheel_maps()
    maps, affine = downsample(maps, affine)
    maps, affine = pad_in_plane(maps, affine, args.fov)
    base_tissue = np.stack([maps["gm"], maps["wm"], maps["csf"]], axis=-1)
    ranges = slab_ranges(nifti(maps["gm"], affine))
    parts = [
        (f"{split}_{i}" if len(r) > 1 else split, split, r[i]) for split, r in ranges.items() for i in range(len(r))
    ]
    files: dict[str, str] = {}
    datalist: dict[str, list[dict[str, str]]] = {key: [] for key in DATALIST_KEYS.values()}
    slabs = {part: [start, stop] for part, _, (start, stop) in parts}
    phantoms: dict[str, Any] = {}

    def write(name: str, data: np.ndarray, slab_affine: np.ndarray, dtype: Any = np.float32) -> str:
        payload = nifti_bytes(nifti(data, slab_affine, dtype), compress=True)
        write_hashed(out, name, payload, files)
        return name

    def variants_of(split: str) -> int:
        return args.train_variants if split == "train" else args.variants

    for v in range(max(variants_of(split) for _, split, _ in parts)):
        # one anatomy variant of the whole volume per v (a random smooth deformation), cut into the slabs
        rng = np.random.default_rng(part_seed(args.seed, 1000, v))
        tissue = random_deformation(base_tissue, rng, args.deform_mm, spacing=VOXEL_MM)
        mu = attenuation_map(tissue[..., 0], tissue[..., 1], tissue[..., 2], spacing=VOXEL_MM)
        for index, (part, split, (start, stop)) in enumerate(parts):
            if v >= variants_of(split):
                continue
            slab_affine = affine.copy()
            slab_affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(start)]) + affine[:3, 3]
            tissue_slab, mu_slab = tissue[:, :, start:stop], mu[:, :, start:stop]
            stack = torch.from_numpy(np.moveaxis(tissue_slab, -1, 0).astype(np.float32))
            generator = RandFDGPhantom().set_random_state(part_seed(args.seed, index, v))
            phantom = generator(stack)[0].numpy()
            labels = lesion_labels(phantom.shape, generator.lesions).numpy()
            item = {
                "phantom": write(f"phantom_{part}_v{v}.nii.gz", phantom, slab_affine),
                "mu": write(f"mu_{part}_v{v}.nii.gz", mu_slab, slab_affine),
                "tissue": write(f"tissue_{part}_v{v}.nii.gz", tissue_slab, slab_affine),
                "lesions": write(f"lesions_{part}_v{v}.nii.gz", labels, slab_affine, np.uint8),
            }
            phantoms[item["phantom"]] = {
                "ratios_gm_wm_csf": list(generator.ratios),
                "lesions": [
                    {"label": i + 1, "centre_voxel": list(c), "radius_voxels": r, "contrast": k}
                    for i, (c, r, k) in enumerate(generator.lesions)
                ],
            }
            scans = args.train_scans if split == "train" else 1
            for n in range(scans):
                tag = f"{part}_v{v}" + (f"_n{n}" if split == "train" else "")
                seeds = [part_seed(args.seed, index, v, 2 * n + 1), part_seed(args.seed, index, v, 2 * n + 2)]
                low = simulate_slices(phantom, mu_slab, LOW_COUNT_FRACTION, seeds[0])
                full = simulate_slices(phantom, mu_slab, 1.0, seeds[1])
                pair = {"image": write(f"low_{tag}.nii.gz", low, slab_affine)}
                pair["label"] = write(f"full_{tag}.nii.gz", full, slab_affine)
                datalist[DATALIST_KEYS[split]].append({**pair, **item})
            print(f"  {part} variant {v}: {stop - start} slices, {scans} low/full scan pair(s)", flush=True)
    license_text = LICENSE_TEXT.format(source=source).encode()
    write_hashed(out, LICENSE_FILE, license_text, files)
    datalist_bytes = (json.dumps(datalist, indent=2) + "\n").encode()
    write_hashed(out, DATALIST_FILE, datalist_bytes, files)
    info = {
        "format_version": FORMAT_VERSION,
        "settings": expected,
        "maps": source,
        "split_world_z_mm": {"test": SPLITS_MM["test"], "val": SPLITS_MM["val"], "gap": GAP_MM},
        "grid": {"shape": list(maps["gm"].shape), "affine": affine.tolist()},
        "slabs_index_ranges_along_axis_2": slabs,
        "phantoms": phantoms,
        "units": "activity in SUV clipped to [0, 20]; mu in 1/mm; tissue maps are probabilities; lesions are labels",
        "files": files,
    }
    atomic_write(out / SPLIT_FILE, (json.dumps(info, indent=2) + "\n").encode())
    print(f"wrote {out}: {len(files)} files; slabs {json.dumps(slabs)}")
    return info


def write_sample(out: Path, info: dict[str, Any], folder: Path, n_slices: int = 4) -> list[Path]:
    """A bundle sample from the prepared folder ``out``: the middle ``n_slices`` axial slices of the first test phantom,
    its low-count scan as ``folder/lowcount/pet_brain_phantom.nii.gz`` and its full-count scan as
    ``folder/fullcount/pet_brain_phantom.nii.gz`` (same name: evaluation pairs them), with ``folder/DATA_LICENSE.txt``.
    """
    start, stop = info["slabs_index_ranges_along_axis_2"]["test"]
    if not 1 <= n_slices <= stop - start:
        raise PrepareError(f"--sample-slices must be in 1..{stop - start}, got {n_slices}")
    first = (stop - start - n_slices) // 2
    written = []
    for scan, sub in (("low", "lowcount"), ("full", "fullcount")):
        image = nib.load(out / f"{scan}_test_v0.nii.gz")
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ np.array([0.0, 0.0, float(first)]) + image.affine[:3, 3]
        data = np.asarray(image.dataobj, dtype=np.float32)[:, :, first : first + n_slices]
        written.append(folder / sub / "pet_brain_phantom.nii.gz")
        written[-1].parent.mkdir(parents=True, exist_ok=True)
        atomic_write(written[-1], nifti_bytes(nifti(data, affine), compress=True))
    note = LICENSE_TEXT.format(source=info["maps"]) + (
        f"\nThis sample holds axial slices [{first}, {first + n_slices}) of the first test phantom (test slab, variant "
        "0): lowcount/ its simulated low-count (1/12) scan, fullcount/ its full-count scan, in SUV.\n"
    )
    atomic_write(folder / "DATA_LICENSE.txt", note.encode())
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--maps-dir", type=Path, default=None, help="read gm/wm/csf.nii.gz here instead of the wheel")
    parser.add_argument("--variants", type=int, default=4, help="phantoms (each scanned once) per validation/test slab")
    parser.add_argument("--train-variants", type=int, default=8, help="phantoms per training slab")
    parser.add_argument("--train-scans", type=int, default=3, help="low/full scan pairs per training phantom")
    parser.add_argument(
        "--deform-mm", type=float, default=4.0, help="largest displacement of each variant's random anatomy deformation"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed of the phantoms and the noise")
    parser.add_argument("--fov", type=int, default=128, help="in-plane size of the slices in 2 mm voxels")
    parser.add_argument("--force", action="store_true", help="rewrite even when the folder is complete")
    parser.add_argument("--sample", type=Path, default=None, help="also write a bundle sample folder here")
    parser.add_argument("--sample-slices", type=int, default=4, help="slices in the sample (default 4)")
    args = parser.parse_args(argv)
    if min(args.variants, args.train_variants, args.train_scans) < 1 or args.fov < 8 or not args.deform_mm >= 0:
        parser.error("--variants, --train-variants and --train-scans must be >= 1, --fov >= 8, --deform-mm >= 0")
    try:
        info = prepare(args.out, args)
        if args.sample is not None:
            for path in write_sample(args.out, info, args.sample, args.sample_slices):
                print(f"wrote sample {path}")
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
