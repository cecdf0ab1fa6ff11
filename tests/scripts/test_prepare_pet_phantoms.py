"""scripts/prepare_pet_phantoms.py on tiny synthetic tissue maps (``--maps-dir``, no nilearn wheel): outputs, shapes,
ranges, split by world z, idempotence and reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.scripts import load_script

FOV = 28  # 2 mm voxels


@pytest.fixture(scope="module")
def prep() -> object:
    return load_script("prepare_pet_phantoms")


def write_maps(folder: Path, seed: int) -> Path:
    """A 1 mm ellipsoidal 'brain' from z = -20 to 79 mm: a grey-matter rim, white matter inside, CSF ventricles."""
    rng = np.random.default_rng(seed)
    shape = (36, 40, 100)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-17.5, -19.5, -20.0)
    x, y, z = (np.arange(n) + affine[i, 3] for i, n in enumerate(shape))
    semi = (rng.uniform(13, 15), rng.uniform(14, 16), 58.0)
    rho = np.sqrt((x[:, None, None] / semi[0]) ** 2 + (y[None, :, None] / semi[1]) ** 2 + ((z - 30) / semi[2]) ** 2)
    brain = np.clip((1.0 - rho) * 8, 0, 1)  # soft edge
    gm = brain * np.clip((rho - 0.55) * 5, 0, 1)
    ventricle = np.clip((0.25 - rho) * 10, 0, 1)
    csf = brain * ventricle
    wm = brain - gm - csf
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("gm", gm), ("wm", wm), ("csf", csf)):
        nib.save(nib.Nifti1Image(np.clip(data, 0, 1).astype(np.float32), affine), folder / f"{name}.nii.gz")
    return folder


def test_prepare_pet_phantoms(prep, tmp_path, seed, capsys):
    maps = write_maps(tmp_path / "maps", seed)
    out = tmp_path / "pet"
    argv = ["--maps-dir", str(maps), "--out", str(out), "--variants", "1", "--fov", str(FOV), "--seed", str(seed)]
    argv += ["--train-variants", "1", "--train-scans", "2"]
    assert prep.main(argv) == 0
    info = json.loads((out / "split.json").read_text())
    datalist = json.loads((out / "datalist.json").read_text())
    assert set(datalist) == {"training", "validation", "test"}
    assert len(datalist["training"]) == 4 and len(datalist["validation"]) == 1 and len(datalist["test"]) == 1
    assert len({item["image"] for item in datalist["training"]}) == 4  # two slabs, two scans of each phantom
    assert (out / "DATA_LICENSE.txt").read_text().startswith("Data licence note")
    for name, digest in info["files"].items():
        assert prep.sha256_file(out / name) == digest
    # slabs by world z (2 mm voxel centres from -19.5 mm): train z < -6 and z >= 62, val [36, 56), test [0, 30)
    slabs = info["slabs_index_ranges_along_axis_2"]
    assert slabs == {"train_0": [0, 7], "train_1": [41, 50], "val": [28, 38], "test": [10, 25]}
    mu_max = 0.0096 * (1 + 1e-6)
    for items in datalist.values():
        for item in items:
            phantom = nib.load(out / item["phantom"])
            mu = np.asarray(nib.load(out / item["mu"]).dataobj)
            part = item["phantom"].removeprefix("phantom_").removesuffix("_v0.nii.gz")
            n = slabs[part][1] - slabs[part][0]
            assert phantom.shape == (FOV, FOV, n) and mu.shape == (FOV, FOV, n)
            np.testing.assert_allclose(np.abs(np.diag(phantom.affine)[:3]), 2.0)
            z0 = -19.5 + 2 * slabs[part][0]
            assert phantom.affine[2, 3] == pytest.approx(z0)
            act = np.asarray(phantom.dataobj)
            assert act.dtype == np.float32 and act.min() >= 0 and 0 < act.max() <= 20
            assert mu.min() >= 0 and mu.max() <= mu_max and mu.max() > 0.009
            tissue = np.asarray(nib.load(out / item["tissue"]).dataobj)
            assert tissue.shape == (FOV, FOV, n, 3) and 0 <= tissue.min() and tissue.sum(-1).max() <= 1 + 1e-5
            labels = np.asarray(nib.load(out / item["lesions"]).dataobj)
            recorded = info["phantoms"][item["phantom"]]
            assert labels.dtype == np.uint8
            assert set(np.unique(labels)) <= {0, *(lesion["label"] for lesion in recorded["lesions"])}
            for lesion in recorded["lesions"]:  # a lesion's voxels hold its contrast x the mean activity there
                inside = labels == lesion["label"]
                if inside.any() and act[inside].max() < 20:
                    assert np.ptp(act[inside]) < 1e-4
            low, full = (np.asarray(nib.load(out / item[k]).dataobj) for k in ("image", "label"))
            assert low.shape == full.shape == act.shape
            assert low.min() >= 0 and full.min() >= 0 and low.max() <= 20 and full.max() <= 20
            inside = act > 0.5 * act.max()  # the low-count scan is noisier than the full-count one around the same mean
            assert np.std(low - full) > 0 and abs(low[inside].mean() / full[inside].mean() - 1) < 0.2

    # idempotent: nothing is rewritten; --force rewrites the same bytes (seeded)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in info["files"]}
    capsys.readouterr()
    assert prep.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in info["files"]} == mtimes
    assert prep.main([*argv, "--force"]) == 0
    assert json.loads((out / "split.json").read_text())["files"] == info["files"]
    # other settings (or other maps) make the folder incomplete; a missing map is a clear error
    assert not prep.is_complete(out, {**info["settings"], "seed": seed + 1})
    # the bundle sample: the middle slices of the first test phantom's two scans, same name, shifted affine
    assert prep.main([*argv, "--sample", str(tmp_path / "sample"), "--sample-slices", "3"]) == 0
    sample = tmp_path / "sample"
    low_s, full_s = (nib.load(sample / sub / "pet_brain_phantom.nii.gz") for sub in ("lowcount", "fullcount"))
    low_t = nib.load(out / "low_test_v0.nii.gz")
    first = (slabs["test"][1] - slabs["test"][0] - 3) // 2
    np.testing.assert_array_equal(np.asarray(low_s.dataobj), np.asarray(low_t.dataobj)[:, :, first : first + 3])
    assert full_s.shape == low_s.shape == (FOV, FOV, 3)
    np.testing.assert_allclose(low_s.affine[:3, 3], low_t.affine[:3, :3] @ [0, 0, first] + low_t.affine[:3, 3])
    assert (tmp_path / "sample" / "DATA_LICENSE.txt").read_text().startswith("Data licence note")
    (maps / "csf.nii.gz").unlink()
    assert prep.main(argv) == 1
    assert "has no csf.nii.gz" in capsys.readouterr().err
