"""Mixed precision and CUDA graphs on a CUDA device: accuracy on a real CT slice and inference time.

Usage (from the repository root, on a machine with a CUDA GPU, after ``python scripts/prepare_ct_data.py``)::

    python benchmarks/amp_cuda.py --write benchmarks/RESULTS.md

Accuracy: each network restores real CT slices (data/ct/cranium_ct_test.nii.gz, scaled to [0, 1] with the CT
bundle's intensity window) in float32 and under ``torch.autocast`` with bfloat16 and float16; PSNR of the
autocast output against the float32 output with data range 1 (the window), over all slices. Networks: the CT
bundle's trained network (light preset, bundles/restore_rwkv_ct_denoise/models/model.pt) and the paper preset
(seeded random initialisation: no trained paper-preset weights ship). The bundle's whole restorer (sliding
window, its ``amp`` setting, float16) is compared the same way in HU, data range 4096 HU.

Time: median of ``triton.testing.do_bench`` at 512^2, batch 1, for float32, bf16 and fp16 autocast, and float32
replayed from a captured CUDA graph.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import header_lines, write_section  # noqa: E402
from monai_rwkv.networks.nets import RestoreRWKV  # noqa: E402

SECTION = "## Mixed precision and CUDA graphs, CUDA (benchmarks/amp_cuda.py)"
BUNDLE = REPO / "bundles" / "restore_rwkv_ct_denoise"
WINDOW = (-1024.0, 3072.0)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def psnr(test: torch.Tensor, ref: torch.Tensor, data_range: float) -> float:
    mse = torch.mean((test.double() - ref.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def real_slices(path: Path) -> torch.Tensor:
    """(D, 1, H, W) slices of the NIfTI volume, windowed to [0, 1]."""
    import nibabel

    vol = torch.as_tensor(nibabel.load(path).get_fdata(dtype="float32"))  # (i, j, k)
    x = ((vol - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).clamp(0, 1)
    return x.permute(2, 0, 1).unsqueeze(1).contiguous()


def networks(device: torch.device) -> dict[str, torch.nn.Module]:
    from monai_rwkv.apps.bundle import load_bundle_config

    parser = load_bundle_config(BUNDLE, "inference.json", {"device": str(device), "progress": False})
    torch.manual_seed(0)
    return {
        "CT bundle network (light, trained)": parser.get_parsed_content("network").eval(),
        "paper preset (seeded init)": RestoreRWKV.from_preset("paper").to(device).eval(),
    }


def autocast(dtype: Optional[torch.dtype]) -> Any:
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def accuracy_lines(nets: dict[str, torch.nn.Module], slices: torch.Tensor, device: torch.device) -> list[str]:
    lines = [
        f"Accuracy on {slices.shape[0]} real CT slices ({slices.shape[-2]} x {slices.shape[-1]}), PSNR of autocast "
        "against float32 (data range 1):",
        "",
        "| network | bf16 PSNR dB | fp16 PSNR dB | bf16 max abs diff | fp16 max abs diff |",
        "|---|---|---|---|---|",
    ]
    for name, net in nets.items():
        ref, outs = [], {k: [] for k in DTYPES}
        with torch.inference_mode():
            for x in slices.split(8):
                x = x.to(device)
                ref.append(net(x).float().cpu())
                for key, dtype in DTYPES.items():
                    with autocast(dtype):
                        outs[key].append(net(x).float().cpu())
        ref_t = torch.cat(ref)
        got = {k: torch.cat(v) for k, v in outs.items()}
        cells = [f"{psnr(got[k], ref_t, 1.0):.1f}" for k in DTYPES]
        cells += [f"{(got[k] - ref_t).abs().max().item():.2e}" for k in DTYPES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def restorer_lines(path: Path, device: torch.device) -> list[str]:
    import nibabel

    from monai_rwkv.apps.bundle import load_bundle_config

    volume = torch.as_tensor(nibabel.load(path).get_fdata(dtype="float32"))[None]  # (1, i, j, k) HU
    outs = {}
    for amp in (False, True):
        parser = load_bundle_config(BUNDLE, "inference.json", {"device": str(device), "progress": False, "amp": amp})
        outs[amp] = parser.get_parsed_content("restorer")(volume).float()
    diff = (outs[True] - outs[False]).abs().max().item()
    value = psnr(outs[True], outs[False], WINDOW[1] - WINDOW[0])
    return [
        f"- CT bundle restorer on the whole {tuple(volume.shape[1:])} test volume, amp=true (float16) against "
        f"amp=false: PSNR {value:.1f} dB (data range 4096 HU), largest difference {diff:.2f} HU",
    ]


def bench_ms(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=50, rep=300, return_mode="median"))


def graph_replay(net: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """A CUDA graph of one float32 forward on a static input; returns its replay."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            net(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_y = net(static_x)
    graph.replay()
    torch.cuda.synchronize()
    with torch.inference_mode():
        eager = net(static_x)
    if not torch.allclose(static_y, eager, rtol=1e-4, atol=1e-5):
        raise RuntimeError("graph replay differs from the eager forward")
    return graph.replay


def timing_lines(nets: dict[str, torch.nn.Module], size: int, device: torch.device) -> list[str]:
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size)).to(device)
    lines = [
        f"Inference time at {size}^2, batch 1 (ms, median):",
        "",
        "| network | float32 | bf16 autocast | fp16 autocast | float32 CUDA graph |",
        "|---|---|---|---|---|",
    ]
    for name, net in nets.items():
        cells = []
        for dtype in (None, *DTYPES.values()):

            def run(dtype: Optional[torch.dtype] = dtype, net: torch.nn.Module = net) -> None:
                with torch.inference_mode(), autocast(dtype):
                    net(x)

            cells.append(f"{bench_ms(run):.2f}")
        try:
            cells.append(f"{bench_ms(graph_replay(net, x)):.2f}")
        except Exception as err:  # report, do not hide: a capture can fail on a host sync
            cells.append(f"capture failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volume", type=Path, default=REPO / "data" / "ct" / "cranium_ct_test.nii.gz")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--write", type=Path, default=None)
    opts = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/amp_cuda.py needs a CUDA device")
    device = torch.device("cuda")
    load_before = os.getloadavg()
    nets = networks(device)
    body = accuracy_lines(nets, real_slices(opts.volume), device)
    body += ["", *restorer_lines(opts.volume, device), "", *timing_lines(nets, opts.size, device)]
    lines = header_lines(device, load_before, os.getloadavg()) + [f"- input: {opts.volume.relative_to(REPO)}", ""]
    lines += body
    print("\n".join(lines))
    if opts.write:
        write_section(opts.write, SECTION, lines)


if __name__ == "__main__":
    main()
