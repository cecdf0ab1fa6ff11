"""scripts/ct_strength.py on tiny CT data through a tiny bundle: per group, the input column is the input's metrics,
each strength column is the bundle run with that ``strength`` (inside the window), s* the least-squares strength,
noise the median of the per-slice noise estimates of the input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from monai_rwkv.apps import find_inputs, load_bundle_config, read_volume, volume_slice_metrics
from monai_rwkv.data import write_nifti
from monai_rwkv.networks.nets import widen_state_dict
from monai_rwkv.transforms import LowDoseCT, estimate_noise_level
from tests.bundles.utils import CT_BUNDLE, phantom_ct_volume, tiny_inference_bundle
from tests.scripts import load_script

AFFINE = np.diag([-3.0, 3.0, 5.0, 1.0])
WINDOW = (-160.0, 240.0)


def _data(root: Path, seed: int) -> Path:
    """split.json (val, test) and one shifted pair per split whose 3 slices come from two scanners."""
    rng = np.random.default_rng(seed)
    for split in ("val", "test"):
        write_nifti(phantom_ct_volume(rng, 2, size=32), root / f"{split}.nii.gz", AFFINE, dtype="int16")
    (root / "split.json").write_text(json.dumps({"splits": {s: {"file": f"{s}.nii.gz"} for s in ("val", "test")}}))
    datalist = {"slices": {}}
    for split in ("validation", "test"):
        clean = phantom_ct_volume(rng, 3, size=32).astype(np.float32)
        full, low = (root / "shifted" / split / kind / "head.nii.gz" for kind in ("full", "low"))
        write_nifti(clean, full, AFFINE)
        write_nifti(clean + rng.normal(0, 40, clean.shape).astype(np.float32), low, AFFINE)
        datalist[split] = [{"image": str(low.relative_to(root)), "label": str(full.relative_to(root))}]
        datalist["slices"][split] = {"head": ["soft", "sharp", "soft"]}
    (root / "datalist_shifted.json").write_text(json.dumps(datalist))
    return root


def _cell(pred: torch.Tensor, clean: torch.Tensor) -> str:
    m = volume_slice_metrics(pred, clean, WINDOW)
    return f"{float(m['psnr'].mean()):.2f} / {float(m['ssim'].mean()):.4f}"


def test_columns_are_the_bundle_run_at_each_strength(tmp_path: Path, seed: int, capsys) -> None:
    script = load_script("ct_strength")
    data = _data(tmp_path / "ct", seed)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    state = torch.load(weights, weights_only=True)  # a small change like a trained denoiser's, inside the HU range
    state["output.weight"] *= 0.02
    state["output.bias"] *= 0.02
    torch.save(state, weights)
    out = tmp_path / "strength.md"
    argv = ["--data-dir", str(data), "--bundle", str(bundle), "--model", str(weights), "--strengths", "0.5,1"]
    figure = tmp_path / "strength.png"
    options = ["--figure", str(figure), "--figure-group", "shifted head, soft", "--figure-strengths", "0.5,1"]
    assert script.main([*argv, "--levels", "2", "--sets", "test", "--threads", "1", "--out", str(out), *options]) == 0
    from PIL import Image

    with Image.open(figure) as png:  # input, two strengths, reference: 4 panels of 32 pixels or their zoomed detail
        assert png.size[0] == 4 * (max(32, 32 * 3) + 4)
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
        for r in out.read_text().splitlines()
        if r.startswith("| in-") or r.startswith("| shifted")
    }
    assert sorted(rows) == ["in-distribution head, level 2", "shifted head, sharp", "shifted head, soft"]
    # the settings the figures depend on are named: the bundle's default pipeline fuses fine-grid sparse-view slices
    assert "the bundle's pipeline with `coarse_fusion` on, `self_ensemble` off;" in out.read_text().splitlines()[0]

    def restorer(strength: float):
        overrides = {"weights": str(weights), "device": "cpu", "progress": False, "strength": strength}
        return load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("restorer")

    clean = read_volume(find_inputs(data / "test.nii.gz")[0])
    low = LowDoseCT(1.0, 0, incident_photons=2e6 * 2)(clean.clone())
    shifted_clean, shifted_low = (
        read_volume(find_inputs(data / "shifted" / "test" / k / "head.nii.gz")[0]) for k in ("full", "low")
    )
    soft = torch.tensor([0, 2])
    cases = {
        "in-distribution head, level 2": (low, clean, slice(None)),
        "shifted head, soft": (shifted_low, shifted_clean, soft),
    }
    for name, (lw, c, k) in cases.items():
        cells = rows[name]
        assert cells[1] == str(c[..., k].shape[-1])
        assert cells[2] == _cell(lw[..., k], c[..., k])  # the input
        for column, strength in ((3, 0.5), (4, 1.0)):
            assert cells[column] == _cell(restorer(strength)(lw.clone())[..., k], c[..., k]), (name, strength)
        pred = restorer(1.0)(lw.clone())[..., k].double().clamp(*WINDOW).numpy()
        lwk, ck = (v[..., k].double().clamp(*WINDOW).numpy() for v in (lw, c))
        best = [
            ((ck[..., j] - lwk[..., j]) * (pred[..., j] - lwk[..., j])).sum()
            / ((pred[..., j] - lwk[..., j]) ** 2).sum()
            for j in range(ck.shape[-1])
        ]
        assert cells[6] == f"{np.median(best):.2f}"
        # the input's noise as a network could measure it: the estimate of each input slice, in HU, median
        noise = [float(estimate_noise_level(lw[0, :, :, j].T[None].float())[0]) for j in range(lw.shape[-1])]
        assert cells[5] == f"{np.median(np.array(noise)[np.arange(lw.shape[-1])[k]]):.1f}"
    capsys.readouterr()


def test_override_runs_weights_of_another_width(tmp_path: Path, seed: int, capsys) -> None:
    """``--override network_def#dim=...``: weights of a wider network (here the bundle's widened, no perturbation)
    run through the same pipeline and give the narrow weights' report."""
    script = load_script("ct_strength")
    data = _data(tmp_path / "ct", seed)
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    state = torch.load(weights, weights_only=True)
    state["output.weight"] *= 0.02
    state["output.bias"] *= 0.02
    torch.save(state, weights)
    wide = widen_state_dict(state, 2)
    torch.save(wide, tmp_path / "wide.pt")
    argv = ["--data-dir", str(data), "--bundle", str(bundle), "--levels", "2", "--sets", "test", "--threads", "1"]
    reports = {}
    for name, model, extra in (
        ("narrow", weights, []),
        ("wide", tmp_path / "wide.pt", ["--override", f"network_def#dim={wide['patch_embed.weight'].shape[0]}"]),
    ):
        out = tmp_path / f"{name}.md"
        assert script.main([*argv, "--model", str(model), "--strengths", "0.5,1", "--out", str(out), *extra]) == 0
        reports[name] = [r for r in out.read_text().splitlines() if r.startswith("| ")]
        if extra:
            assert f"(overrides: `network_def#dim={wide['patch_embed.weight'].shape[0]}`)" in out.read_text()
    assert len(reports["wide"]) > 3 and reports["wide"] == reports["narrow"]
    capsys.readouterr()
