"""The parts of the MONAI Label app that do not need MONAI Label (run in the project's own environment)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monai_rwkv.bundles import BundleNotFoundError, bundle_names
from monai_rwkv.monailabel_app import APP_DIR, write_app
from monai_rwkv.monailabel_app.lib.bundles import bundle_tasks, finetuned_weights, served_bundles
from tests.bundles.utils import REPO, make_tiny_bundle


def test_the_app_folder_ships_in_the_package() -> None:
    assert (APP_DIR / "main.py").is_file() and (APP_DIR / "lib" / "__init__.py").is_file()
    assert APP_DIR.parent == REPO / "monai_rwkv"


def test_only_the_app_imports_monailabel() -> None:
    imports = re.compile(r"^\s*(from|import)\s+monailabel\b", re.MULTILINE)
    users = [p for p in (REPO / "monai_rwkv").rglob("*.py") if imports.search(p.read_text(encoding="utf-8"))]
    assert users and all(APP_DIR in p.parents for p in users), users
    # and the package and app helpers import without it
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, monai_rwkv.monailabel_app, monai_rwkv.monailabel_app.lib.bundles, "
            "monai_rwkv.monailabel_app.torchvision_shim, monai_rwkv.apps.cli; assert 'monailabel' not in sys.modules",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_served_bundles_default_is_every_bundle() -> None:
    served = served_bundles(None)
    assert sorted(served) == sorted(n for n in bundle_names() if (served[n] / "configs" / "inference.json").is_file())
    assert served_bundles("ct_denoise") == {"ct_denoise": served["ct_denoise"]}


def test_served_bundles_from_paths_and_folders(tmp_path: Path) -> None:
    one = make_tiny_bundle(tmp_path / "folder" / "restore_rwkv_ct_denoise")
    (tmp_path / "folder" / "not_a_bundle").mkdir()
    assert served_bundles(str(tmp_path / "folder")) == {"ct_denoise": one.absolute()}
    assert served_bundles(f" {one} , mri_sr")["ct_denoise"] == one.absolute()
    with pytest.raises(ValueError, match="two bundles named 'ct_denoise'"):
        served_bundles(f"{one},ct_denoise")
    with pytest.raises(BundleNotFoundError):
        served_bundles("no_such_bundle")


def test_bundle_tasks() -> None:
    served = served_bundles(None)
    assert {name: bundle_tasks(path) for name, path in served.items() if bundle_tasks(path)} == {
        "all_in_one": ["ct", "mri", "pet"]
    }


def test_finetuned_weights(tmp_path: Path) -> None:
    assert finetuned_weights(tmp_path, "ct_denoise") == tmp_path / "ct_denoise" / "model.pt"


def test_write_app(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    stub = (app / "main.py").read_text()
    assert "from monai_rwkv.monailabel_app.main import RestoreRWKVApp" in stub
    assert write_app(app) == app  # idempotent
    (app / "main.py").write_text("# someone's app\n")
    with pytest.raises(FileExistsError):
        write_app(app)
    result = subprocess.run([sys.executable, "-m", "monai_rwkv.monailabel_app"], capture_output=True, text=True)
    assert result.returncode != 0 and "usage" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("monailabel") is not None, reason="monailabel is installed here")
def test_the_app_needs_monailabel() -> None:
    with pytest.raises(ModuleNotFoundError, match="monailabel"):
        importlib.import_module("monai_rwkv.monailabel_app.main")
