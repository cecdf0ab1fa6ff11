"""TorchScript tracing and ONNX export (onnxruntime parity) of Bi-WKV and RestoreRWKV."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_rwkv.networks.nets import RestoreRWKV
from monai_rwkv.ops import bi_wkv

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}


class _BiWKV(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(channels) * 0.3)
        self.u = torch.nn.Parameter(torch.randn(channels) * 0.3)

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return bi_wkv(self.w, self.u, k, v)


def _trace(module: torch.nn.Module, *args: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, args)


def test_trace_bi_wkv(seed: int) -> None:
    op = _BiWKV(5)
    k, v = torch.randn(2, 40, 5) * 10, torch.randn(2, 40, 5)
    traced = _trace(op, k, v)
    k2, v2 = torch.randn(2, 40, 5) * 10, torch.randn(2, 40, 5)
    assert torch.allclose(traced(k2, v2), op(k2, v2), atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_trace_network(spatial_dims: int, seed: int) -> None:
    model = RestoreRWKV(spatial_dims=spatial_dims, **TINY).eval()
    x = torch.randn(1, 1, *([12, 20, 8][:spatial_dims]))
    with torch.no_grad():
        traced = _trace(model, x)
        x2 = torch.randn_like(x)
        assert torch.allclose(traced(x2), model(x2), atol=1e-5)


def test_onnx_export_matches_onnxruntime(tmp_path: Path, seed: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = RestoreRWKV(**TINY).eval()
    x = torch.randn(1, 1, 24, 16) * 3
    path = tmp_path / "restore_rwkv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=18, input_names=["image"], output_names=["pred"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn_like(x) * 3
    got = session.run(None, {"image": x2.numpy()})[0]
    with torch.no_grad():
        ref = model(x2).numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4
