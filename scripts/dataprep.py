"""
Shared steps of the data-preparation scripts: files from Debian packages (installed on demand), content hashes,
reproducible NIfTI bytes and atomic writes (a temporary name beside the target, flushed, then renamed).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib


class PrepareError(RuntimeError):
    """A clear, user-facing failure (missing package, malformed archive, ...)."""


def ensure_debian_file(path: Path, package: str, install: bool = True) -> Path:
    """Return ``path``, installing the Debian package that ships it first when it is missing.

    Raises:
        PrepareError: when the file is missing and cannot be installed (no apt-get, not root, no network, ...).
    """
    if path.is_file():
        return path
    if not install:
        raise PrepareError(f"{path} is missing; install it with: apt-get update && apt-get install {package}")
    if shutil.which("apt-get") is None:
        raise PrepareError(f"{path} is missing and apt-get is not available to install {package}.")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
        print("running:", " ".join(cmd), flush=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise PrepareError(
                f"'{' '.join(cmd)}' failed (exit {result.returncode}); apt-get needs root and access to a Debian "
                f"mirror.\n" + "\n".join(tail)
            )
    if not path.is_file():
        raise PrepareError(f"{package} is installed but {path} does not exist.")
    return path


def debian_package_version(package: str) -> str:
    """The installed version of a Debian package, or ``"version unknown"``."""
    if shutil.which("dpkg-query") is None:
        return "version unknown"
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False)
    return f"version {result.stdout.strip()}" if result.returncode == 0 and result.stdout.strip() else "version unknown"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def nifti_bytes(image: nib.Nifti1Image, compress: bool) -> bytes:
    """Serialise a NIfTI image; gzip with a zero timestamp so identical data gives identical bytes."""
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def _umask() -> int:
    """The process umask (read by setting it and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_hashed(folder: Path, name: str, data: bytes, files: dict[str, str]) -> None:
    """Write ``data`` atomically to ``folder / name`` and record its sha256 under ``files[name]``."""
    atomic_write(folder / name, data)
    files[name] = sha256_bytes(data)
