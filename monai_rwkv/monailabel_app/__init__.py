"""
A MONAI Label app that serves this project's bundles (see docs/monailabel.md).

``main.py`` (the ``MONAILabelApp`` that ``monailabel start_server --app`` loads) and ``lib/`` need MONAI Label; this
package's ``__init__`` does not import it, and nothing else in ``monai_rwkv`` imports this package.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["APP_DIR", "write_app"]

#: the app folder (``main.py`` + ``lib/``): pass it to ``monailabel start_server --app``.
APP_DIR = Path(__file__).resolve().parent

_STUB = '''"""MONAI Label app folder: the Restore-RWKV app of the installed monai_rwkv (see docs/monailabel.md)."""

from monai_rwkv.monailabel_app.main import RestoreRWKVApp  # noqa: F401
'''


def write_app(dest: str | os.PathLike) -> Path:
    """
    Make ``dest`` an app folder for ``monailabel start_server --app dest``: a ``main.py`` that imports this package's
    app. ``start_server`` creates ``model/``, ``logs/``... in the app folder, so this keeps them out of the installed
    package. An existing ``main.py`` that is not this stub is left alone (``FileExistsError``).
    """
    dest = Path(dest)
    main = dest / "main.py"
    if main.exists() and main.read_text(encoding="utf-8") != _STUB:
        raise FileExistsError(f"{main}: exists and is not the monai_rwkv app stub")
    dest.mkdir(parents=True, exist_ok=True)
    main.write_text(_STUB, encoding="utf-8")
    return dest.absolute()
