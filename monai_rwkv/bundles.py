"""
The MONAI bundles that come with ``monai_rwkv``: where they are, their names, and the metadata schema.

The bundles live at the repository root (``bundles/<folder>/configs``, ``models``, ``docs``, ...). A wheel carries
a copy of that folder as ``monai_rwkv/_bundles`` (copied by the build step in ``setup.py``), so they can be used by
name wherever the package is installed:

* in a source checkout (an editable install, or ``PYTHONPATH`` on the checkout) the checkout's ``bundles/`` is used,
  so edits to a bundle take effect at once;
* otherwise the installed copy ``monai_rwkv/_bundles`` is used.

A bundle's name is its folder name (``restore_rwkv_ct_denoise``) or that name without the ``restore_rwkv_`` prefix
(``ct_denoise``). This module needs only the standard library, so listing bundles loads neither torch nor MONAI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLE_PREFIX",
    "BundleInfo",
    "BundleNotFoundError",
    "TASKS_KEY",
    "bundle_names",
    "bundles_dir",
    "find_bundle",
    "list_bundles",
    "metadata_schema",
    "served_tasks",
    "short_name",
]

#: folder-name prefix of this project's bundles; a bundle's short name is its folder name without it.
BUNDLE_PREFIX = "restore_rwkv_"
#: the inference config key of a bundle that serves several tasks with one network: ``{task: {...}}``.
TASKS_KEY = "tasks"
#: the schema of ``configs/metadata.json`` written by this project (see ``bundles/schema``), relative to the bundles.
SCHEMA_FILE = Path("schema") / "meta_schema_monai_rwkv.json"

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "_bundles"


class BundleNotFoundError(LookupError):
    """No bundle of that name or at that path (the message is ``<what was asked>: <problem>``)."""


@dataclass(frozen=True)
class BundleInfo:
    """A bundle and the fields of its ``configs/metadata.json`` that identify it."""

    name: str
    """short name: the folder name without ``restore_rwkv_``."""
    folder: str
    """folder name, also accepted as a name."""
    path: Path
    version: str
    task: str
    title: str
    """the metadata's display ``name``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "version": self.version,
            "task": self.task,
            "title": self.title,
            "path": os.fspath(self.path),
            "weights": (self.path / "models" / "model.pt").is_file(),
        }


def _checkout_bundles() -> Path | None:
    """``bundles/`` of the source checkout this package was imported from, if it was imported from one."""
    root = _PACKAGE.parent
    if (root / "bundles").is_dir() and any((root / marker).is_file() for marker in ("setup.cfg", "pyproject.toml")):
        return root / "bundles"
    return None


def bundles_dir() -> Path:
    """
    The folder that holds the bundles: the source checkout's ``bundles/`` when the package is imported from a
    checkout, otherwise the copy installed with the package (``monai_rwkv/_bundles``).

    Raises:
        BundleNotFoundError: neither exists (e.g. a wheel built without the bundles).
    """
    checkout = _checkout_bundles()
    if checkout is not None:
        return checkout
    if _INSTALLED.is_dir():
        return _INSTALLED
    raise BundleNotFoundError(
        f"{_INSTALLED}: no bundles installed with monai_rwkv (and {_PACKAGE.parent / 'bundles'} is not a checkout's)"
    )


def short_name(folder: str) -> str:
    """``restore_rwkv_ct_denoise`` -> ``ct_denoise`` (other names are returned unchanged)."""
    return folder[len(BUNDLE_PREFIX) :] if folder.startswith(BUNDLE_PREFIX) and folder != BUNDLE_PREFIX else folder


def _info(path: Path) -> BundleInfo:
    try:
        meta = json.loads((path / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleNotFoundError(f"{path}: unreadable configs/metadata.json ({e})") from None
    if not isinstance(meta, dict):
        raise BundleNotFoundError(f"{path}: configs/metadata.json is not a JSON object")
    return BundleInfo(
        name=short_name(path.name),
        folder=path.name,
        path=path,
        version=str(meta.get("version", "")),
        task=str(meta.get("task", "")),
        title=str(meta.get("name", path.name)),
    )


def list_bundles(root: str | os.PathLike | None = None) -> list[BundleInfo]:
    """
    The bundles under ``root`` (default: :func:`bundles_dir`), sorted by name: every folder with a
    ``configs/metadata.json`` (other folders, such as ``schema``, are not bundles).
    """
    folder = Path(root) if root is not None else bundles_dir()
    return [_info(p.parent.parent) for p in sorted(folder.glob("*/configs/metadata.json"))]


def bundle_names(root: str | os.PathLike | None = None) -> list[str]:
    """Short names of the bundles (what ``--bundle`` accepts besides folder names and paths)."""
    return [info.name for info in list_bundles(root)]


def _is_bundle(path: Path) -> bool:
    return (path / "configs" / "inference.json").is_file()


def _looks_like_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and not any(sep in text for sep in ("/", os.sep, os.altsep or "/"))


def find_bundle(bundle: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """
    The folder of a bundle given by path or by name.

    In order: a folder with ``configs/inference.json`` is that bundle (returned as given); a name without a path
    separator is looked up among :func:`list_bundles` by short name (``ct_denoise``) or folder name
    (``restore_rwkv_ct_denoise``). So a bundle folder of the same name in the current directory wins over an
    installed bundle, and any other folder of that name does not hide it.

    Raises:
        BundleNotFoundError: ``"<bundle>: not a bundle (no configs/inference.json)"`` for an existing path that is
            not a bundle, ``"<bundle>: no such bundle folder or bundle name (bundles: ...)"`` otherwise.
    """
    path = Path(bundle).expanduser()
    if _is_bundle(path):
        return path
    text = os.fspath(bundle)
    available: list[BundleInfo] = []
    if _looks_like_name(text):
        try:
            available = list_bundles(root)
        except BundleNotFoundError:
            available = []
        for info in available:
            if text in (info.name, info.folder):
                if not _is_bundle(info.path):
                    raise BundleNotFoundError(f"{info.path}: not a bundle (no configs/inference.json)")
                return info.path
    if path.exists():
        raise BundleNotFoundError(f"{text}: not a bundle (no configs/inference.json)")
    if not _looks_like_name(text):
        raise BundleNotFoundError(f"{text}: no such bundle folder")
    names = ", ".join(info.name for info in available) or "none installed"
    raise BundleNotFoundError(f"{text}: no such bundle folder or bundle name (bundles: {names})")


def metadata_schema() -> Path:
    """
    This project's JSON schema for ``configs/metadata.json``, written from the MONAI Bundle Specification (not the
    official file the metadata's ``"schema"`` URL names). Offline check of a bundle::

        python -m monai.bundle verify_metadata --meta_file <bundle>/configs/metadata.json --filepath <this file>
    """
    return bundles_dir() / SCHEMA_FILE


def served_tasks(config: Any) -> list[str]:
    """
    The tasks that a bundle's inference config serves with one network (the keys of its ``"tasks"`` entry, as in the
    all-in-one bundle), ``[]`` for a bundle of one task. ``config``: the raw config as a mapping, or a
    ``monai.bundle.ConfigParser`` that has read it (both answer ``.get(key)``).
    """
    return list(config.get(TASKS_KEY) or {})
