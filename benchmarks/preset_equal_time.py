#!/usr/bin/env python
"""Which Restore-RWKV width trains best in a fixed time? light, a width in between and the paper preset.

Each network is trained from scratch with the CT bundle's own ``configs/train.json`` (its data, wide low-dose
simulation, loss and cosine schedule; only ``network_def`` changes) for the same wall-clock training time on
this machine, then scored once on the validation pairs (by default the shifted validation set of
``scripts/prepare_ct_shifted.py``: other scanners and anatomy than training). Equal time, not equal
iterations: a short calibration run per network measures its seconds per iteration (data simulation
included, validation excluded), and the full run gets as many iterations as fit the budget, so that every
network finishes its learning-rate schedule.

Usage (after ``python scripts/prepare_ct_data.py && python scripts/prepare_ct_shifted.py``)::

    python benchmarks/preset_equal_time.py --minutes 15 --write benchmarks/RESULTS.md
    python benchmarks/preset_equal_time.py --minutes 120 --device cuda --set num_workers=12 \
        --write benchmarks/RESULTS.md  # a GPU (the simulation runs in data-loader processes on the CPU)

Outputs of each run stay in ``--out/<network>/`` (``model.pt``, ``train_log.csv``).
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import device_name, header_lines, write_section  # noqa: E402
from monai_rwkv.networks.nets import PRESETS, RestoreRWKV  # noqa: E402

SECTION = "## Light, medium and paper preset trained for equal time (benchmarks/preset_equal_time.py)"
BUNDLE = REPO / "bundles" / "restore_rwkv_ct_denoise"
# the width in between: twice light's width, depth between the two presets
NETWORKS = {
    "light": PRESETS["light"],
    "medium": {"dim": 32, "num_blocks": (2, 4, 4, 4), "num_refinement_blocks": 2, "hidden_rate": 4},
    "paper": PRESETS["paper"],
}
EPOCH = 25  # iterations per epoch of the full runs (the schedule is per iteration; epochs only group the log)


def bundle_run(out: Path, network: dict, overrides: dict, log: Path) -> list[dict]:
    """Run train.json through ``python -m monai.bundle run``; the rows of its train_log.csv."""
    configs = BUNDLE / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str([str(configs / "inference.json"), str(configs / "train.json")]),
        "--meta_file", str(configs / "metadata.json"),
        "--output_dir", str(out), "--resume", "False", "--progress", "False",
    ]  # fmt: skip
    settings = {f"network_def#{key}": value for key, value in network.items()}
    settings.update(overrides)
    for key, value in settings.items():
        cmd += [f"--{key}", repr(list(value) if isinstance(value, tuple) else value)]
    with open(log, "w") as stream:
        done = subprocess.run(cmd, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"training failed (exit {done.returncode}); see {log}")
    with open(out / "train_log.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def seconds_per_iteration(rows: list[dict]) -> float:
    """From a calibration log without validation: time per iteration after the first epoch (which holds the
    start-up: data caching, first calls)."""
    first, last = rows[0], rows[-1]
    return (float(last["seconds"]) - float(first["seconds"])) / (int(last["iteration"]) - int(first["iteration"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training time per network")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--dataset-dir", type=Path, default=REPO / "data" / "ct")
    parser.add_argument("--val-datalist", type=Path, default=REPO / "data" / "ct" / "datalist_shifted.json")
    parser.add_argument("--val-paired", type=int, default=1, help="1: the validation list holds low/full pairs")
    parser.add_argument("--calibration-iterations", type=int, default=10, help="per calibration epoch (3 epochs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "preset_equal_time")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more train.json overrides")
    args = parser.parse_args()
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        extra[key] = ast.literal_eval(value)
    device = torch.device(args.device)
    common = {
        "dataset_dir": str(args.dataset_dir),
        "val_datalist_file": str(args.val_datalist),
        "val_paired": bool(args.val_paired),
        "device": args.device,
        **extra,
    }
    load_before = os.getloadavg()
    rows = []
    for name in args.networks:
        network = NETWORKS[name]
        params = sum(p.numel() for p in RestoreRWKV(spatial_dims=2, **network).parameters())
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        calibration = bundle_run(
            out / "calibration",
            network,
            {**common, "max_epochs": 3, "epoch_length": args.calibration_iterations, "val_interval": 1000},
            out / "calibration.log",
        )
        per_it = seconds_per_iteration(calibration)
        epochs = max(1, round(args.minutes * 60 / per_it / EPOCH))
        print(f"{name}: {per_it:.2f} s per iteration -> {epochs * EPOCH} iterations", flush=True)
        start = time.monotonic()
        schedule = {"max_epochs": epochs, "epoch_length": EPOCH, "val_interval": epochs}
        log = bundle_run(out, network, {**common, **schedule}, out / "train.log")
        final = log[-1]
        train_s = float(log[-2]["seconds"]) + per_it * EPOCH if len(log) > 1 else per_it * EPOCH
        rows.append(
            f"| {name} | dim {network['dim']}, blocks {list(network['num_blocks'])}, "
            f"refinement {network['num_refinement_blocks']} | {params / 1e6:.2f} M | {per_it:.2f} | {epochs * EPOCH} "
            f"| {train_s / 60:.1f} | {float(final['train_loss']):.5f} | {float(final['val_psnr']):.2f} "
            f"| {float(final['val_ssim']):.4f} |"
        )
        print(rows[-1], f"(run {time.monotonic() - start:.0f} s)", flush=True)
    lines = header_lines(device, load_before, os.getloadavg()) + [
        "",
        f"Device: {device_name(device)}. Budget {args.minutes:g} min of training per network, from scratch through",
        "the CT bundle's train.json (its defaults: wide low-dose simulation, 4 patches of 96^2 per slice,",
        "L1 + 0.03 (1 - SSIM), lr 8e-4 cosine to 1e-6);",
        f"validation once at the end on {args.val_datalist.name} (window [-160, 240] HU)."
        + (f" Overrides: {', '.join(args.set)}." if args.set else ""),
        "",
        "| network | configuration | parameters (training form) | s / iteration | iterations | training min (est.)"
        " | last epoch's loss | val PSNR (dB) | val SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if args.write:
        write_section(args.write, SECTION, lines)


if __name__ == "__main__":
    main()
