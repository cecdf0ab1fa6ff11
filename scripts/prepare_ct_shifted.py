#!/usr/bin/env python
"""Build the shifted CT validation and test sets: scanners and anatomy the CT bundle's training never sees.

Run after ``scripts/prepare_ct_data.py``. It reads the validation and test head volumes of ``--data`` (default
``data/ct``) and writes, into ``<data>/shifted/``, low-dose / full-dose pairs for each split:

* ``{split}/{full,low}/head.nii.gz``: every axial slice of the split's head volume (regions of the head that the
  training volume does not contain), the grid and affine of the split volume;
* ``{split}/{full,low}/head_fine.nii.gz``: the same head slices resampled (bicubic) to a 512 x 512 matrix of
  about 0.48 mm pixels, the grid of a clinical head scan (the head twice as many pixels across), scanned again
  with other noise draws;
* ``{split}/{full,low}/body.nii.gz``: synthetic adult thorax, abdomen and head slices
  (:func:`monai_rwkv.transforms.synthetic_ct`) of 512 x 512 pixels of 0.7 mm (a 358 mm field of view: finer
  pixels and larger bodies than any training image), seeds disjoint from training's random stream; the full-dose
  slice is the synthetic image scanned by the ``reference`` scanner below (a reference carries a routine scan's
  grain, as the head's and any real scan's does) and the low-dose slice that scan scanned again;
* ``{split}/{full,low}/head_quiet.nii.gz``: the split's head slices again, each scanned by the ``quiet`` scanner;

the slices of ``head``, ``head_fine`` and ``body`` scanned by one of two scanners outside the training ranges of
``configs/train.json`` (alternating by slice), those of ``head_quiet`` by a third (the scanner of each slice is
recorded in ``datalist_shifted.json``):

* ``soft``: a Hamming-windowed filter (no training filter), cutoff 0.85, 960 views, photons x dose = 6e4 with
  electronic noise variance 60 and a 2-bin detector blur: much noise, smooth grain;
* ``sharp``: Ram-Lak at full cutoff, 45 views (three quarters of the fewest any training scan has: view-aliasing
  streaks), photons x dose = 2.4e6, electronic noise variance 5, no blur: little noise, streaks;
* ``quiet``: a routine-dose scan, Shepp-Logan filter (no training filter) at cutoff 0.9, 1000 views,
  photons x dose = 8e6 (sixteen times the evaluation protocol's quarter dose of 2e6 photons, the level 4 of
  ``scripts/ct_dose_sweep.py``), electronic noise variance 2, a 1-bin detector blur: the least noise of the set; a
  denoiser must not smooth away what a good scan shows;
* ``reference`` (the bodies' full-dose scans only): full dose, 1e7 photons, electronic noise variance 2, 1000 views,
  Shepp-Logan at full cutoff, a 1-bin detector blur.

``<data>/datalist_shifted.json`` lists the pairs (``validation`` and ``test``, paths relative to ``--data``), the
scanners and the slices; the ``full`` and ``low`` folders also pair by file name, as
:func:`monai_rwkv.apps.evaluate.evaluate_restoration` with ``degraded_dir`` reads them. Select checkpoints on its
``validation`` list with ``--val_datalist_file <data>/datalist_shifted.json --val_paired True``. Files are written
to temporary names and renamed; the datalist is written last and marks the set as complete (``--force`` rebuilds
it).

Usage::

    python scripts/prepare_ct_shifted.py [--data data/ct] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataprep import PrepareError, atomic_write, nifti_bytes  # noqa: E402

from monai_rwkv.transforms import SYNTHETIC_CT_REGIONS, RandLowDoseCT, synthetic_ct  # noqa: E402

SCANNERS = {
    "soft": {
        "dose_fraction": 0.2,
        "incident_photons": 3e5,
        "electronic_noise_var": 60.0,
        "n_views": 960,
        "window": "hamming",
        "cutoff": 0.85,
        "detector_blur_fwhm": 2.0,
    },
    "sharp": {
        "dose_fraction": 0.3,
        "incident_photons": 8e6,
        "electronic_noise_var": 5.0,
        "n_views": 45,
        "window": "ram-lak",
        "cutoff": 1.0,
        "detector_blur_fwhm": 0.0,
    },
    "quiet": {
        "dose_fraction": 0.5,
        "incident_photons": 1.6e7,
        "electronic_noise_var": 2.0,
        "n_views": 1000,
        "window": "shepp-logan",
        "cutoff": 0.9,
        "detector_blur_fwhm": 1.0,
    },
    "reference": {
        "dose_fraction": 1.0,
        "incident_photons": 1e7,
        "electronic_noise_var": 2.0,
        "n_views": 1000,
        "window": "shepp-logan",
        "cutoff": 1.0,
        "detector_blur_fwhm": 1.0,
    },
}
SPLITS = {"validation": ("validation", 8, 1000), "test": ("test", 12, 2000)}  # folder, body slices, first seed
BODY_SHAPE, BODY_PIXEL = (512, 512), 0.7
# 6: the sharp scanner has 45 views (training reaches down to 60); 5: body references are full-dose scans;
# 4: adds head_quiet; 3: adds head_fine; 2: the sharp scanner has 90 views
FORMAT_VERSION = 6
FINE_MATRIX = 512  # head_fine's matrix: the head's field of view on a clinical head scan's grid
DATALIST_FILE = "datalist_shifted.json"


def slice_scanners(datalist: Mapping[str, Any], split: str, name: str) -> list[str]:
    """The scanner of each slice of the file ``name`` (e.g. ``head_fine``) of ``split`` in a ``datalist_shifted.json``
    record: its ``slices`` entry holds a scanner name (heads) or a ``{"scanner": ...}`` dict (bodies) per slice."""
    return [s if isinstance(s, str) else s["scanner"] for s in datalist["slices"][split][name]]


def scan(
    slice_hu: torch.Tensor, spacing: tuple[float, float], scanner: str | Mapping[str, Any], seed: int
) -> torch.Tensor:
    """The low-dose scan of one ``(H, W)`` slice by a scanner of :data:`SCANNERS` (by name) or of the given
    :class:`RandLowDoseCT` settings, noise seeded by ``seed``."""
    settings = SCANNERS[scanner] if isinstance(scanner, str) else scanner
    simulator = RandLowDoseCT(spacing=spacing, **settings)
    simulator.set_random_state(seed)
    return simulator(slice_hu[None])[0].float()  # the simulator computes in float64 (SIMULATION_DTYPE)


def head_pairs(
    volume: nib.Nifti1Image,
    seed: int,
    scanners: tuple[str, ...] = ("soft", "sharp"),
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Full and low-dose ``(i, j, k)`` volumes; each axial slice scanned as an image of rows j and columns i, slice k
    by ``scanners[k % len(scanners)]`` (a name of :data:`SCANNERS`, or of ``settings``: name -> :class:`RandLowDoseCT`
    settings) with the noise seeded by ``seed + k``."""
    full = np.asarray(volume.dataobj, dtype=np.float32)
    sx, sy = (float(z) for z in volume.header.get_zooms()[:2])
    low, used = np.empty_like(full), []
    for k in range(full.shape[2]):
        scanner = scanners[k % len(scanners)]
        scanned_by = settings[scanner] if settings is not None else scanner
        low[:, :, k] = scan(torch.from_numpy(full[:, :, k].T.copy()), (sy, sx), scanned_by, seed + k).numpy().T
        used.append(scanner)
    return full, low, used


def fine_volume(volume: nib.Nifti1Image, matrix: int = FINE_MATRIX) -> nib.Nifti1Image:
    """``volume``'s axial slices resampled (bicubic, floored at -1024 HU) to ``matrix`` x ``matrix`` pixels over the
    same field of view; the affine's in-plane columns scaled to match."""
    full = torch.from_numpy(np.asarray(volume.dataobj, dtype=np.float32)).permute(2, 0, 1)[:, None]
    fine = F.interpolate(full.double(), size=(matrix, matrix), mode="bicubic", align_corners=False)
    affine = volume.affine.copy()
    for axis, size in enumerate(full.shape[-2:]):
        ratio = size / matrix  # old pixels per new pixel; pixel edges stay where they were
        affine[:3, 3] += volume.affine[:3, axis] * (ratio - 1) / 2
        affine[:3, axis] *= ratio
    return nib.Nifti1Image(np.maximum(fine[:, 0].permute(1, 2, 0).numpy(), -1024.0).astype(np.float32), affine)


def body_pairs(
    n: int, seed: int, shape: tuple[int, int] = BODY_SHAPE, pixel: float = BODY_PIXEL
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """``n`` synthetic slices as ``(i, j, k)`` volumes (rows j anterior to posterior): the full-dose volume holds each
    slice's scan by the ``reference`` scanner (a reference carries a routine scan's grain, as a real one does), the
    low-dose volume that scan scanned again by ``soft`` or ``sharp`` (alternating), as the head pairs are made."""
    full = np.empty((shape[1], shape[0], n), np.float32)
    low, slices = np.empty_like(full), []
    for k in range(n):
        rng = np.random.RandomState(seed + k)
        region = SYNTHETIC_CT_REGIONS[(k + 1) % len(SYNTHETIC_CT_REGIONS)]
        contrast, couch = bool(rng.uniform() < 0.5), bool(rng.uniform() < 0.5)
        hu = synthetic_ct(shape, pixel, region, rng, contrast, couch, blur=float(rng.uniform(0.3, 0.9)))
        reference = scan(hu, (pixel, pixel), "reference", seed + 5000 + k)
        scanner = ("soft", "sharp")[k % 2]
        full[:, :, k] = reference.numpy().T
        low[:, :, k] = scan(reference, (pixel, pixel), scanner, seed + 500 + k).numpy().T
        slices.append({"region": region, "contrast": contrast, "couch": couch, "scanner": scanner})
    return full, low, slices


def prepare(data: Path, force: bool = False) -> dict:
    """Write the shifted pairs and ``datalist_shifted.json`` (last) under ``data``; returns the datalist."""
    target = data / DATALIST_FILE
    if target.is_file() and not force:
        info = json.loads(target.read_text())
        files = [data / item[key] for split in SPLITS for item in info[split] for key in ("image", "label")]
        if info.get("format_version") == FORMAT_VERSION and all(f.is_file() for f in files):
            return info
    split_info = json.loads((data / "split.json").read_text()) if (data / "split.json").is_file() else None
    if split_info is None:
        raise PrepareError(f"{data / 'split.json'}: missing: run scripts/prepare_ct_data.py first")
    info: dict = {"format_version": FORMAT_VERSION, "scanners": SCANNERS, "slices": {}}
    for split, (tag, n_body, seed) in SPLITS.items():
        volume = nib.load(data / split_info["splits"]["val" if split == "validation" else "test"]["file"])
        items, records = [], {}
        full, low, scanners = head_pairs(volume, seed)
        records["head"] = scanners
        pairs = [("head", full, low, volume.affine)]
        fine = fine_volume(volume)
        full, low, scanners = head_pairs(fine, seed + 300)
        records["head_fine"] = scanners
        pairs.append(("head_fine", full, low, fine.affine))
        full, low, slices = body_pairs(n_body, seed + 100)
        records["body"] = slices
        pairs.append(("body", full, low, np.diag([-BODY_PIXEL, BODY_PIXEL, 5.0, 1.0])))
        full, low, scanners = head_pairs(volume, seed + 600, ("quiet",))
        records["head_quiet"] = scanners
        pairs.append(("head_quiet", full, low, volume.affine))
        for name, full_v, low_v, affine in pairs:
            for kind, array in (("full", full_v), ("low", low_v)):
                (data / "shifted" / tag / kind).mkdir(parents=True, exist_ok=True)
                path = f"shifted/{tag}/{kind}/{name}.nii.gz"
                atomic_write(data / path, nifti_bytes(nib.Nifti1Image(array, affine), compress=True))
            items.append({"image": f"shifted/{tag}/low/{name}.nii.gz", "label": f"shifted/{tag}/full/{name}.nii.gz"})
        info[split] = items
        info["slices"][split] = records
    atomic_write(target, (json.dumps(info, indent=2) + "\n").encode())
    return info


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/ct"), help="prepare_ct_data.py's output folder")
    parser.add_argument("--force", action="store_true", help="rebuild even when the set is complete")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    try:
        prepare(args.data, args.force)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.data / DATALIST_FILE}: written in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
