#!/usr/bin/env python
"""One test slice restored by several runs side by side, with a zoomed soft-tissue detail.

Each ``--row LABEL=FOLDER`` is the per-method folder that ``scripts/ct_baselines.py`` (``--output-dir``) or
:func:`monai_rwkv.apps.evaluate.evaluate_restoration` writes: ``metrics.csv`` (per slice) and
``images/<file>_restored.nii.gz``. Several report runs can be combined, e.g. the same weights with and without an
inference option. The slice is ``--slice``, or the slice of median PSNR of the first row among the slices of
``--scanner`` in ``datalist_shifted.json`` (all slices of ``--file`` without it). Panels: the low-dose input, each
row with its PSNR on the slice, the full-dose reference; window [-160, 240] HU.

Usage::

    python scripts/ct_restored_figure.py --file head_fine --scanner sharp \\
        --row "0.13.1=runs/ct_baselines/shifted/model0" \\
        --row "non-local means, oracle=runs/ct_baselines/shifted/oracle_nlm" --out figure.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from monai_rwkv.apps import baselines as lib
from monai_rwkv.apps import find_inputs, read_volume
from monai_rwkv.metrics import CT_EVAL_WINDOW

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct_baselines import SOFT_TISSUE  # noqa: E402 - the detail the baseline report's figures zoom into
from prepare_ct_shifted import slice_scanners  # noqa: E402 - the scanner of each shifted slice


def parse_row(spec: str) -> tuple[str, Path]:
    """``LABEL=FOLDER`` as ``(label, folder)``; the folder must hold a ``metrics.csv``."""
    label, sep, folder = spec.partition("=")
    if not sep or not label or not (Path(folder) / "metrics.csv").is_file():
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER with FOLDER/metrics.csv, got {spec!r}")
    return label, Path(folder)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/ct"), help="prepare_ct_shifted.py's data folder")
    p.add_argument("--split", default="test", help="the split of datalist_shifted.json (folder shifted/<split>)")
    p.add_argument("--file", required=True, help="the volume's name without .nii.gz, e.g. head_fine")
    p.add_argument("--scanner", default=None, help="choose among this scanner's slices")
    p.add_argument("--slice", type=int, default=None, help="the slice (default: median PSNR of the first row)")
    p.add_argument("--row", type=parse_row, action="append", required=True, metavar="LABEL=FOLDER")
    p.add_argument("--detail", type=int, default=96, help="side of the zoomed detail in pixels")
    p.add_argument("--out", type=Path, required=True, help="the PNG")
    return p


def slice_psnr(folder: Path, name: str) -> dict[int, float]:
    """PSNR of each slice of ``name`` in ``folder/metrics.csv``."""
    with open(folder / "metrics.csv") as f:
        return {int(r["slice"]): float(r["psnr_pred"]) for r in csv.DictReader(f) if r["file"] == name}


def choose_slice(args: argparse.Namespace) -> int:
    if args.slice is not None:
        return args.slice
    psnr = slice_psnr(args.row[0][1], args.file)
    keys = sorted(psnr)
    if args.scanner is not None:
        datalist = json.loads((args.data_dir / "datalist_shifted.json").read_text())
        scanners = slice_scanners(datalist, args.split, args.file)
        keys = [k for k in keys if scanners[k] == args.scanner]
    if not keys:
        raise SystemExit(f"error: no slice of {args.file} (scanner {args.scanner}) in {args.row[0][1]}/metrics.csv")
    ranked = sorted(keys, key=lambda k: psnr[k])
    return ranked[len(ranked) // 2]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    k = choose_slice(args)
    pairs = args.data_dir / "shifted" / args.split

    def show(path: Path):
        return lib.display_slice(read_volume(find_inputs(path)[0]), k)

    panels = [("Low-dose input", "", show(pairs / "low" / f"{args.file}.nii.gz"))]
    for label, folder in args.row:
        psnr = slice_psnr(folder, args.file)[k]
        panels.append((label, f"{psnr:.2f} dB", show(folder / "images" / f"{args.file}_restored.nii.gz")))
    panels.append(("Full dose", "", show(pairs / "full" / f"{args.file}.nii.gz")))
    window = lib.detail_window(panels[-1][2], args.detail, SOFT_TISSUE)
    zoom = max(2, panels[0][2].shape[1] // window[2])  # the detail about as wide as a panel
    lib.panel_figure(panels, CT_EVAL_WINDOW, window, args.out, zoom=zoom)
    print(f"{args.out}: {args.file} slice {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
