"""Recording the Triton launches a test makes, and compiling each for CUDA targets without a GPU."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

POINTER_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


class LaunchRecorder:
    """Stands in for a kernel in the module: records what each launch passes (argument types, constants, launch
    options) into ``launches``, then launches the kernel itself."""

    def __init__(self, name: str, kernel: Any, launches: list[dict[str, Any]]) -> None:
        self.name, self.kernel, self.launches = name, kernel, launches

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        def launch(*args: Any, **kwargs: Any) -> Any:
            self.launches.append(self._describe(args, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch

    def _describe(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        params = inspect.signature(self.kernel.fn).parameters
        options = {key: kwargs[key] for key in ("num_warps", "num_stages") if key in kwargs}
        bound = {**dict(zip(params, args)), **{key: kwargs[key] for key in kwargs if key not in options}}
        signature, constexprs = {}, {}
        for name, param in params.items():
            value = bound[name]
            if "constexpr" in str(param.annotation):
                signature[name], constexprs[name] = "constexpr", value
            elif isinstance(value, torch.Tensor):
                signature[name] = POINTER_TYPES[value.dtype]
            elif isinstance(value, bool):
                signature[name] = "i1"
            elif isinstance(value, int):
                signature[name] = "i32" if abs(value) < 2**31 else "i64"
            else:
                signature[name] = "fp32"
        return {"kernel": self.name, "signature": signature, "constexprs": constexprs, "options": options}


def assert_launches_compile(launches: list[dict[str, Any]], module: str, kernels: Iterable[str]) -> None:
    """Every distinct recorded launch of ``module`` compiles for sm_80 and sm_90 down to a cubin (with the ptxas that
    ships with triton, in a process of its own without the interpreter), and every kernel in ``kernels`` was
    launched."""
    unique = list({json.dumps(launch, sort_keys=True): launch for launch in launches}.values())
    assert {launch["kernel"] for launch in unique} == set(kernels)
    helper = Path(__file__).with_name("_compile_triton_kernels.py")
    done = subprocess.run(
        [sys.executable, str(helper), "--module", module, "--arch", "80", "90"],
        input=json.dumps(unique),
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "0"},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("bytes of cubin") == 2 * len(unique), done.stdout
