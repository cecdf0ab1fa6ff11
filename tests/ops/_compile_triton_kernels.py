"""Compiles Triton kernel launches for CUDA targets without a GPU (run by tests/ops/test_triton_wkv.py).

Reads a JSON list of launches, ``{"kernel", "signature", "constexprs", "options"}``, on stdin and compiles each with
``triton.compile`` for every ``--arch`` (CUDA compute capability, e.g. 90) down to a cubin with the ptxas that ships
with triton. Needs ``TRITON_INTERPRET=0`` (the kernels must be JIT functions, not interpreted ones). Prints one line per
compiled variant; exits non-zero naming the first launch that does not compile.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--module", default="monai_rwkv.ops._triton_wkv")
    p.add_argument("--arch", type=int, nargs="+", default=[90])
    opts = p.parse_args()
    kernels = importlib.import_module(opts.module)
    for launch in json.load(sys.stdin):
        fn = getattr(kernels, launch["kernel"])
        for arch in opts.arch:
            src = ASTSource(fn=fn, signature=launch["signature"], constexprs=launch["constexprs"])
            try:
                compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=launch["options"])
            except Exception as err:  # report which launch failed, then the compiler's own message
                print(f"sm_{arch}: {launch['kernel']} {launch['constexprs']} does not compile: {err}", file=sys.stderr)
                return 1
            print(f"sm_{arch}: {launch['kernel']} {launch['constexprs']}: {len(compiled.asm['cubin'])} bytes of cubin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
