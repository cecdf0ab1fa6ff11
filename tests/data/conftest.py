"""Fixtures: real DICOM / NIfTI test files copied to a temporary folder (the originals are never touched)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nibabel
import pytest
from pydicom.data import get_testdata_file

CT5N = "dicomdirtests/98892001/CT5N"  # 5-slice CT, 16x16, 2.5 mm
CT2 = "dicomdirtests/77654033/CT2"  # 4 CT slices with a 202.5 mm gap
MR700 = "dicomdirtests/98892003/MR700"  # 7 radial (non-parallel) oblique MR slices
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return path


def copy_series(name: str, dest: Path) -> Path:
    """Copy a pydicom test series folder (or file) into ``dest`` and return the copy."""
    src = pydicom_file(name)
    if os.path.isdir(src):
        return Path(shutil.copytree(src, dest))
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(src, dest / os.path.basename(src)))


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (or of ``path`` itself)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture
def ct5n(tmp_path: Path) -> Path:
    return copy_series(CT5N, tmp_path / "ct5n")


@pytest.fixture
def ct2(tmp_path: Path) -> Path:
    return copy_series(CT2, tmp_path / "ct2")


@pytest.fixture
def mr700(tmp_path: Path) -> Path:
    return copy_series(MR700, tmp_path / "mr700")
