"""
Bundles by name: ``monai_rwkv.bundles`` (listing, lookup by short or folder name, paths still accepted), the
``monai-rwkv bundles`` command and ``--bundle NAME`` of ``restore`` / ``batch``; and a wheel built from an sdist of
this checkout carries the bundles, so that an installed copy (not the checkout) lists and runs them from any folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_rwkv.apps.cli import main
from monai_rwkv.bundles import (
    BundleNotFoundError,
    bundle_names,
    bundles_dir,
    find_bundle,
    list_bundles,
    served_tasks,
    short_name,
)
from tests.bundles.utils import REPO

BUNDLES = REPO / "bundles"
CT = BUNDLES / "restore_rwkv_ct_denoise"
#: what a wheel is built from (as in an sdist: MANIFEST.in decides what of it is packaged).
SOURCES = ("monai_rwkv", "bundles", "setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md")
MAX_FILE_BYTES = 50 * 2**20


def test_served_tasks_from_raw_json_and_parsed_config() -> None:
    """The tasks of a bundle that serves several, the same from its raw JSON and from a ConfigParser that read it;
    none for a bundle of one task."""
    from monai.bundle import ConfigParser  # noqa: PLC0415

    for info in list_bundles():
        path = info.path / "configs" / "inference.json"
        raw = json.loads(path.read_text())
        parser = ConfigParser()
        parser.read_config(str(path))
        assert served_tasks(raw) == served_tasks(parser) == list(raw.get("tasks", {}))
    assert served_tasks(json.loads((BUNDLES / "restore_rwkv_all_in_one" / "configs" / "inference.json").read_text()))
    assert served_tasks(json.loads((CT / "configs" / "inference.json").read_text())) == []


def test_list_bundles_reads_metadata() -> None:
    assert bundles_dir() == BUNDLES  # a checkout uses its own bundles/
    infos = {info.name: info for info in list_bundles()}
    assert {"ct_denoise", "mri_sr"} <= set(infos) and "schema" not in infos
    for name, info in infos.items():
        meta = json.loads((info.path / "configs" / "metadata.json").read_text())
        assert (info.version, info.task, info.title) == (meta["version"], meta["task"], meta["name"])
        assert info.folder == f"restore_rwkv_{name}" and info.path == BUNDLES / info.folder
    assert bundle_names() == sorted(infos)
    assert short_name("restore_rwkv_ct_denoise") == "ct_denoise" and short_name("other") == "other"


def test_find_bundle_by_name_or_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_bundle("ct_denoise") == CT
    assert find_bundle("restore_rwkv_ct_denoise") == CT
    assert find_bundle(CT) == CT and find_bundle(str(CT)) == CT
    local = tmp_path / "ct_denoise"
    local.mkdir()  # a folder that is not a bundle does not hide the installed bundle of that name
    assert find_bundle("ct_denoise") == CT
    (local / "configs").mkdir()
    shutil.copy(CT / "configs" / "inference.json", local / "configs")
    assert find_bundle("ct_denoise") == Path("ct_denoise")  # ... a bundle folder does (relative paths work)
    with pytest.raises(BundleNotFoundError, match=r"^nope: no such bundle folder or bundle name \(bundles: .*ct_d"):
        find_bundle("nope")
    with pytest.raises(BundleNotFoundError, match=r"no such bundle folder$"):
        find_bundle(tmp_path / "missing")
    with pytest.raises(BundleNotFoundError, match=r"not a bundle \(no configs/inference.json\)$"):
        find_bundle(BUNDLES / "schema")


def test_bundles_command(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bundles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "version", "task"]
    ct = json.loads((CT / "configs" / "metadata.json").read_text())
    row = next(line for line in lines[1:] if line.split()[0] == "ct_denoise")
    assert row.split()[:2] == ["ct_denoise", ct["version"]] and row.endswith(ct["task"])
    assert main(["bundles", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in listed] == bundle_names()
    ct_listed = next(b for b in listed if b["name"] == "ct_denoise")
    assert ct_listed["path"] == str(CT) and ct_listed["weights"] is True
    assert main(["bundles", "--path", "ct_denoise"]) == 0
    assert capsys.readouterr().out.strip() == str(CT)
    assert main(["bundles", "--path", "nope"]) == 1
    assert capsys.readouterr().err.startswith("error: nope: no such bundle folder or bundle name")


def _volume(path: Path) -> Path:
    data = np.random.default_rng(0).integers(-1000, 1500, size=(32, 32, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), path)
    return path


def _restore(cli: list[str], bundle: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A real restore of a small volume with the bundle's trained weights (32 x 32 windows: seconds on a CPU)."""
    source, output = _volume(cwd / "in.nii.gz"), cwd / "out.nii.gz"
    command = [*cli, "restore", "--bundle", bundle, str(source), str(output)]
    command += ["--device", "cpu", "--roi", "32", "32", "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_restore_and_batch_by_name(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "monai_rwkv.apps.cli"]
    result = _restore(cli, "ct_denoise", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {tmp_path / 'out.nii.gz'}"
    assert nib.load(tmp_path / "out.nii.gz").shape == (32, 32, 2)
    for command in ("restore", "batch"):
        args = [*cli, command, "--bundle", "ct_denose", "in.nii.gz", "out2.nii.gz"]
        result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 1
        expected = "error: ct_denose: no such bundle folder or bundle name (bundles: all_in_one, ct_denoise"
        assert result.stderr.startswith(expected)


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def _files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


@pytest.mark.slow
def test_wheel_carries_bundles(tmp_path: Path) -> None:
    """sdist -> wheel -> ``pip install --target``; the installed copy (not the editable checkout) runs the bundles."""
    source = _copy_sources(tmp_path / "src")
    bundle_files = _files(source / "bundles")  # a snapshot: what the wheel must hold
    assert all(size < MAX_FILE_BYTES for size in bundle_files.values()), bundle_files

    dist = tmp_path / "dist"
    build_sdist = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    sdist = dist / _run([sys.executable, "-c", build_sdist], source).stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(unpacked)], tmp_path)
    (wheel,) = dist.glob("monai_rwkv-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            info.filename.removeprefix("monai_rwkv/_bundles/"): info.file_size
            for info in archive.infolist()
            if info.filename.startswith("monai_rwkv/_bundles/")
        }
    assert packaged == bundle_files
    assert any(name.startswith("restore_rwkv_ct_denoise/models/") and name.endswith(".pt") for name in packaged)
    for part in ("configs/inference.json", "configs/metadata.json", "docs/README.md", "LICENSE", "sample/"):
        assert any(name.startswith(f"restore_rwkv_ct_denoise/{part}") for name in packaged), part

    target, elsewhere = tmp_path / "installed", tmp_path / "elsewhere"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], tmp_path)
    decoy = target / "bundles" / "restore_rwkv_decoy" / "configs"  # not a checkout: no setup.cfg beside it
    decoy.mkdir(parents=True)
    (decoy / "metadata.json").write_text("{}")
    elsewhere.mkdir()
    # PYTHONPATH comes before site-packages, where the editable install's finder sits at the end of sys.meta_path;
    # the checks below make sure the installed copy is the one imported.
    env = {**os.environ, "PYTHONPATH": str(target)}
    check = (
        "import json, monai_rwkv, monai_rwkv.bundles as b;"
        "print(json.dumps([monai_rwkv.__file__, str(b.bundles_dir()), str(b.find_bundle('ct_denoise')),"
        " str(b.metadata_schema()), b.bundle_names()]))"
    )
    package, found, ct, schema, names = json.loads(_run([sys.executable, "-c", check], elsewhere, env).stdout)
    installed = target / "monai_rwkv"
    assert Path(package) == installed / "__init__.py"
    assert Path(found) == installed / "_bundles" and Path(ct) == installed / "_bundles" / "restore_rwkv_ct_denoise"
    assert (Path(ct) / "configs" / "inference.json").is_file() and Path(schema).is_file()
    assert {"ct_denoise", "mri_sr"} <= set(names) and "decoy" not in names

    script = [str(target / "bin" / "monai-rwkv")]  # the console script pip wrote
    table = _run([*script, "bundles"], elsewhere, env).stdout.splitlines()
    assert [line.split()[0] for line in table] == ["name", *names]
    assert _run([*script, "bundles", "--path", "ct_denoise"], elsewhere, env).stdout.strip() == ct
    result = _restore(script, "ct_denoise", elsewhere, env)
    assert result.returncode == 0, result.stderr
    assert nib.load(elsewhere / "out.nii.gz").shape == (32, 32, 2)
