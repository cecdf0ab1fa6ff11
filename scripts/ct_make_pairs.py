#!/usr/bin/env python
"""Low-dose / full-dose CT pairs from your own full-dose scans, for ``scripts/ct_baselines.py --pairs``.

Each axial slice (last axis) of each input, a NIfTI file or a DICOM series of CT in HU, is scanned again by one of
``--scanners`` (taken in turn, slice by slice; the noise of slice ``k`` of the ``i``-th input seeded by
``--seed + 1000 i + k``): the shifted test set's ``soft``, ``sharp`` and ``quiet`` scanners of
``scripts/prepare_ct_shifted.py`` (outside the CT bundle's training ranges) and ``evaluation``, the
in-distribution protocol's (:class:`~monai_rwkv.transforms.LowDoseCT` at a quarter dose), or scanners of your own
(``--scanner NAME=JSON``: :class:`~monai_rwkv.transforms.RandLowDoseCT` settings, e.g. another flux, view count and
filter), with the slice's own pixel spacing. The input is the reference: its own grain stays in it, as in a real
full-dose scan.

Written under ``--output`` (inputs are only read; every file is written to a temporary name and renamed)::

    validation/full/<name>.nii.gz  validation/low/<name>.nii.gz   (the --validation inputs: classical filters are
    test/full/<name>.nii.gz        test/low/<name>.nii.gz          tuned on these, scored on the test inputs)
    pairs.json                     scanner settings, sources, and each slice's scanner (the report's groups)

float32 HU with the input's affine (RAS). ``--stride N`` keeps every N-th slice (the simulation takes about a
second per 512 x 512 slice and scanner); existing outputs are kept unless ``--overwrite``.

Usage::

    python scripts/ct_make_pairs.py --output runs/my_pairs --validation val_scan.nii.gz head.nii.gz abdomen/
    python scripts/ct_baselines.py --pairs mine=runs/my_pairs --oracle --slice-oracle nlm \\
        --model "Restore-RWKV light=bundles/restore_rwkv_ct_denoise/models/model.pt"
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataprep import atomic_write, nifti_bytes  # noqa: E402 - the data scripts' atomic writes
from prepare_ct_shifted import SCANNERS, head_pairs  # noqa: E402 - the shifted set's scanners and scans

from monai_rwkv.apps import bundle_input_spec, find_inputs, load_bundle_config, read_volume  # noqa: E402
from monai_rwkv.apps.restore import check_input, error_line  # noqa: E402
from monai_rwkv.transforms import RandLowDoseCT  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "restore_rwkv_ct_denoise"
#: the scanners on offer: the shifted set's, and the in-distribution evaluation's (``LowDoseCT``'s defaults at the
#: protocol's quarter dose of 2e6 photons per ray, Ram-Lak, 720 views).
PAIR_SCANNERS = {**{k: v for k, v in SCANNERS.items() if k != "reference"}, "evaluation": {"dose_fraction": 0.25}}
SPLITS = ("validation", "test")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="full-dose test scans: NIfTI files or DICOM series folders")
    p.add_argument(
        "--validation",
        action="append",
        type=Path,
        default=[],
        required=True,
        help="a full-dose scan to tune the classical filters on (repeatable; not one of the test scans)",
    )
    p.add_argument("--output", type=Path, required=True, help="the pairs folder")
    p.add_argument(
        "--scanners", default="soft,sharp", help=f"comma-separated, of {','.join(PAIR_SCANNERS)} and --scanner names"
    )
    p.add_argument(
        "--scanner",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='a scanner of your own: RandLowDoseCT settings, e.g. \'low90={"dose_fraction": 0.1, "n_views": 90, '
        '"window": "hann"}\' (repeatable)',
    )
    p.add_argument("--stride", type=int, default=1, help="keep every N-th slice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing pairs of the same names")
    return p


def _custom_scanner(p: argparse.ArgumentParser, item: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` of ``--scanner``: a new name and settings that :class:`RandLowDoseCT` takes."""
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not name or "," in name or name in PAIR_SCANNERS:
        p.error(f"--scanner {item!r}: expected NAME=JSON with a new NAME (not {', '.join(PAIR_SCANNERS)}; no commas)")
    try:
        settings = json.loads(text)
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
        RandLowDoseCT(spacing=1.0, **settings)
    except (ValueError, TypeError) as e:
        p.error(f"--scanner {name}: {str(e).splitlines()[0]} (expected RandLowDoseCT settings as a JSON object)")
    return name, settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
    args.settings = dict(PAIR_SCANNERS)
    for item in args.scanner:
        name, settings = _custom_scanner(p, item)
        args.settings[name] = settings
    args.scanners = [s.strip() for s in args.scanners.split(",") if s.strip()]
    unknown = [s for s in args.scanners if s not in args.settings]
    if unknown or not args.scanners:
        p.error(f"--scanners: unknown {unknown or 'none given'}; choose from {','.join(args.settings)}")
    if args.stride < 1:
        p.error(f"--stride: expected a positive integer, got {args.stride}")
    sources = [Path(x).resolve() for x in args.validation + args.inputs]
    if len(set(sources)) < len(sources):
        p.error("a scan is given twice (a validation scan must not also be a test scan)")
    return args


def pair_volumes(
    volume: torch.Tensor, scanners: Mapping[str, Mapping[str, Any]], seed: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``(full, low, affine, scanner of each slice)`` of a ``(1, i, j, k)`` HU volume with its RAS ``affine`` meta:
    every ``stride``-th axial slice, scanned as the shifted set's heads are (``prepare_ct_shifted.head_pairs``: slice
    ``n`` of those by the ``n % len(scanners)``-th of ``scanners``, name -> :class:`RandLowDoseCT` settings, noise
    seeded by ``seed + n``); the affine of the kept slices."""
    affine = np.asarray(volume.affine, dtype=np.float64).copy()
    affine[:3, 2] *= stride
    image = nib.Nifti1Image(np.asarray(volume[0], dtype=np.float32)[:, :, ::stride], affine)
    full, low, used = head_pairs(image, seed, tuple(scanners), scanners)
    return full, low, affine, used


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spec = bundle_input_spec(load_bundle_config(BUNDLE))
    jobs = [("validation", path) for path in args.validation] + [("test", path) for path in args.inputs]
    images, names = [], {split: set() for split in SPLITS}
    for split, path in jobs:  # every input checked before anything is written
        try:
            found = find_inputs(path)
            if len(found) != 1:
                raise ValueError(f"expected one NIfTI file or DICOM series, found {len(found)}")
            image = found[0]
            volume = read_volume(image)
            check_input(spec, volume, path)
        except Exception as e:  # one line per input, then exit
            raise SystemExit(f"error: {error_line(path, e)}") from None
        if image.name in names[split]:
            raise SystemExit(f"error: {path}: a second {split} input named {image.name!r}; rename one")
        names[split].add(image.name)
        images.append((split, path, image.name, volume))
    targets = [
        args.output / split / kind / f"{name}.nii.gz" for split, _, name, _ in images for kind in ("full", "low")
    ]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise SystemExit(f"error: {existing[0]}: exists ({len(existing)} outputs in all); pass --overwrite to replace")
    record = json.loads((args.output / "pairs.json").read_text()) if (args.output / "pairs.json").is_file() else {}
    scanners = {scanner: args.settings[scanner] for scanner in args.scanners}  # name -> settings, in turn
    record.setdefault("scanners", {}).update(scanners)
    for i, (split, path, name, volume) in enumerate(images):
        full, low, affine, used = pair_volumes(volume, scanners, args.seed + 1000 * i, args.stride)
        for kind, data in (("full", full), ("low", low)):
            target = args.output / split / kind / f"{name}.nii.gz"
            atomic_write(target, nifti_bytes(nib.Nifti1Image(data, affine), compress=True))
        record.setdefault("sources", {}).setdefault(split, {})[name] = {
            "path": str(path),
            "stride": args.stride,
            "seed": args.seed + 1000 * i,
        }
        record.setdefault("slices", {}).setdefault(split, {})[name] = used
        print(f"{split}/{name}: {full.shape[2]} slices ({', '.join(sorted(set(used)))})", flush=True)
    atomic_write(args.output / "pairs.json", (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
