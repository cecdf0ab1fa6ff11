"""reuse_freed_memory: a second forward on a large image stops page-faulting (measured in fresh processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from monai_rwkv.runtime import reuse_freed_memory
from monai_rwkv.networks.nets import RestoreRWKV
tuned = reuse_freed_memory() if sys.argv[1] == "tuned" else None
torch.set_num_threads(1)
net = RestoreRWKV(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1).eval()
x = torch.rand(1, 1, 1024, 1024)
with torch.inference_mode():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_forward_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=300)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_second_forward_reuses_memory_instead_of_faulting_it_in_again() -> None:
    _, default = _second_forward_faults("default")
    tuned, faults = _second_forward_faults("tuned")
    assert tuned == "True"
    assert default > 100_000  # glibc's defaults: the feature maps are mapped and zero-filled again
    assert faults < default / 10
