"""``python -m monai_rwkv.monailabel_app DIR``: make DIR a MONAI Label app folder for this package's app."""

from __future__ import annotations

import sys

from monai_rwkv.monailabel_app import write_app

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        raise SystemExit("usage: python -m monai_rwkv.monailabel_app APP_DIR")
    try:
        print(write_app(sys.argv[1]))
    except (OSError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
