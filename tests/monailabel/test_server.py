"""
A real MONAI Label server (``.venv-monailabel``, built by ``make monailabel-env``) serving this project's app on
127.0.0.1: /info lists every bundle as an infer task of type "others", /infer returns the restored volume (float32
NIfTI in physical units, the input's shape and affine) equal to ``monai-rwkv restore`` with the same bundle, and
/train fine-tunes a bundle on the datastore, after which /infer uses the fine-tuned weights.

The bundles are copies with a tiny random network (plumbing only). Run with ``make test-monailabel``.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_rwkv.apps.bundle import bundle_metadata, load_bundle_config, restoring_configs
from monai_rwkv.apps.cli import main as cli
from monai_rwkv.bundles import short_name
from monai_rwkv.data.provenance import nifti_restoration_note
from monai_rwkv.monailabel_app.lib.bundles import bundle_tasks
from tests.bundles.utils import REPO, TINY_NETWORK, random_volume

ML_VENV = REPO / ".venv-monailabel"
ML_PYTHON = ML_VENV / "bin" / "python"
MONAILABEL = ML_VENV / "bin" / "monailabel"

#: the marks of every test that runs in the MONAI Label environment (skipped, with the reason, where it is missing).
NEEDS_ML_ENV = [
    pytest.mark.slow,
    pytest.mark.monailabel,
    pytest.mark.skipif(
        not (ML_VENV / ".installed").is_file(),
        reason=f"no MONAI Label environment {ML_VENV.name}: run `make test-monailabel` (it builds it first)",
    ),
]
pytestmark = NEEDS_ML_ENV

BUNDLES = sorted(p.parent.parent for p in (REPO / "bundles").glob("*/configs/inference.json"))
NAMES = [short_name(b.name) for b in BUNDLES]
#: infer task name -> (bundle, task): one per bundle, one per task of a bundle that serves several (all_in_one_mri...)
INFERS = {
    (f"{short_name(b.name)}_{t}" if t else short_name(b.name)): (b, t)
    for b in BUNDLES
    for t in (bundle_tasks(b) or [None])
}
#: a clean target for the sample input of these bundles (a training pair for the train test).
TARGETS = {"ct_denoise": "fulldose/ct_head.nii.gz", "mri_sr": "reference/colin_t1.nii.gz"}
#: written into the copies' inference.json, so the server and the CLI both use them (a 256 x 256 window: one per
#: slice of the samples, several times faster on CPU than many small windows; blending is tested in tests/bundles).
TINY_CONFIG = {"network_def": TINY_NETWORK, "roi_size": [256, 256], "progress": False, "device": "cpu"}
#: (image id, infer task): a volume on 0.5 mm pixels, the sample of that task's bundle (one with coarse_fusion_def)
FINE_INPUT = ("ct_fine", "ct_denoise")
STARTUP_S = 300
REQUEST_S = 300


def _tiny_copy(bundle: Path, dest: Path) -> Path:
    """The bundle with a tiny network (its network_def with TINY_NETWORK) and random weights, sample left out."""
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("models", "sample", "__pycache__"))
    config_file = dest / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["network_def"].update(TINY_CONFIG["network_def"])
    config.update({k: v for k, v in TINY_CONFIG.items() if k != "network_def"})
    if "coarse_fusion_min_change_hu" in config:  # the gate open: the random network changes no flat tissue enough
        config["coarse_fusion_min_change_hu"] = 0.0
    if "residual_smoothing_def" in config:  # every slice smoothed: the random network leaves no flat soft tissue
        config["residual_smoothing_threshold_hu"] = 0.0
        config["residual_smoothing_def"].update({"flat_gradient": 1.0, "value_range": [0.0, 1.0]})
    config_file.write_text(json.dumps(config, indent=4))
    (dest / "models").mkdir()
    torch.manual_seed(0)
    network = load_bundle_config(dest).get_parsed_content("network_def")
    torch.save(network.state_dict(), dest / "models" / "model.pt")
    return dest


def _sample_input(bundle: Path, dest: Path, task: str | None = None) -> Path:
    """The bundle's sample input (its inference.json ``dataset_dir``, for ``task``), or a random volume when it has
    none yet."""
    overrides = {"task": task} if task else None
    sample_dir = Path(load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("dataset_dir"))
    samples = sorted(sample_dir.glob("*.nii*")) if sample_dir.is_dir() else []
    if samples:
        shutil.copyfile(samples[0], dest)
    else:
        affine = np.diag([0.9, 0.8, 2.0, 1.0])
        nib.save(nib.Nifti1Image(random_volume(bundle, (64, 48, 3)), affine), dest)
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path, root: Path) -> None:
        self.url, self.process, self.log, self.root = url, process, log, root

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = REQUEST_S, form: bool = False):
        """``body`` as JSON, or with ``form`` as the form field ``params`` (what /infer reads its parameters from)."""
        if body is None:
            data = None
        elif form:
            data = urllib.parse.urlencode({"params": json.dumps(body)}).encode()
        else:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            kind = "application/x-www-form-urlencoded" if form else "application/json"
            req.add_header("Content-Type", kind)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.headers, response.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:2000]!r}\n{self.tail()}") from None

    def infer(self, model: str, image: str, params: dict | None = None) -> tuple[dict, Path, float]:
        """``(result json, result NIfTI, seconds)`` of POST /infer/<model>?image=<id>&output=all (``params``: the
        request's parameters, sent as its ``params`` form field)."""
        start = time.perf_counter()
        headers, body = self.request("POST", f"/infer/{model}?image={image}&output=all", params, form=True)
        seconds = time.perf_counter() - start
        message = email.message_from_bytes(
            b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
        )
        params, image_bytes = None, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "params":
                params = json.loads(part.get_payload(decode=True))
            elif name == "image":
                image_bytes = part.get_payload(decode=True)
        assert params is not None and image_bytes is not None, f"multipart parts: {[p for p in message.iter_parts()]}"
        path = self.root / f"result_{model}_{time.monotonic_ns()}.nii.gz"
        path.write_bytes(image_bytes)
        return params, path, seconds


#: CT inputs get a scanner's padding outside the reconstruction circle and a metal insert (the bundle's keep_outside)
PADDING_HU, METAL_HU = -3024, 7976


def _add_padding_and_metal(path: Path) -> None:
    """Every slice's corners outside its inscribed circle at PADDING_HU, a 3 x 3 insert at METAL_HU in the middle."""
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    i, j = np.mgrid[: data.shape[0], : data.shape[1]]
    ci, cj = (data.shape[0] - 1) / 2, (data.shape[1] - 1) / 2
    data[((i - ci) / (ci + 0.5)) ** 2 + ((j - cj) / (cj + 0.5)) ** 2 > 1] = PADDING_HU
    data[int(ci) - 1 : int(ci) + 2, int(cj) - 1 : int(cj) + 2] = METAL_HU
    nib.save(nib.Nifti1Image(data, image.affine, image.header), path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("monailabel")
    bundles, studies = root / "bundles", root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    inputs = {}
    for bundle in BUNDLES:
        name = short_name(bundle.name)
        _tiny_copy(bundle, bundles / bundle.name)
        for infer_name, (served, task) in INFERS.items():
            if served == bundle:
                inputs[infer_name] = _sample_input(bundle, studies / f"{infer_name}.nii.gz", task)
                if name == "ct_denoise" or task == "ct":
                    _add_padding_and_metal(inputs[infer_name])
        if name == FINE_INPUT[1]:  # its sample on 0.5 mm pixels, for the coarse-scale fusion
            image = nib.load(inputs[name])
            affine = image.affine.copy()
            affine[:3, :2] *= 0.5 / np.linalg.norm(affine[:3, :2], axis=0)
            nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), studies / f"{FINE_INPUT[0]}.nii.gz")
        target = bundle / "sample" / TARGETS.get(name, "-")
        if target.is_file():
            shutil.copyfile(target, studies / "labels" / "final" / f"{name}.nii.gz")
    return {"root": root, "bundles": bundles, "studies": studies, "inputs": inputs}


@pytest.fixture(scope="module")
def server(setup: dict) -> Server:
    root = setup["root"]
    app = root / "app"
    subprocess.run([str(ML_PYTHON), "-m", "monai_rwkv.monailabel_app", str(app)], check=True, cwd=root)
    port = _free_port()
    log = root / "server.log"
    # the `monailabel` script runs `$MONAILABEL_PYEXE -m monailabel.main` (default: `python` from PATH)
    env = {
        **os.environ,
        "PATH": f"{ML_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "MONAILABEL_PYEXE": str(ML_PYTHON),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)
    command = [
        str(MONAILABEL), "start_server", "--app", str(app), "--studies", str(setup["studies"]),
        "--conf", "zoo_source", "local", "--conf", "bundles", str(setup["bundles"]),
        "--conf", "model_dir", str(root / "finetuned"), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, root)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"monailabel start_server exited with {process.returncode}:\n{server.tail()}")
            if time.perf_counter() - start > STARTUP_S:
                pytest.fail(f"no /info/ within {STARTUP_S} s:\n{server.tail()}")
            try:
                with urllib.request.urlopen(server.url + "/info/", timeout=10) as response:
                    server.info = json.loads(response.read())
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        server.startup_s = time.perf_counter() - start
        print(f"\nmonailabel server ready in {server.startup_s:.1f} s", file=sys.stderr)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def _assert_served(served: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding: every voxel within 1e-5 of the volume's largest magnitude. The server runs on
    one thread (OMP_NUM_THREADS=1) and the CLI here on torch's default count, so sums run in another order (up to
    2e-3 HU apart on CT volumes of about 3000 HU in range, measured)."""
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def _cli(bundle: Path, source: Path, output: Path, *args: str) -> np.ndarray:
    assert cli(["restore", "--bundle", str(bundle), str(source), str(output), "--no-progress", *args]) == 0
    return nib.load(output).get_fdata(dtype=np.float32)


def test_info_lists_every_bundle(server: Server) -> None:
    models, trainers = server.info["models"], server.info["trainers"]
    assert sorted(models) == sorted(INFERS), server.info
    for name in INFERS:
        assert models[name]["type"] == "others", models[name]
        assert models[name]["labels"] == {}
        assert models[name]["dimension"] == 3
    trainable = [REPO / "bundles" / f"restore_rwkv_{n}" for n in NAMES]
    trainable = [b for b in trainable if (b / "configs" / "train.json").is_file() and not bundle_tasks(b)]
    assert {short_name(b.name) for b in trainable} == set(trainers)


@pytest.mark.parametrize("name", INFERS)
def test_infer_equals_the_cli(name: str, setup: dict, server: Server, tmp_path: Path) -> None:
    source = setup["inputs"][name]
    params, result, seconds = server.infer(name, name)
    print(f"\n/infer/{name}: {seconds:.2f} s (server: {params['latencies']})", file=sys.stderr)
    task = INFERS[name][1]
    bundle = setup["bundles"] / INFERS[name][0].name
    meta = bundle_metadata(load_bundle_config(bundle, "inference.json", {"task": task} if task else None))
    assert params["units"] == meta["network_data_format"]["outputs"]["pred"]["format"]
    assert params["dtype"] == "float32" and params["bundle"] == bundle.name
    assert params["weights"] == str(bundle / "models" / "model.pt")
    restored, original = nib.load(result), nib.load(source)
    assert restored.get_data_dtype() == np.float32
    assert restored.shape == original.shape
    np.testing.assert_allclose(restored.affine, original.affine, atol=1e-4)
    assert params.get("task") == task
    expected = _cli(bundle, source, tmp_path / "cli.nii.gz", *(["--task", task] if task else []))
    # marked as restored (the bundles refuse it as an input), with the version the CLI records for these settings
    note = restored.header["descrip"].item().decode()
    assert note == nib.load(tmp_path / "cli.nii.gz").header["descrip"].item().decode(), (note, params["version"])
    assert note == nifti_restoration_note(meta["name"], params["version"]) and note.endswith(" (monai_rwkv)")
    assert params["version"].startswith(meta["version"])
    assert list(expected.shape) == params["shape"]
    served = restored.get_fdata(dtype=np.float32)
    print(f"/infer/{name} vs monai-rwkv restore: max |difference| {np.abs(served - expected).max()}", file=sys.stderr)
    _assert_served(served, expected)
    if name == "ct_denoise" or task == "ct":  # padding and metal are handed through, as the CLI does
        source_values = np.asarray(original.dataobj)
        for value in (PADDING_HU, METAL_HU):
            assert (source_values == value).any()
            np.testing.assert_array_equal(served[source_values == value], value)


def test_a_request_strength_is_the_cli_strength(setup: dict, server: Server, tmp_path: Path) -> None:
    """``{"strength": 0.5}`` in the request body gives ``monai-rwkv restore --strength 0.5``'s volume and says so;
    a strength outside [0, 1] is refused."""
    name = next(n for n in INFERS if INFERS[n][1] is None)
    bundle = setup["bundles"] / INFERS[name][0].name
    params, result, _ = server.infer(name, name, {"strength": 0.5})
    assert params["strength"] == 0.5
    expected = _cli(bundle, setup["inputs"][name], tmp_path / "cli.nii.gz", "--strength", "0.5")
    full = _cli(bundle, setup["inputs"][name], tmp_path / "full.nii.gz")
    served = nib.load(result).get_fdata(dtype=np.float32)
    _assert_served(served, expected)
    assert np.abs(served - full).max() > 1.0  # not the full restoration
    with pytest.raises(AssertionError, match="HTTP"):
        server.request("POST", f"/infer/{name}?image={name}&output=json", {"strength": 1.5}, form=True)


def test_a_request_coarse_fusion_is_the_cli_coarse_fusion(setup: dict, server: Server, tmp_path: Path) -> None:
    """``{"coarse_fusion": true}`` gives ``monai-rwkv restore --set coarse_fusion=true``'s volume: on 0.5 mm pixels
    a fused restoration, on the sample's 0.96 mm the plain one, and the result says which; the bundle's default
    (on) applies without the parameter, ``false`` turns it off; a bundle without a ``coarse_fusion_def`` and a
    value that is not a boolean are refused."""
    image, name = FINE_INPUT
    bundle = setup["bundles"] / INFERS[name][0].name
    fine = setup["studies"] / f"{image}.nii.gz"
    params, result, _ = server.infer(name, image, {"coarse_fusion": True})
    assert params["coarse_fusion"] is True
    served = nib.load(result).get_fdata(dtype=np.float32)
    expected = _cli(bundle, fine, tmp_path / "cli.nii.gz", "--set", "coarse_fusion=true")
    _assert_served(served, expected)
    plain = _cli(bundle, fine, tmp_path / "plain.nii.gz", "--set", "coarse_fusion=false")
    assert np.abs(served - plain).max() > 1.0  # the coarse pass changed it
    params, result, _ = server.infer(name, image, {"coarse_fusion": True, "strength": 0.5})  # blended in both passes
    blended = _cli(bundle, fine, tmp_path / "half.nii.gz", "--set", "coarse_fusion=true", "--strength", "0.5")
    assert params["coarse_fusion"] is True and params["strength"] == 0.5
    _assert_served(nib.load(result).get_fdata(dtype=np.float32), blended)
    assert server.infer(name, image, {"coarse_fusion": False})[0]["coarse_fusion"] is False
    assert server.infer(name, image)[0]["coarse_fusion"] is True  # the bundle's default: on
    params, result, _ = server.infer(name, name, {"coarse_fusion": True})  # 0.96 mm pixels: no coarse pass
    assert params["coarse_fusion"] is False
    expected = _cli(bundle, setup["inputs"][name], tmp_path / "coarse.nii.gz")
    _assert_served(nib.load(result).get_fdata(dtype=np.float32), expected)
    other = next(
        n for n, (b, t) in INFERS.items() if t is None and load_bundle_config(b).get("coarse_fusion_def") is None
    )
    for model, image_id, value in ((name, image, "yes"), (other, other, True)):
        with pytest.raises(AssertionError, match="HTTP"):
            server.request("POST", f"/infer/{model}?image={image_id}&output=json", {"coarse_fusion": value}, form=True)


def test_a_request_residual_smoothing_is_the_cli_residual_smoothing(
    setup: dict, server: Server, tmp_path: Path
) -> None:
    """``{"residual_smoothing": false}`` gives ``monai-rwkv restore --set residual_smoothing=false``'s volume and
    the bundle's default (on) the CLI's default, which differ; the result says which; a bundle without a
    ``residual_smoothing_def`` and a value that is not a boolean are refused."""
    name = next(n for n, (b, t) in INFERS.items() if load_bundle_config(b).get("residual_smoothing_def") is not None)
    bundle = setup["bundles"] / INFERS[name][0].name
    params, result, _ = server.infer(name, name)
    assert params["residual_smoothing"] is True
    served = nib.load(result).get_fdata(dtype=np.float32)
    _assert_served(served, _cli(bundle, setup["inputs"][name], tmp_path / "on.nii.gz"))
    params, result, _ = server.infer(name, name, {"residual_smoothing": False})
    assert params["residual_smoothing"] is False
    plain = nib.load(result).get_fdata(dtype=np.float32)
    off = tmp_path / "off.nii.gz"
    _assert_served(plain, _cli(bundle, setup["inputs"][name], off, "--set", "residual_smoothing=false"))
    assert np.abs(served - plain).max() > 1.0  # the smoothing changed it
    other = next(
        n for n, (b, t) in INFERS.items() if t is None and load_bundle_config(b).get("residual_smoothing_def") is None
    )
    refused = [(name, "yes"), (other, True)]
    # a bundle serving several tasks: its switch reaches the task whose bundle defines the smoothing (the CLI's
    # --set too), and a task without one refuses it
    for model, (served_by, task) in INFERS.items():
        if task is None:
            continue
        config = next(iter(restoring_configs(load_bundle_config(served_by, "inference.json", {"task": task})).values()))
        if config.get("residual_smoothing_def") is None:
            refused.append((model, True))
            continue
        params, result, _ = server.infer(model, model, {"residual_smoothing": False})
        assert params["residual_smoothing"] is False and "residual smoothing" not in params["version"]
        off = _cli(
            setup["bundles"] / served_by.name,
            setup["inputs"][model],
            tmp_path / f"{model}.nii.gz",
            "--task",
            task,
            "--set",
            "residual_smoothing=false",
        )
        _assert_served(nib.load(result).get_fdata(dtype=np.float32), off)
    for model, value in refused:
        with pytest.raises(AssertionError, match="HTTP"):
            server.request(
                "POST", f"/infer/{model}?image={model}&output=json", {"residual_smoothing": value}, form=True
            )


@pytest.mark.parametrize("name", [n for n in NAMES if n in TARGETS])
def test_train_then_infer_uses_the_finetuned_weights(name: str, setup: dict, server: Server, tmp_path: Path) -> None:
    request = {"max_epochs": 1, "epoch_length": 2, "device": "cpu", "images": name}
    start = time.perf_counter()
    _, body = server.request("POST", f"/train/{name}?run_sync=true", request)
    seconds = time.perf_counter() - start
    summary = json.loads(body)
    print(f"\n/train/{name}: {seconds:.2f} s: {summary}", file=sys.stderr)
    weights = setup["root"] / "finetuned" / name / "model.pt"
    assert summary["model"] == str(weights) and weights.is_file()
    assert summary["iterations"] == 2 and summary["epochs"] == 1
    bundle = setup["bundles"] / f"restore_rwkv_{name}"
    supports_pairs = "paired" in json.loads((bundle / "configs" / "train.json").read_text())
    assert summary["mode"] == ("pairs" if supports_pairs else "labels")
    assert summary["init_weights"] == str(bundle / "models" / "model.pt")
    assert np.isfinite(summary["best_val_psnr"])

    params, result, _ = server.infer(name, name)
    assert params["weights"] == str(weights)
    source = setup["inputs"][name]
    finetuned = _cli(bundle, source, tmp_path / "cli.nii.gz", "--set", f"weights={weights}")
    _assert_served(nib.load(result).get_fdata(dtype=np.float32), finetuned)
    shipped = _cli(bundle, source, tmp_path / "shipped.nii.gz")
    assert not np.allclose(finetuned, shipped, atol=1e-3), "the fine-tuned weights changed nothing"


def test_dicom_input_is_refused_with_a_reason(server: Server, tmp_path: Path) -> None:
    """Our DICOM reader needs pydicom 3, MONAI Label 0.8.5 pydicom 2: a DICOM series gets a clear refusal."""
    from tests.robustness.conftest import write_ct_series

    series = tmp_path / "series"
    write_ct_series(series, n=3)
    with pytest.raises(AssertionError, match="HTTP 500"):
        server.request("POST", f"/infer/{next(iter(INFERS))}?image={series}&output=json")
    deadline = time.monotonic() + 30  # the traceback reaches the log after the response
    while "DICOM input needs pydicom>=3" not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, server.tail()
        time.sleep(0.5)
