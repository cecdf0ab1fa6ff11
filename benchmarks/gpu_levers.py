"""The GPU issue's levers measured in one run: precision, torch.compile, whole slices and batching.

Usage (from the repository root, on a machine with a CUDA GPU; ``data/ct`` from scripts/prepare_ct_data.py makes
the volume real CT, else a phantom)::

    python benchmarks/gpu_levers.py --out cuda_results --deadline 340 --write benchmarks/RESULTS.md
    python benchmarks/gpu_levers.py --device cpu --size 64 --slices 4 --batches 2 --out /tmp/levers   # dry run

``--compile`` adds the torch.compile cells after every eager cell; on an H200 (16 CPU cores) compiling the light
network for one whole-slice batch did not finish in about 190 s, so they are opt-in.

Three parts, each row printed and appended to ``OUT/levers.md`` as soon as it is measured (a run stopped at its
limit keeps what it finished); cells that would start after ``--deadline`` seconds are skipped, and torch.compile
cells come last in each part:

1. **CT volume** (the CT bundle's trained light network and settings): a ``size x size x slices`` HU volume in host
   memory to the restored HU volume in host memory. Rows: the bundle's own pipeline
   (:class:`~monai_rwkv.inference.SliceWiseRestorer`: 128^2 patches, overlap 0.25, Gaussian blending) in float32
   and with float16 autocast; the same restorer with whole slices (ROI = the slice, overlap 0); and a direct
   whole-slice loop (pinned host buffers, ``batch`` slices per forward) in each precision: float32, bfloat16 /
   float16 autocast, float16 / bfloat16 weights, and torch.compile of those. On CUDA, rows marked "+ Triton LN"
   run with the Triton LayerNorm switched on (:data:`monai_rwkv.ops.norm.TRITON_LAYER_NORM`), "+ in-place scans"
   also with the Bi-WKV's column scans in place (:data:`monai_rwkv.ops.wkv.TRITON_IN_PLACE_SCANS`). Accuracy:
   PSNR over the HU range (4096 HU) and the largest difference against the float32 eager result of the same
   tiling.
2. **Paper preset and MONAI's Restormer, one slice**: ms per ``size^2`` slice at batch 1 and 8, float32 and
   bfloat16 autocast, eager and compiled (``triton.testing.do_bench`` medians on CUDA).
3. **Training step** (batch 8 of 128^2, forward, L1, backward, AdamW): paper, light and Restormer, float32 and
   bfloat16 autocast, eager and compiled.

On CUDA, ``OUT/profile.txt`` lists the CUDA kernels of the fastest eager whole-slice loop by total time and
``OUT/profile_train.txt`` those of one paper-preset training step.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import header_lines, write_section  # noqa: E402
from benchmarks.network import build, ct_volume, sync  # noqa: E402
from monai_rwkv.inference import SliceWiseRestorer, load_network  # noqa: E402
from monai_rwkv.networks.nets import RestoreRWKV  # noqa: E402
from monai_rwkv.ops import norm, wkv  # noqa: E402

SECTION = "## GPU levers: precision, compilation, whole slices (benchmarks/gpu_levers.py)"
BUNDLE = REPO / "bundles" / "restore_rwkv_ct_denoise"
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Report:
    """Tables filled cell by cell: each row is printed when measured and the whole report is rewritten to ``path``
    (a run stopped at its limit keeps what it finished); a deadline for starting new cells."""

    def __init__(self, path: Optional[Path], deadline_s: float) -> None:
        self.path = path
        self.tables: dict[str, tuple[list[str], list[str]]] = {}
        self.notes: list[str] = []
        self.end = time.monotonic() + deadline_s
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def table(self, key: str, title: str, columns: list[str]) -> None:
        if key not in self.tables:
            head = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            self.tables[key] = (head, [])

    def row(self, key: str, *cells: object) -> None:
        line = "| " + " | ".join(str(c) for c in cells) + " |"
        print(line, flush=True)
        self.tables[key][1].append(line)
        self._save()

    def note(self, line: str) -> None:
        print(line, flush=True)
        self.notes.append(line)
        self._save()

    @property
    def lines(self) -> list[str]:
        out: list[str] = []
        for head, rows in self.tables.values():
            out += [*head, *rows, ""]
        return out + self.notes

    def _save(self) -> None:
        if self.path is not None:
            self.path.write_text("\n".join(self.lines) + "\n")

    def left(self) -> float:
        return self.end - time.monotonic()


def light_network(device: torch.device) -> torch.nn.Module:
    """The CT bundle's network (its inference.json ``network_def``) with its trained weights."""
    config = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    kwargs = {k: v for k, v in config["network_def"].items() if k != "_target_"}
    return load_network(RestoreRWKV(**kwargs), BUNDLE / "models" / "model.pt", device)


def hu_psnr(test: torch.Tensor, ref: torch.Tensor, data_range: float = 4096.0) -> tuple[float, float]:
    """PSNR over ``data_range`` and the largest absolute difference."""
    diff = test.double() - ref.double()
    mse = torch.mean(diff**2).item()
    value = math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
    return value, diff.abs().max().item()


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def compiled(net: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.compile(net, dynamic=False)


class WholeSlices:
    """A direct whole-slice restorer: a (1, i, j, k) HU volume in host memory -> restored, in host memory.

    Slices are shown to the network as (rows, columns) = (j, i), as the bundle does; ``batch`` slices per forward;
    pinned host buffers on CUDA so that copies overlap the queue.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        batch: int,
        device: torch.device,
        amp: Optional[torch.dtype] = None,
        input_dtype: torch.dtype = torch.float32,
        window: tuple[float, float] = (-1024.0, 3072.0),
    ) -> None:
        self.forward, self.batch, self.device = forward, batch, device
        self.amp, self.input_dtype, self.window = amp, input_dtype, window

    @torch.inference_mode()
    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        low, high = self.window
        pin = self.device.type == "cuda"
        slices = volume[0].permute(2, 1, 0)  # (k, j, i): slice, rows, columns
        src = torch.empty(slices.shape, pin_memory=pin).copy_(slices)
        dst = torch.empty(slices.shape, pin_memory=pin)
        for s in range(0, src.shape[0], self.batch):
            x = src[s : s + self.batch].to(self.device, non_blocking=True)[:, None]
            x = torch.nan_to_num((x - low) / (high - low), nan=0.0).clamp_(0.0, 1.0).to(self.input_dtype)
            with autocast(self.device, self.amp):
                y = self.forward(x.contiguous(memory_format=torch.channels_last))
            dst[s : s + self.batch].copy_(
                y[:, 0].float().clamp_(0.0, 1.0).mul_(high - low).add_(low), non_blocking=True
            )
        sync(self.device)
        return dst.permute(2, 1, 0)[None]


#: Suffixes of precision labels for the CUDA fast paths that are switched off by default: the Triton LayerNorm
#: (:data:`monai_rwkv.ops.norm.TRITON_LAYER_NORM`), and with it the Bi-WKV's column scans in place
#: (:data:`monai_rwkv.ops.wkv.TRITON_IN_PLACE_SCANS`).
FAST_PATHS = {" + Triton LN": (True, False), " + Triton LN + in-place scans": (True, True)}


def base_label(label: str) -> str:
    """``label`` without its fast-path suffix."""
    for suffix in FAST_PATHS:
        label = label.removesuffix(suffix)
    return label


@contextmanager
def fast_paths(label: str) -> Iterator[None]:
    """The switches of ``label``'s fast-path suffix (none: both off) set inside."""
    suffix = next((s for s in sorted(FAST_PATHS, key=len, reverse=True) if label.endswith(s)), None)
    layer_norm, in_place = FAST_PATHS.get(suffix, (False, False))
    before = norm.TRITON_LAYER_NORM, wkv.TRITON_IN_PLACE_SCANS
    norm.TRITON_LAYER_NORM, wkv.TRITON_IN_PLACE_SCANS = layer_norm, in_place
    try:
        yield
    finally:
        norm.TRITON_LAYER_NORM, wkv.TRITON_IN_PLACE_SCANS = before


def with_fast_paths(fn: Callable[[torch.Tensor], torch.Tensor], label: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` with the switches of ``label`` set while it runs."""

    def run(volume: torch.Tensor) -> torch.Tensor:
        with fast_paths(label):
            return fn(volume)

    return run


def time_runs(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float, Any]:
    """(seconds of the first call, median seconds of ``repeats`` later calls, the last result)."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def _failure(err: Exception) -> str:
    traceback.print_exc()
    return f"failed: {type(err).__name__}: {' '.join(str(err).split())[:120]}"


class VolumePart:
    """Part 1: the CT volume, host memory to host memory (see the module docstring)."""

    key = "volume"
    columns = [
        "tiling",
        "precision",
        "batch",
        "compiled",
        "first call s",
        "s per volume",
        "slices/s",
        "PSNR vs float32 eager (dB, 4096 HU)",
        "largest diff HU",
    ]

    def __init__(self, opts: argparse.Namespace, device: torch.device, rep: Report) -> None:
        self.opts, self.device, self.rep = opts, device, rep
        volume = ct_volume(opts.slices)
        if opts.size != 512:
            volume = (
                torch.nn.functional.interpolate(volume.permute(3, 0, 1, 2), size=(opts.size,) * 2, mode="bilinear")
                .permute(1, 2, 3, 0)
                .contiguous()
            )
        self.volume = volume
        real = (REPO / "data" / "ct" / "cranium_ct_test.nii.gz").is_file()
        source = "real head CT, upsampled" if real else "phantom"
        rep.table(
            self.key,
            f"### CT volume {opts.size} x {opts.size} x {volume.shape[-1]} ({source}), host memory "
            "to host memory, the CT bundle's network and weights",
            self.columns,
        )
        self.net = light_network(device)
        self.refs: dict[str, torch.Tensor] = {}
        self.nets = {"fp32": (self.net, None, torch.float32)}
        self.triton_norm_rows = ("fp32", "fp16 autocast", "fp16 weights") if device.type == "cuda" else ()
        for key, dtype in HALF.items():
            self.nets[f"{key} autocast"] = (self.net, dtype, torch.float32)
        if device.type == "cuda":
            for key, dtype in HALF.items():
                self.nets[f"{key} weights"] = (copy.deepcopy(self.net).to(dtype), None, dtype)

    def measure(
        self,
        tiling: str,
        precision: str,
        batch: int,
        is_compiled: bool,
        fn: Callable[[torch.Tensor], torch.Tensor],
        cost_s: float,
    ) -> Optional[float]:
        """One row; the first row of a tiling is that tiling's reference. Returns slices/s."""
        cells = (tiling, precision, batch, is_compiled)
        if self.rep.left() < cost_s:
            self.rep.row(self.key, *cells, f"skipped: {self.rep.left():.0f} s left", "", "", "", "")
            return None
        try:
            first, seconds, out = time_runs(lambda: fn(self.volume), self.device, self.opts.repeats)
        except Exception as err:  # one failing lever must not hide the others
            self.rep.row(self.key, *cells, _failure(err), "", "", "", "")
            return None
        n = self.volume.shape[-1]
        value, diff = hu_psnr(out.float(), self.refs.setdefault(tiling, out.float()))
        self.rep.row(
            self.key, *cells, f"{first:.2f}", f"{seconds:.3f}", f"{n / seconds:.1f}", f"{value:.1f}", f"{diff:.2f}"
        )
        return n / seconds

    def eager(self) -> None:
        opts, device, size = self.opts, self.device, self.opts.size
        patch_batch = 32 if device.type == "cuda" else 4
        for amp in (False, True) if device.type == "cuda" else (False,):
            restorer = SliceWiseRestorer(
                self.net,
                roi_size=(128, 128),
                overlap=0.25,
                sw_batch_size=patch_batch,
                device=device,
                amp=amp,
                progress=False,
            )
            precision = "fp16 autocast" if amp else "fp32"
            self.measure("patches 128, overlap 0.25 (bundle)", precision, patch_batch, False, restorer, 30)
            for suffix in FAST_PATHS if device.type == "cuda" and norm.kernel_available() else ():
                label = precision + suffix
                tiling = "patches 128, overlap 0.25 (bundle)"
                self.measure(tiling, label, patch_batch, False, with_fast_paths(restorer, label), 30)
        restorer = SliceWiseRestorer(
            self.net,
            roi_size=(size, size),
            overlap=0.0,
            sw_batch_size=opts.batches[0],
            device=device,
            amp=False,
            progress=False,
        )
        self.measure("whole slice via SliceWiseRestorer", "fp32", opts.batches[0], False, restorer, 30)
        best: tuple[float, str] = (0.0, "fp32")
        for batch in opts.batches:  # float32 first: the reference of the direct tiling
            for name, (module, amp, input_dtype) in self.nets.items():
                restore = WholeSlices(module, batch, device, amp, input_dtype)
                rate = self.measure("whole slice, direct", name, batch, False, restore, 20)
                if rate and rate > best[0]:
                    best = (rate, name)
                for suffix in FAST_PATHS if name in self.triton_norm_rows and norm.kernel_available() else ():
                    label = name + suffix
                    rate = self.measure("whole slice, direct", label, batch, False, with_fast_paths(restore, label), 20)
                    if rate and rate > best[0]:
                        best = (rate, label)
        if opts.profile is not None and device.type == "cuda" and self.rep.left() > 20:
            module, amp, input_dtype = self.nets[base_label(best[1])]
            restore = WholeSlices(module, opts.batches[0], device, amp, input_dtype)
            try:
                profile(with_fast_paths(restore, best[1]), self.volume, opts.profile)
                self.rep.note(
                    f"- {opts.profile.name}: CUDA kernels of the direct whole-slice loop ({best[1]}, batch "
                    f"{opts.batches[0]}) by total time"
                )
            except Exception as err:
                self.rep.note(f"- profile {_failure(err)}")

    def compiled(self) -> None:
        batch = self.opts.batches[0]
        for name in self.opts.compile_modes:
            if name not in self.nets:
                continue
            module, amp, input_dtype = self.nets[name]
            self.measure(
                "whole slice, direct",
                name,
                batch,
                True,
                WholeSlices(compiled(module), batch, self.device, amp, input_dtype),
                120,
            )


def profile(restore: Callable[[torch.Tensor], torch.Tensor], volume: torch.Tensor, path: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    restore(volume)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        restore(volume)
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=80))


class SlicePart:
    """Part 2: one slice through the paper preset and MONAI's Restormer."""

    key = "slice"

    def __init__(self, opts: argparse.Namespace, device: torch.device, rep: Report) -> None:
        self.opts, self.device, self.rep = opts, device, rep
        rep.table(
            self.key,
            f"### One {opts.size}^2 slice: paper preset against MONAI's Restormer (ms per slice, median)",
            [
                "batch",
                "precision",
                "compiled",
                "restore-rwkv-paper",
                "restormer",
                "paper / restormer",
                "paper first call s",
            ],
        )
        self.models = {name: build(name).eval().to(device) for name in ("restore-rwkv-paper", "restormer")}
        self.triton_norm_labels = _triton_norm_labels(device)

    def cell(self, batch: int, precision: str, is_compiled: bool) -> None:
        if self.rep.left() < (120 if is_compiled else 15):
            self.rep.row(self.key, batch, precision, is_compiled, f"skipped: {self.rep.left():.0f} s left", "", "", "")
            return
        device = self.device
        x = torch.rand(batch, 1, self.opts.size, self.opts.size, generator=torch.Generator().manual_seed(batch))
        x = x.to(device)
        dtype = torch.bfloat16 if precision.startswith("bf16") else None
        ms: dict[str, Any] = {}
        first = 0.0
        for name, model in self.models.items():
            forward = compiled(model) if is_compiled else model

            def run(forward: Callable = forward) -> None:
                with torch.inference_mode(), autocast(device, dtype), fast_paths(precision):
                    forward(x)

            try:
                start = time.perf_counter()
                run()
                sync(device)
                if name == "restore-rwkv-paper":
                    first = time.perf_counter() - start
                ms[name] = bench_ms(run, device) / batch
            except Exception as err:
                ms[name] = _failure(err)
        paper, restormer = ms["restore-rwkv-paper"], ms["restormer"]
        ratio = f"{paper / restormer:.2f}" if isinstance(paper, float) and isinstance(restormer, float) else "-"
        self.rep.row(self.key, batch, precision, is_compiled, _ms(paper), _ms(restormer), ratio, f"{first:.1f}")

    def eager(self) -> None:
        for batch in (1, 8):
            for precision in ("fp32", "bf16 autocast", *self.triton_norm_labels):
                self.cell(batch, precision, False)

    def compiled(self) -> None:
        for precision in ("bf16 autocast", "fp32"):
            self.cell(1, precision, True)


def _triton_norm_labels(device: torch.device) -> tuple[str, ...]:
    """The precisions also timed with the Triton LayerNorm (CUDA only)."""
    if device.type != "cuda" or not norm.kernel_available():
        return ()
    return tuple(precision + suffix for suffix in FAST_PATHS for precision in ("fp32", "bf16 autocast"))


def _ms(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def bench_ms(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))
    return time_runs(fn, device, 3)[1] * 1000


class TrainPart:
    """Part 3: one training step per model, precision and compilation."""

    key = "train"

    def __init__(self, opts: argparse.Namespace, device: torch.device, rep: Report) -> None:
        self.opts, self.device, self.rep = opts, device, rep
        rep.table(
            self.key,
            f"### Training step, batch {opts.train_batch} x 1 x {opts.train_patch}^2 (forward, L1, "
            "backward, AdamW; median)",
            ["model", "precision", "compiled", "ms per step", "patches/s", "first step s", "peak MiB"],
        )

    @property
    def triton_norm_labels(self) -> tuple[str, ...]:
        return _triton_norm_labels(self.device)

    def cell(self, name: str, precision: str, is_compiled: bool, profile_to: Optional[Path] = None) -> None:
        """One row; with ``profile_to``, no row: the CUDA kernels of one step after the warm-up, to that file."""
        opts, device = self.opts, self.device
        if self.rep.left() < (120 if is_compiled else 20):
            self.rep.row(self.key, name, precision, is_compiled, f"skipped: {self.rep.left():.0f} s left", "", "", "")
            return
        torch.manual_seed(0)
        net = build(name).train().to(device)
        forward = compiled(net) if is_compiled else net
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        shape = (opts.train_batch, 1, opts.train_patch, opts.train_patch)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(shape, generator=g).to(device), torch.rand(shape, generator=g).to(device)
        dtype = torch.bfloat16 if precision.startswith("bf16") else None

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast(device, dtype), fast_paths(precision):
                loss = torch.nn.functional.l1_loss(forward(x).float(), y)
            loss.backward()
            opt.step()

        if profile_to is not None:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            time_runs(step, device, 1)
            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                step()
                sync(device)
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=50, max_name_column_width=80)
            profile_to.write_text(table)
            return
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            first, seconds, _ = time_runs(step, device, opts.repeats + 2)
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "-"
            self.rep.row(
                self.key,
                name,
                precision,
                is_compiled,
                f"{seconds * 1000:.1f}",
                f"{opts.train_batch / seconds:.1f}",
                f"{first:.1f}",
                peak,
            )
        except Exception as err:
            self.rep.row(self.key, name, precision, is_compiled, _failure(err), "", "", "")

    def eager(self) -> None:
        for name in ("restore-rwkv-paper", "restormer", "restore-rwkv-light"):
            for precision in ("fp32", "bf16 autocast"):
                self.cell(name, precision, False)
        for name in ("restore-rwkv-paper", "restore-rwkv-light"):
            for precision in self.triton_norm_labels:
                self.cell(name, precision, False)
        path = self.opts.train_profile
        if path is not None and self.device.type == "cuda" and self.rep.left() > 30:
            try:
                self.cell("restore-rwkv-paper", "fp32", False, profile_to=path)
                self.rep.note(f"- {path.name}: CUDA kernels of one paper-preset training step (fp32) by total time")
            except Exception as err:
                self.rep.note(f"- training profile {_failure(err)}")

    def compiled(self) -> None:
        for name in ("restore-rwkv-paper", "restormer", "restore-rwkv-light"):
            self.cell(name, "bf16 autocast", True)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=512, help="slice size (the volume is size x size x slices)")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="slices per forward, direct loop")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--compile-modes",
        nargs="*",
        default=["fp16 weights", "bf16 autocast", "fp32"],
        help="precisions of the direct loop also timed under torch.compile (first batch size)",
    )
    p.add_argument(
        "--compile", action="store_true", help="also the torch.compile cells (after every eager cell; minutes each)"
    )
    p.add_argument("--parts", nargs="+", default=["volume", "slice", "train"], choices=["volume", "slice", "train"])
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-patch", type=int, default=128)
    p.add_argument("--deadline", type=float, default=420.0, help="seconds after which no new cell starts")
    p.add_argument("--out", type=Path, default=None, help="folder for levers.md and the profile")
    p.add_argument("--write", type=Path, default=None, help="RESULTS.md to write the section into")
    opts = p.parse_args(argv)
    opts.profile = opts.out / "profile.txt" if opts.out is not None else None
    opts.train_profile = opts.out / "profile_train.txt" if opts.out is not None else None
    return opts


def main(argv: Optional[list[str]] = None) -> None:
    opts = parse_args(argv)
    device = torch.device(opts.device)
    load_before = os.getloadavg()
    rep = Report(opts.out / "levers.md" if opts.out is not None else None, opts.deadline)
    classes = {"volume": VolumePart, "slice": SlicePart, "train": TrainPart}
    parts = [classes[name](opts, device, rep) for name in opts.parts]
    for part in parts:  # every eager cell first: compilation takes minutes per cell
        part.eager()
    if opts.compile:
        for part in parts:
            part.compiled()
    if opts.write:
        write_section(opts.write, SECTION, header_lines(device, load_before, os.getloadavg()) + [""] + rep.lines)


if __name__ == "__main__":
    main()
