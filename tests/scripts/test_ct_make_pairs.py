"""scripts/ct_make_pairs.py on small real files (a NIfTI volume and a DICOM CT series), then
scripts/ct_baselines.py --pairs on what it wrote: the report of a set of your own scans."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_rwkv.apps import find_inputs, read_volume
from monai_rwkv.data import write_nifti
from tests.bundles.utils import CT_BUNDLE, phantom_ct_volume, tiny_inference_bundle
from tests.data.conftest import tree_digest
from tests.robustness.conftest import write_ct_series, write_mr_series
from tests.scripts import load_script

AFFINE = np.array([[0.0, -0.8, 0.0, 20.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]])


def _scans(root: Path, seed: int) -> tuple[Path, Path, Path]:
    """A validation NIfTI volume, a test NIfTI volume (4 slices each, 32 x 32) and a test DICOM CT series."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in ("val", "head"):
        paths.append(root / f"{name}.nii.gz")
        write_nifti(phantom_ct_volume(rng, 4, size=32), paths[-1], AFFINE, dtype="int16")
    paths.append(root / "abdomen")
    write_ct_series(paths[-1], n=3, seed=seed)
    return paths[0], paths[1], paths[2]


def test_pairs_from_full_dose_scans_and_their_report(tmp_path: Path, seed: int, capsys) -> None:
    make = load_script("ct_make_pairs")
    val, head, series = _scans(tmp_path / "in", seed)
    before = tree_digest(tmp_path / "in")
    out = tmp_path / "pairs"
    argv = ["--output", str(out), "--validation", str(val), "--scanners", "soft,sharp", "--seed", str(seed % 1000)]
    assert make.main([*argv, str(head), str(series)]) == 0
    assert tree_digest(tmp_path / "in") == before  # inputs only read
    record = json.loads((out / "pairs.json").read_text())
    assert set(record["scanners"]) == {"soft", "sharp"}
    assert record["slices"]["test"]["head"] == ["soft", "sharp", "soft", "sharp"]
    for split, path in (("validation", val), ("test", head), ("test", series)):
        source = read_volume(find_inputs(path)[0])
        name = find_inputs(path)[0].name
        full, low = (nib.load(out / split / kind / f"{name}.nii.gz") for kind in ("full", "low"))
        assert full.get_data_dtype() == np.float32 and full.shape == tuple(source.shape[1:]) == low.shape
        np.testing.assert_allclose(full.affine, np.asarray(source.affine), atol=1e-5)
        np.testing.assert_allclose(low.affine, full.affine)
        np.testing.assert_array_equal(full.get_fdata(), source[0].numpy())  # the scan itself is the reference
        noise = low.get_fdata() - full.get_fdata()
        assert 1.0 < np.abs(noise).mean() < 500.0, (split, name)  # a low-dose scan of it, not a copy or garbage
    # the same call again: refused, nothing changed; --overwrite redoes it identically (seeded)
    written = tree_digest(out)
    with pytest.raises(SystemExit, match="exists .* pass --overwrite"):
        make.main([*argv, str(head), str(series)])
    assert tree_digest(out) == written
    assert make.main([*argv, "--overwrite", str(head), str(series)]) == 0
    assert tree_digest(out) == written

    # a scanner of your own: its settings recorded, its slices named by it
    custom = tmp_path / "custom"
    few = {"n_views": 30, "window": "hann", "dose_fraction": 0.1}
    argv = ["--output", str(custom), "--validation", str(val), "--scanner", f"few={json.dumps(few)}"]
    assert make.main([*argv, "--scanners", "few", "--stride", "2", str(head)]) == 0
    record = json.loads((custom / "pairs.json").read_text())
    assert record["scanners"] == {"few": few} and record["slices"]["test"]["head"] == ["few", "few"]
    full, low = (nib.load(custom / "test" / kind / "head.nii.gz") for kind in ("full", "low"))
    source = read_volume(find_inputs(head)[0])
    np.testing.assert_array_equal(full.get_fdata(), source[0].numpy()[:, :, ::2])  # every second slice
    np.testing.assert_allclose(full.affine[:3, 2], 2 * np.asarray(source.affine)[:3, 2], atol=1e-5)
    assert np.abs(low.get_fdata() - full.get_fdata()).mean() > 1.0

    report = load_script("ct_baselines")
    bundle, weights = tiny_inference_bundle(tmp_path / "bundle", CT_BUNDLE)
    text_file = tmp_path / "report.md"
    args = ["--pairs", f"mine={out}", "--output-dir", str(tmp_path / "runs"), "--out", str(text_file)]
    args += ["--bundle", str(bundle), "--methods", "gaussian", "--oracle", "--threads", "1"]
    assert report.main([*args, "--model", f"tiny={weights}"]) == 0
    text = text_file.read_text()
    assert "### mine" in text and "### shifted" not in text  # the --pairs sets by default
    section = text.split("### mine")[1]
    assert "7 test slices" in section  # 4 head slices and 3 of the series
    groups = section.split("By group of test slices")[1].splitlines()[2]
    name = find_inputs(series)[0].name
    assert "head, soft (2)" in groups and "head, sharp (2)" in groups and f"{name}, soft (2)" in groups, groups
    tuned = json.loads((tmp_path / "runs" / "mine" / "gaussian" / "tuning.json").read_text())
    assert tuned["tuned_on"] == "mine validation"


def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path: Path, seed: int) -> None:
    make = load_script("ct_make_pairs")
    val, head, _ = _scans(tmp_path / "in", seed)
    mr = tmp_path / "in" / "t1"
    write_mr_series(mr, seed=seed)
    out = tmp_path / "pairs"
    with pytest.raises(SystemExit) as error:
        make.main(["--output", str(out), "--validation", str(val), str(head), str(mr)])
    assert str(mr) in str(error.value) and "\n" not in str(error.value) and "Modality MR" in str(error.value)
    assert not out.exists()
    with pytest.raises(SystemExit) as usage:  # argparse: a scan both for tuning and for testing
        make.main(["--output", str(out), "--validation", str(val), str(val)])
    assert usage.value.code == 2 and not out.exists()
    with pytest.raises(SystemExit) as usage:
        make.main(["--output", str(out), "--validation", str(val), "--scanners", "soft,loud", str(head)])
    assert usage.value.code == 2 and not out.exists()
    for scanner in ('few={"window": "foo"}', 'few={"bogus": 1}', "few=[1]", "few=", 'soft={"n_views": 90}'):
        with pytest.raises(SystemExit) as usage:
            make.main(["--output", str(out), "--validation", str(val), "--scanner", scanner, str(head)])
        assert usage.value.code == 2 and not out.exists(), scanner
    (out / "validation" / "full").mkdir(parents=True)
    with pytest.raises(SystemExit) as usage:  # a pairs folder without its test pairs
        load_script("ct_baselines").main(["--pairs", f"mine={out}", "--model", f"m={head}"])
    assert usage.value.code == 2
