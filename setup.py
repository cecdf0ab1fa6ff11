"""
Build step of monai-rwkv (everything else is in setup.cfg).

The MONAI bundles live at the repository root, ``bundles/``, where ``python -m monai.bundle`` and the docs use them.
A built package carries a copy of that folder as ``monai_rwkv/_bundles`` so that ``monai-rwkv restore --bundle
ct_denoise`` and ``monai-rwkv bundles`` work wherever the wheel is installed (``monai_rwkv.bundles`` finds the
checkout's folder first, the installed copy otherwise). The copy is made into the build folder only, never into the
source tree; an editable install needs none (it imports from the checkout). ``MANIFEST.in`` puts ``bundles/`` in the
source distribution, so a wheel built from an sdist has them too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLES = ROOT / "bundles"
#: where the bundles go inside the package (``monai_rwkv.bundles`` looks there).
PACKAGE_BUNDLES = Path("monai_rwkv", "_bundles")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies ``bundles/`` to ``<build_lib>/monai_rwkv/_bundles``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not (BUNDLES.is_dir() and any(BUNDLES.glob("*/configs/metadata.json"))):
            raise RuntimeError(f"{BUNDLES}: no bundles to package (is this a complete checkout or sdist?)")
        target = Path(self.build_lib, PACKAGE_BUNDLES)
        if target.exists():
            shutil.rmtree(target)  # a bundle file removed since an earlier build must not survive in build/
        shutil.copytree(BUNDLES, target, ignore=SKIP)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        target = Path(self.build_lib, PACKAGE_BUNDLES)
        if target.is_dir():
            outputs += [os.fspath(p) for p in sorted(target.rglob("*")) if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithBundles})
