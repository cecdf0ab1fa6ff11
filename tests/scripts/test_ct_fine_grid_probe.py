"""scripts/ct_fine_grid_probe.py through a tiny bundle: one row per scanner, the fusion changes the restoration of
fine pixels and leaves that of coarse ones exactly as it was; an unknown scanner is refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles.utils import CT_BUNDLE, tiny_inference_bundle
from tests.scripts import load_script


def _rows(text: str) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


@pytest.mark.parametrize("pixel", [0.5, 0.9])
def test_one_row_per_scanner_and_the_fusion_only_below_its_pixel_size(tmp_path: Path, pixel: float) -> None:
    probe = load_script("ct_fine_grid_probe")
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    out = tmp_path / "probe.md"
    args = ["--bundle", str(bundle), "--model", str(weights), "--pixel", str(pixel), "--size", "40"]
    args += ["--override", "coarse_fusion_min_change_hu=0"]  # the per-slice gate open: the tiny network's change
    assert probe.main([*args, "--slices", "3", "--scanners", "quiet,evaluation", "--out", str(out)]) == 0
    rows = _rows(out.read_text())
    assert list(rows) == ["quiet", "evaluation"] and [r[0] for r in rows.values()] == ["2", "1"]
    for cells in rows.values():
        if pixel > 0.75:  # not fused: the same restoration twice
            assert cells[2] == cells[3] and cells[4] == "+0.00 +- 0.00"
        else:
            assert cells[2] != cells[3]


def test_an_unknown_scanner_is_refused(tmp_path: Path) -> None:
    probe = load_script("ct_fine_grid_probe")
    with pytest.raises(SystemExit, match="unknown \\['loud'\\]"):
        probe.main(["--scanners", "soft,loud", "--size", "40", "--slices", "1"])


def test_the_oracle_nlm_is_tuned_on_each_slice(tmp_path: Path) -> None:
    """``--oracle-nlm``: on each slice (one per scanner here) the tuned filter scores at least as well as a grid
    point of it and one outside the tuned rows' grid (7 x 7 patches, 23 x 23 search window), and the off-minus-it
    column is the difference of the two PSNR columns."""
    import torch

    from monai_rwkv.apps import baselines as lib
    from monai_rwkv.apps import volume_slice_metrics
    from monai_rwkv.metrics import CT_EVAL_WINDOW

    probe = load_script("ct_fine_grid_probe")
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    out = tmp_path / "probe.md"
    args = [
        "--bundle",
        str(bundle),
        "--model",
        str(weights),
        "--pixel",
        "0.9",
        "--size",
        "40",
        "--slices",
        "2",
        "--threads",
        "1",
    ]
    assert probe.main([*args, "--scanners", "soft,sharp", "--oracle-nlm", "--out", str(out)]) == 0
    rows = _rows(out.read_text())
    assert list(rows) == ["soft", "sharp"]
    parsed = probe._parser().parse_args([*args, "--scanners", "soft,sharp"])
    full, low, used = probe.make_pairs(parsed)
    nlm = probe.BASELINES["nlm"]
    for k, scanner in enumerate(used):
        cells = rows[scanner]
        tuned = float(cells[6].split(" / ")[0])
        for point in ({"patch_radius": 1, "search_radius": 5}, {"patch_radius": 3, "search_radius": 11}):
            grid_point = lib.SliceFilterRestorer(nlm.build(h_hu=20.0, **point), {})
            fixed = volume_slice_metrics(grid_point(low[..., [k]].float()), full[..., [k]].float(), CT_EVAL_WINDOW)
            assert tuned >= float(fixed["psnr"].mean()) - 0.005 and torch.isfinite(fixed["psnr"]).all()
        off = float(cells[2].split(" / ")[0])
        assert abs(float(cells[7].split(" ")[0]) - (off - tuned)) <= 0.011
        assert "per slice: h_hu " in cells[6]
