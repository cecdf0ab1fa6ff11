"""
The torchvision shim of .venv-monailabel (monai_rwkv/monailabel_app/torchvision_shim.py) is needed and harmless:
without it ``import torchvision`` fails there; with it torchvision imports, what MONAI Label uses works, the ops
torchvision could not load fail with torchvision's own error, and nothing is registered in their place.
"""

from __future__ import annotations

import json
import subprocess

from tests.monailabel.test_server import ML_PYTHON, NEEDS_ML_ENV

pytestmark = NEEDS_ML_ENV

WITH_SHIM = """
import json, torch, torchvision, torchvision.extension
from torchvision.utils import make_grid, save_image
from monai_rwkv.monailabel_app import torchvision_shim
grid = make_grid(torch.rand(4, 3, 8, 8), nrow=2)
try:
    torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)
    nms = "ran"
except RuntimeError as e:
    nms = str(e)
print(json.dumps({
    "torch": torch.__version__, "torchvision": torchvision.__version__,
    "has_ops": torchvision.extension._has_ops(), "skipped": torchvision_shim.SKIPPED,
    "grid": list(grid.shape), "nms": nms, "nms_defined": hasattr(torch.ops.torchvision, "nms"),
}))
"""

WITHOUT_SHIM = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "monai_rwkv.monailabel_app.torchvision_shim"]
import torchvision
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ML_PYTHON), "-c", code], capture_output=True, text=True, timeout=300)


def test_the_shim_is_needed() -> None:
    result = _run(WITHOUT_SHIM)
    assert result.returncode != 0
    assert "operator torchvision::nms does not exist" in result.stderr


def test_the_shim_only_skips_the_missing_ops_registrations() -> None:
    result = _run(WITH_SHIM)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch"].startswith("2.13.0") and report["torchvision"].startswith("0.28.0")
    assert report["has_ops"] is False  # the CUDA build's C++ ops cannot load against the CPU torch
    assert report["skipped"] == ["torchvision::nms", "torchvision::qnms"]
    assert report["grid"] == [3, 22, 22]  # torchvision.utils, what MONAI Label imports, works (2 x 8 + 3 x 2)
    assert "Couldn't load custom C++ ops" in report["nms"]  # torchvision's own error, as without a shim
    assert report["nms_defined"] is False  # nothing registered in their place
