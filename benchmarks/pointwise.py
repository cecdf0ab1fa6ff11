"""Token-wise linear layers on CPU: ``nn.Linear`` on (B, T, C) tokens against a 1x1 convolution of the channels-last
image (what :func:`monai_rwkv.networks.blocks.rwkv.pointwise` runs in CPU inference).

Usage (from the repository root)::

    python benchmarks/pointwise.py
    python benchmarks/pointwise.py --write benchmarks/RESULTS.md

Shapes are those of the Restore-RWKV presets (``LEVELS``): (image side, C_in, C_out) for the spatial mix (C -> C)
and the channel mix (C -> 4C, 4C -> C) at each level. Every time is the fastest of ``--repeats`` runs after two
warm-ups, in one process with ``monai_rwkv.runtime.reuse_freed_memory()``; "pointwise takes" is what
:func:`~monai_rwkv.networks.blocks.rwkv.pointwise` runs for that product (``_convolution_pays``); "max diff" is the
largest absolute difference of the two results.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fastest_seconds, header_lines, write_section  # noqa: E402
from monai_rwkv.networks.blocks.rwkv import _convolution_pays  # noqa: E402
from monai_rwkv.runtime import reuse_freed_memory  # noqa: E402

SECTION = "## Token-wise linears on CPU (benchmarks/pointwise.py)"
# (image side, channels) of every level: the light preset on a 128^2 and a 512^2 input (decoder level 1 and the
# refinement run at 2 dim on the full grid) and the paper preset on a 256^2 input.
LEVELS = [
    *((128 >> i, 16 << i) for i in range(4)),
    (128, 32),
    *((512 >> i, 16 << i) for i in range(4)),
    (512, 32),
    *((256 >> i, 48 << i) for i in range(4)),
    (256, 96),
]
# Per level, the spatial mix (C -> C) and the channel mix (C -> 4C, 4C -> C).
SHAPES = [(side, c_in, c_out) for side, c in LEVELS for c_in, c_out in ((c, c), (c, 4 * c), (4 * c, c))]


def fastest_ms(fn: Callable[[], object], repeats: int) -> float:
    return fastest_seconds(fn, repeats, warmups=2) * 1e3


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--write", type=Path, help="write the results into this markdown file")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    reuse_freed_memory()
    load_before = os.getloadavg()
    columns = ("image", "C_in -> C_out", "tokens", "nn.Linear ms", "1x1 conv ms", "linear / conv", "pointwise takes")
    lines = ["| " + " | ".join((*columns, "max diff")) + " |", "|---" * (len(columns) + 1) + "|"]
    with torch.inference_mode():
        for side, c_in, c_out in SHAPES:
            image = torch.randn(1, c_in, side, side).contiguous(memory_format=torch.channels_last)
            tokens = image.flatten(2).transpose(1, 2)  # (1, T, C_in), a contiguous view
            weight = torch.randn(c_out, c_in) / c_in**0.5
            weight4 = weight[:, :, None, None]
            t_linear = fastest_ms(lambda: F.linear(tokens, weight), opts.repeats)  # noqa: B023
            t_conv = fastest_ms(lambda: F.conv2d(image, weight4), opts.repeats)  # noqa: B023
            diff = (F.linear(tokens, weight) - F.conv2d(image, weight4).flatten(2).transpose(1, 2)).abs().max().item()
            lines.append(
                f"| {side}^2 | {c_in} -> {c_out} | {side * side:,} | {t_linear:.2f} | {t_conv:.2f} "
                f"| {t_linear / t_conv:.2f} | {'conv' if _convolution_pays(side * side, c_in, c_out) else 'linear'} "
                f"| {diff:.1e} |"
            )
            print(lines[-1], flush=True)
    report = [*header_lines(torch.device("cpu"), load_before, os.getloadavg()), "", *lines]
    print("\n".join(report))
    if opts.write:
        write_section(opts.write, SECTION, report)


if __name__ == "__main__":
    main()
