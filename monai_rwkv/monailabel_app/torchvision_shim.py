"""
Lets torchvision's pure-Python part import when its C++ ops cannot load (the MONAI Label environment only).

MONAI Label imports ``torchvision.utils`` (``make_grid`` / ``save_image``). PyPI's torchvision 0.28.0 is the release
made for torch 2.13.0, but PyPI only has its CUDA build: its ``_C`` library links ``libtorch_cuda.so``, which the
CPU-only torch build of this project does not have. torchvision handles a missing ``_C`` itself (``torchvision.ops``
then raise "Couldn't load custom C++ ops"), except that ``torchvision/_meta_registrations.py`` unconditionally
registers fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``, and registering a fake kernel for an
operator that was never defined raises ``RuntimeError: operator torchvision::nms does not exist`` — so
``import torchvision`` fails.

:func:`install` adds an import hook that acts only on that one module, and only when torchvision reports that its
ops did not load (``torchvision.extension._has_ops()`` is False): while the module runs, ``torch.library.register_fake``
skips ``torchvision::`` operators that do not exist. Nothing is defined or registered in their place, so the result
is exactly torchvision without its C++ ops; with a torchvision whose ops load (a build for the CPU torch) the hook
does nothing. ``make monailabel-env`` installs the hook into ``.venv-monailabel`` with a ``.pth`` file
(``python -m monai_rwkv.monailabel_app.torchvision_shim --install``); tests/monailabel checks what it changes.

This module imports only the standard library until torchvision is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["PTH_NAME", "SKIPPED", "install", "install_pth"]

#: the module whose fake-kernel registrations fail without torchvision's C++ ops.
TARGET = "torchvision._meta_registrations"
#: sorts after setuptools' ``__editable__*.pth``, so that an editable ``monai_rwkv`` is importable when it runs.
PTH_NAME = "zz_monai_rwkv_torchvision_shim.pth"
#: the ``torchvision::`` operators whose fake registration was skipped (empty when the ops loaded).
SKIPPED: list[str] = []


def _op_exists(qualname: str) -> bool:
    import torch

    namespace, _, name = qualname.partition("::")
    try:
        getattr(getattr(torch.ops, namespace), name.split(".")[0])
    except (AttributeError, RuntimeError):
        return False
    return True


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        import torch.library
        import torchvision.extension

        if torchvision.extension._has_ops():
            self._loader.exec_module(module)
            return
        original = torch.library.register_fake

        def register_fake(op: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(op, str) and op.startswith("torchvision::") and not _op_exists(op):
                SKIPPED.append(op)
                return lambda fn: fn
            return original(op, *args, **kwargs)

        torch.library.register_fake = register_fake
        try:
            self._loader.exec_module(module)
        finally:
            torch.library.register_fake = original


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Add the import hook (idempotent; no effect on a torchvision that is already imported)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def install_pth(site_packages: str | Path | None = None) -> Path:
    """Write the ``.pth`` file that calls :func:`install` at interpreter start (default: this environment's)."""
    if site_packages is None:
        import sysconfig

        site_packages = sysconfig.get_paths()["purelib"]
    path = Path(site_packages) / PTH_NAME
    path.write_text("import monai_rwkv.monailabel_app.torchvision_shim as _shim; _shim.install()\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        raise SystemExit(f"usage: python -m {__name__} --install")
    print(install_pth())
