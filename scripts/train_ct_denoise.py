"""Train Restore-RWKV for low-dose CT denoising on real full-dose CT with simulated low-dose inputs.

Data: the NIfTI volume(s) and split written by scripts/prepare_ct_data.py. Low-dose inputs are simulated
in the projection domain (monai_rwkv.transforms.RandLowDoseCT): a few noise realisations per training
slice are made up front (simulation costs more than a light-model step on CPU), validation uses one
fixed realisation per slice. Intensities are scaled as in the paper (CT [-1024, 3072] HU -> [0, 1]).

Recipe: random square crops with flips/90-degree rotations, L1 loss, Adam, cosine decay to 1e-6,
validation PSNR in the paper's window every ``--val-every`` iterations, best state_dict saved atomically,
a CSV log, resumable from ``<out>.resume.pt``.

Example::

    python scripts/train_ct_denoise.py --data-dir data/ct --out runs/ct_light/model.pt --iterations 3000
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.data import sitk_load_image
from monai_rwkv.inference import CT_INTENSITY_RANGE, denormalize_intensity
from monai_rwkv.metrics import CT_EVAL_WINDOW, slice_metrics
from monai_rwkv.networks.nets import RestoreRWKV
from monai_rwkv.transforms import RandLowDoseCT


def to_unit(hu: torch.Tensor) -> torch.Tensor:
    """HU -> the network's [0, 1] scale of the bundle's fixed CT range, without clipping (training inputs)."""
    low, high = CT_INTENSITY_RANGE
    return (hu - low) / (high - low)


def load_split_slices(data_dir: Path, split: str) -> tuple[torch.Tensor, tuple[float, float]]:
    """All axial slices of ``split`` as (N, H, W) float32 HU, and their pixel spacing (dy, dx) in mm."""
    entry = json.loads((data_dir / "split.json").read_text())["splits"][split]
    image = sitk_load_image()(data_dir / entry["file"])  # (i, j, k): axial slices along the last axis
    spacing = (float(image.pixdim[1]), float(image.pixdim[0]))
    slices = torch.as_tensor(np.asarray(image), dtype=torch.float32).permute(2, 1, 0)  # (k, j, i)
    if len(slices) == 0:
        raise SystemExit(f"{data_dir / entry['file']}: split {split!r} is empty")
    return slices.contiguous(), spacing


def simulate(clean: torch.Tensor, spacing: tuple[float, float], dose: float, realisations: int, seed: int):
    """(N, H, W) HU -> (N, R, H, W) simulated low-dose HU."""
    sim = RandLowDoseCT(dose_fraction=dose, spacing=spacing)
    sim.set_random_state(seed)
    return torch.stack([torch.stack([sim(s) for _ in range(realisations)]) for s in clean])


def sample_batch(clean, noisy, batch: int, patch: int, gen: torch.Generator):
    """Random aligned crops with a random dihedral transform: two (B, 1, patch, patch) tensors in [0, 1]."""
    n, r, h, w = noisy.shape
    xs, ys = [], []
    for _ in range(batch):
        i, j = torch.randint(n, (1,), generator=gen).item(), torch.randint(r, (1,), generator=gen).item()
        top = torch.randint(h - patch + 1, (1,), generator=gen).item()
        left = torch.randint(w - patch + 1, (1,), generator=gen).item()
        x = noisy[i, j, top : top + patch, left : left + patch]
        y = clean[i, top : top + patch, left : left + patch]
        k = torch.randint(4, (1,), generator=gen).item()
        x, y = torch.rot90(x, k), torch.rot90(y, k)
        if torch.rand(1, generator=gen).item() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        xs.append(x)
        ys.append(y)
    return to_unit(torch.stack(xs)[:, None]), to_unit(torch.stack(ys)[:, None])


@torch.no_grad()
def validate(model, clean, noisy) -> dict[str, float]:
    model.eval()
    preds = [
        denormalize_intensity(model(to_unit(noisy[i : i + 1, :1]).contiguous(memory_format=torch.channels_last)))
        for i in range(len(clean))
    ]
    model.train()
    return mean_metrics(torch.cat(preds)[:, 0], clean)


def mean_metrics(pred: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """Mean windowed metrics over slices; slices whose windowed reference is constant have no PSNR and are skipped."""
    windowed = clean.clamp(*CT_EVAL_WINDOW)
    keep = windowed.amax(dim=(1, 2)) > windowed.amin(dim=(1, 2))
    metrics = slice_metrics(pred[keep], clean[keep], CT_EVAL_WINDOW)
    return {name: value.mean().item() for name, value in metrics.items()}


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/ct"))
    p.add_argument("--out", type=Path, required=True, help="best state_dict (plain, weights only)")
    p.add_argument("--preset", default="light")
    p.add_argument("--net", type=json.loads, default={}, help="JSON overrides of the preset, e.g. '{\"dim\": 12}'")
    p.add_argument("--init", type=Path, help="start from this state_dict (fine-tuning / warm restart)")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dose", type=float, default=0.25, help="dose fraction of the simulated scans")
    p.add_argument("--realisations", type=int, default=4, help="noise realisations per training slice")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    train_clean, spacing = load_split_slices(args.data_dir, "train")
    val_clean, _ = load_split_slices(args.data_dir, "val")
    cache = args.data_dir / f"simulated_dose{args.dose:g}_r{args.realisations}_seed{args.seed}.pt"
    if cache.exists():
        train_noisy, val_noisy = torch.load(cache, weights_only=True)
    else:
        train_noisy = simulate(train_clean, spacing, args.dose, args.realisations, args.seed)
        val_noisy = simulate(val_clean, spacing, args.dose, 1, args.seed + 1)
        atomic_save((train_noisy, val_noisy), cache)
    print(f"data: {len(train_clean)} train / {len(val_clean)} val slices, simulated in {time.time() - t0:.0f} s")

    model = RestoreRWKV.from_preset(args.preset, **args.net).to(memory_format=torch.channels_last)
    # Zero-initialised output conv: with the global residual the untrained network is the identity, so training
    # starts from the low-dose input instead of from random noise added to it.
    torch.nn.init.zeros_(model.output.weight)
    torch.nn.init.zeros_(model.output.bias)
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.iterations, eta_min=1e-6)
    gen = torch.Generator().manual_seed(args.seed)
    resume_path = args.out.with_name(args.out.name + ".resume.pt")
    log_path = args.out.with_name("train_log.csv")
    start, best = 0, -math.inf
    if resume_path.exists():
        state = torch.load(resume_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sched.T_max = args.iterations  # resuming with a larger --iterations extends the cosine schedule
        gen.set_state(state["generator"])
        start, best = state["iteration"], state["best_psnr"]
        print(f"resumed at iteration {start} (best val PSNR {best:.3f} dB)")
    else:
        baseline = mean_metrics(val_noisy[:, 0], val_clean)
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(["iteration", "seconds", "lr", "train_l1", "val_psnr", "val_ssim", "val_rmse"])
            csv.writer(f).writerow([0, 0, 0, "", *(f"{baseline[k]:.4f}" for k in ("psnr", "ssim", "rmse"))])

    running, t_start = 0.0, time.time()
    for it in range(start + 1, args.iterations + 1):
        x, y = sample_batch(train_clean, train_noisy, args.batch, args.patch, gen)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.l1_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if it % args.val_every == 0 or it == args.iterations:
            val = validate(model, val_clean, val_noisy)
            elapsed = time.time() - t_start
            with log_path.open("a", newline="") as f:
                row = [it, f"{elapsed:.0f}", f"{sched.get_last_lr()[0]:.2e}", f"{running / args.val_every:.5f}"]
                csv.writer(f).writerow(row + [f"{val[k]:.4f}" for k in ("psnr", "ssim", "rmse")])
            print(
                f"it {it}: loss {running / args.val_every:.5f} val PSNR {val['psnr']:.3f} SSIM {val['ssim']:.4f} "
                f"RMSE {val['rmse']:.2f} HU ({elapsed:.0f} s)",
                flush=True,
            )
            running = 0.0
            if val["psnr"] > best:
                best = val["psnr"]
                atomic_save(model.state_dict(), args.out)
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "iteration": it,
                    "best_psnr": best,
                },
                resume_path,
            )
    print(f"done: best validation PSNR {best:.3f} dB, state_dict at {args.out}")


if __name__ == "__main__":
    main()
