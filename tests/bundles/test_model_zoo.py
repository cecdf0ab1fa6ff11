"""
Model-zoo tooling on every bundle, through the real ``python -m monai.bundle`` commands: ``verify_net_in_out``,
``ckpt_export`` (traced: the Bi-WKV recurrences are not scriptable) and ``onnx_export``, each export reloaded
(TorchScript, onnxruntime) and compared with the eager network. Exported files live in a temporary folder only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_rwkv.apps.bundle import load_bundle_config
from tests.bundles.test_pipeline import BUNDLES, TINY
from tests.bundles.utils import make_tiny_bundle

#: ``--network_def#...`` overrides of the tiny network, for the command line.
TINY_NET_ARGS = [
    arg for key, value in TINY.items() if key.startswith("network_def") for arg in (f"--{key}", str(value))
]
#: a batch of one 64 x 64 patch; its channels are the network's (metadata ``num_channels``: image and derived)
PATCH = (64, 64)


def _bundle_command(bundle: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    configs = bundle / "configs"
    base = [sys.executable, "-m", "monai.bundle", command, "network_def", "--bundle_root", str(bundle)]
    base += ["--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json")]
    result = subprocess.run([*base, *args, *TINY_NET_ARGS], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


#: the CT bundle in the default run; the others (the same network code, other configs) with ``-m slow``.
ZOO_BUNDLES = [
    pytest.param(b, marks=() if b.name == "restore_rwkv_ct_denoise" else pytest.mark.slow, id=b.name) for b in BUNDLES
]


@pytest.mark.parametrize("bundle_dir", ZOO_BUNDLES)
def test_verify_export_and_reload(bundle_dir: Path, tmp_path: Path, seed: int) -> None:
    bundle = make_tiny_bundle(tmp_path / bundle_dir.name, bundle=bundle_dir)
    weights = bundle / "models" / "model.pt"
    result = _bundle_command(bundle, "verify_net_in_out")
    assert "verified with no error" in result.stdout + result.stderr
    ts, onnx_file = tmp_path / "export" / "model.ts", tmp_path / "export" / "model.onnx"
    ts.parent.mkdir()
    channels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]
    shape_of_input = (1, int(channels["image"]["num_channels"]), *PATCH)
    shape = str(list(shape_of_input))
    trace = ("--use_trace", "True", "--input_shape", shape)
    _bundle_command(bundle, "ckpt_export", "--filepath", str(ts), "--ckpt_file", str(weights), *trace)
    _bundle_command(bundle, "onnx_export", "--filepath", str(onnx_file), "--ckpt_file", str(weights), *trace)

    network = load_bundle_config(bundle, "inference.json", TINY).get_parsed_content("network")
    x = torch.rand(shape_of_input, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        eager = network(x).numpy()
        scripted = torch.jit.load(str(ts))(x).numpy()
    assert _relative_error(scripted, eager) <= 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert _relative_error(onnx_out, eager) <= 1e-4
