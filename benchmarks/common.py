"""Shared pieces of the benchmark scripts: best-of-n timing, machine facts for the report header and writing a
RESULTS.md section."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch


def fastest_seconds(fn: Callable[[], object], repeats: int, warmups: int = 1) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (wall clock, seconds) after ``warmups`` untimed ones."""
    for _ in range(warmups):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform.processor())."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name(device: torch.device) -> str:
    """``"<CPU model>, N logical CPUs"`` or the CUDA card's name."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs visible"


def command_line() -> str:
    """The command that is running, as one would type it from the repository root."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def header_lines(device: torch.device, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> list[str]:
    """Date, machine, versions, threads, load and command: the first lines of every results section."""
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = "not installed"
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {device_name(device)}; {platform.platform()}",
        f"- torch {torch.__version__}, numba {numba_version}, Python {platform.python_version()}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()}",
        "- load average (1/5/15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
            *load_before, *load_after
        ),
        f"- command: `{command_line()}`",
    ]


def write_section(path: Path, section: str, lines: list[str]) -> None:
    """Replace the section headed ``section`` in ``path`` (up to the next level-2 heading) or append it."""
    body = "\n".join([section, ""] + lines) + "\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


Cell = dict[str, Optional[float]]


def sweep_grid(
    opts: Any,
    cell: Callable[[int, int, int, Any], Cell],
    table: Callable[[int, int, dict[int, Cell]], list[str]],
    max_elements: Optional[int] = None,
) -> list[str]:
    """Run ``cell(batch, seq_len, channels, opts)`` over ``opts.channels`` x ``opts.batch`` x the powers of four
    from ``opts.min_tokens`` to ``opts.max_tokens`` (skipping cells over ``max_elements`` elements), printing
    each cell as it finishes; returns one ``table(batch, channels, cells)`` per (channels, batch)."""
    lengths = []
    seq_len = opts.min_tokens
    while seq_len <= opts.max_tokens:
        lengths.append(seq_len)
        seq_len *= 4
    lines: list[str] = []
    for channels in opts.channels:
        for batch in opts.batch:
            cells = {}
            for seq_len in lengths:
                if max_elements is not None and batch * seq_len * channels > max_elements:
                    continue
                cells[seq_len] = cell(batch, seq_len, channels, opts)
                timings = ", ".join(f"{k}={'-' if x is None else f'{x:.4g}'}" for k, x in cells[seq_len].items())
                print(f"B={batch} C={channels} T={seq_len}: {timings}", flush=True)
            lines += table(batch, channels, cells) + [""]
    return lines
