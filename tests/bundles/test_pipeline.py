"""
Every bundle declares its pipeline in the model-zoo form (``preprocessing``, ``inferer``, ``postprocessing``,
``network``), and running those keys the way MONAI Label does gives the same volume as ``monai-rwkv restore``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_rwkv.apps.bundle import load_bundle_config
from monai_rwkv.apps.cli import main
from monai_rwkv.networks.nets import BlendWithInput, SelfEnsemble
from tests.bundles.utils import REPO, TINY_CLI_ARGS, input_spec, make_tiny_bundle, random_volume
from tests.robustness.conftest import write_ct_series, write_mr_series, write_pet_series

BUNDLES = sorted(p.parent.parent for p in (REPO / "bundles").glob("*/configs/inference.json"))
#: the same overrides as TINY_CLI_ARGS, as config ids.
TINY = {
    "network_def#dim": 8,
    "network_def#num_blocks": [1, 1, 1, 1],
    "network_def#num_refinement_blocks": 1,
    "roi_size": [16, 16],
    "device": "cpu",
    "progress": False,
}


@pytest.fixture(params=BUNDLES, ids=lambda p: p.name)
def tiny_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("pipeline") / request.param.name, bundle=request.param)


def _monai_label_way(bundle: Path, image: Path, **overrides) -> np.ndarray:
    """What monailabel's BundleInferTask does: pre -> inferer(image[None], network) -> post, from the config keys."""
    parser = load_bundle_config(bundle, "inference.json", {**TINY, **overrides})
    for key in ("preprocessing", "inferer", "postprocessing", "network_def", "device", "bundle_root"):
        assert key in parser, f"{bundle.name}: inference.json has no {key!r}"
    pre, inferer, post = (parser.get_parsed_content(k) for k in ("preprocessing", "inferer", "postprocessing"))
    network = parser.get_parsed_content("network")
    data = pre({"image": str(image)})
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], network)[0]
    return np.asarray(post(data)["pred"])


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_monai_label_way_equals_the_cli(kind, tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    if kind == "nifti":
        source = tmp_path / "image.nii.gz"
        data = random_volume(tiny_bundle, (23, 19, 3))
        data[4, 5, 1] = np.nan
        nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.0, 1.0])), source)
    else:
        source = tmp_path / "series"
        modality = input_spec(tiny_bundle)["modality"]
        if modality == "PT":
            write_pet_series(source, np.random.default_rng(0).gamma(2.0, 2.0, (16, 16, 3)))
        else:
            (write_mr_series if modality == "MR" else write_ct_series)(source, n=3)
    output = tmp_path / "cli.nii.gz"
    assert main(["restore", "--bundle", str(tiny_bundle), str(source), str(output), *TINY_CLI_ARGS]) == 0
    cli = nib.load(output).get_fdata(dtype=np.float32)
    label = _monai_label_way(tiny_bundle, source)
    assert label.shape[0] == 1
    np.testing.assert_array_equal(label[0], cli)
    capsys.readouterr()


def test_self_ensemble_option(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    """``self_ensemble`` (config key, ``--self-ensemble``) wraps the network in SelfEnsemble for the CLI and the
    MONAI Label way alike; the default is the plain network."""
    parser = load_bundle_config(tiny_bundle, "inference.json", TINY)
    assert parser["self_ensemble"] is False and not isinstance(parser.get_parsed_content("network"), SelfEnsemble)
    parser = load_bundle_config(tiny_bundle, "inference.json", {**TINY, "self_ensemble": "true"})
    assert isinstance(parser.get_parsed_content("network"), SelfEnsemble)
    assert parser.get_parsed_content("restorer").describe()["self_ensemble"] is True
    source = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(random_volume(tiny_bundle, (20, 18, 2)), np.diag([0.7, 0.8, 2.0, 1.0])), source)
    outputs = {}
    for name, extra in (("plain", []), ("ensemble", ["--self-ensemble"])):
        outputs[name] = tmp_path / f"{name}.nii.gz"
        assert (
            main(["restore", "--bundle", str(tiny_bundle), str(source), str(outputs[name]), *TINY_CLI_ARGS, *extra])
            == 0
        )
    plain, ensemble = (nib.load(outputs[k]).get_fdata(dtype=np.float32) for k in ("plain", "ensemble"))
    assert not np.array_equal(plain, ensemble)  # random tiny weights are not orientation-invariant
    np.testing.assert_array_equal(_monai_label_way(tiny_bundle, source, self_ensemble=True)[0], ensemble)
    capsys.readouterr()


def test_strength_option(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    """``strength`` (config key, ``--strength``) keeps that fraction of the network's change: the CLI and the
    MONAI Label way agree, every voxel lies between the input's round trip (strength 0) and the full restoration,
    the default is the plain network, and a value outside [0, 1] stops with one line before any work."""
    parser = load_bundle_config(tiny_bundle, "inference.json", TINY)
    assert parser["strength"] == 1.0 and not isinstance(parser.get_parsed_content("network"), BlendWithInput)
    parser = load_bundle_config(tiny_bundle, "inference.json", {**TINY, "strength": 0.5})
    assert isinstance(parser.get_parsed_content("network"), BlendWithInput)
    assert parser.get_parsed_content("restorer").describe()["strength"] == 0.5
    source = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(random_volume(tiny_bundle, (20, 18, 2), seed=3), np.diag([0.7, 0.8, 2.0, 1.0])), source)
    out = {}
    for strength in ("0", "0.5", "1"):
        out[strength] = tmp_path / f"s{strength}.nii.gz"
        argv = ["restore", "--bundle", str(tiny_bundle), str(source), str(out[strength]), *TINY_CLI_ARGS]
        assert main([*argv, "--strength", strength]) == 0
    none, half, full = (nib.load(out[k]).get_fdata(dtype=np.float32) for k in ("0", "0.5", "1"))
    np.testing.assert_array_equal(_monai_label_way(tiny_bundle, source, strength=0.5)[0], half)
    tol = 1e-3 * max(1.0, float(np.abs(full).max()))
    assert np.all(half >= np.minimum(none, full) - tol) and np.all(half <= np.maximum(none, full) + tol)
    assert np.abs(half - full).max() > 10 * tol and np.abs(half - none).max() > 10 * tol
    with pytest.raises(SystemExit) as e:
        main(["restore", "--bundle", str(tiny_bundle), str(source), str(tmp_path / "x.nii.gz"), "--strength", "2"])
    assert e.value.code == 2 and "strength must be a number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()
    capsys.readouterr()


def test_restorer_uses_the_declared_components(tiny_bundle: Path) -> None:
    parser = load_bundle_config(tiny_bundle, "inference.json", TINY)
    restorer = parser.get_parsed_content("restorer")
    assert restorer.inferer is parser.get_parsed_content("inferer")
    assert restorer.normalize is parser.get_parsed_content("normalize")
    assert restorer.denormalize is parser.get_parsed_content("denormalize")


def test_validation_sees_what_deployment_sees(tiny_bundle: Path) -> None:
    """train.json (merged over inference.json) validates with the deployment's normalisation and inferer."""
    configs = tiny_bundle / "configs"
    if not (configs / "train.json").is_file():
        pytest.skip("no train.json")
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "train.json")])
    parser.read_meta(str(configs / "metadata.json"))
    parser.update({**TINY, "bundle_root": str(tiny_bundle), "init_weights": str(tiny_bundle / "models" / "model.pt")})
    assert parser.get_parsed_content("validate#inferer") is parser.get_parsed_content("inferer")
    restorer = parser.get_parsed_content("restorer")
    network = parser.get_parsed_content("train#network").eval()
    volume = torch.from_numpy(random_volume(tiny_bundle, (1, 20, 17, 2)))
    item = parser.get_parsed_content("normalize_keys")({"image": volume.clone(), "label": volume.clone()})
    with torch.no_grad():
        validated = parser.get_parsed_content("validate#inferer")(item["image"][None], network)[0]
    deployed = restorer(volume)
    np.testing.assert_array_equal(np.asarray(parser.get_parsed_content("denormalize")(validated)), deployed.numpy())
