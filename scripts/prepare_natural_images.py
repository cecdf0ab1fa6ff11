#!/usr/bin/env python
"""Prepare grey-level photographs whose structure training maps onto CT-like slices (``RandNaturalCT``).

Source: the sample images that ship inside the scikit-image wheel (``skimage/data``; no download), the ones whose
docstrings release them into the public domain or under CC0 (listed in :data:`IMAGES` with their licence); colour
images become grey levels by the ITU-R BT.709 luma weights (0.2125 R + 0.7154 G + 0.0721 B). Photographs of people,
animals, textures, cells and the sky: edges, textures and shapes at every scale that no CT slice of ours holds.

Outputs, in ``--out`` (default ``data/natural`` under the repository, which git ignores):

* ``<name>.npy``: one float32 ``(H, W)`` image in [0, 1];
* ``LICENSE.txt``: each image's source and licence;
* ``manifest.json``: the files with their sha256 and shapes; written last, it marks the folder as complete.

Re-running is cheap and idempotent: when the manifest lists files that exist with matching hashes nothing is
written (``--force`` rewrites). Every file is written to a temporary name in the same folder and then renamed.

Usage::

    pip install scikit-image            # part of the dev extra
    python scripts/prepare_natural_images.py [--out data/natural]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataprep import PrepareError, sha256_file, write_hashed  # noqa: E402 - the shared helpers live beside this script

REPO = Path(__file__).resolve().parent.parent
FORMAT = 1

IMAGES = {  # skimage.data function: the licence its docstring states
    "astronaut": "public domain (NASA)",
    "brick": "CC0 (CC0Textures)",
    "camera": "CC0 (Lav Varshney)",
    "cell": "CC0",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "coins": "no known copyright restrictions (Brooklyn Museum)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "retina": "CC0 1.0",
    "rocket": "public domain (SpaceX)",
}
"""The images taken, by ``skimage.data`` name, with the licence stated in each one's docstring."""

LUMA = np.array([0.2125, 0.7154, 0.0721])
"""ITU-R BT.709 luma weights of red, green and blue."""


def grey_levels(image: np.ndarray) -> np.ndarray:
    """A float32 ``(H, W)`` image in [0, 1] from an 8-bit grey ``(H, W)`` or colour ``(H, W, 3|4)`` image."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image[..., :3] @ LUMA
    if image.ndim != 2:
        raise PrepareError(f"expected a grey or colour image, got shape {image.shape}")
    return (image / 255.0).clip(0.0, 1.0).astype(np.float32)


def _complete(out: Path) -> bool:
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        info = json.loads(manifest.read_text())
    except ValueError:
        return False
    files = info.get("files", {})
    return (
        info.get("format") == FORMAT
        and sorted(files) == sorted(f"{name}.npy" for name in IMAGES)
        and all((out / name).is_file() and sha256_file(out / name) == entry["sha256"] for name, entry in files.items())
    )


def prepare(out: Path, force: bool = False) -> dict:
    """Write the images, licence and manifest to ``out``; returns the manifest."""
    if not force and _complete(out):
        return json.loads((out / "manifest.json").read_text())
    try:
        import skimage  # noqa: PLC0415 - an optional dependency of this script only
        from skimage import data  # noqa: PLC0415
    except ImportError:
        raise PrepareError("scikit-image is not installed: pip install scikit-image (part of the dev extra)") from None
    hashes: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    for name in IMAGES:
        image = grey_levels(getattr(data, name)())
        buffer = io.BytesIO()
        np.save(buffer, image, allow_pickle=False)
        write_hashed(out, f"{name}.npy", buffer.getvalue(), hashes)
        shapes[f"{name}.npy"] = list(image.shape)
    lines = [
        f"Grey-level versions of sample images shipped with scikit-image {skimage.__version__} (skimage/data),",
        "converted by scripts/prepare_natural_images.py. Licences as stated in each image's skimage.data docstring:",
        "",
        *(f"{name}.npy: {licence}" for name, licence in IMAGES.items()),
        "",
    ]
    write_hashed(out, "LICENSE.txt", "\n".join(lines).encode(), {})
    manifest = {
        "format": FORMAT,
        "source": f"scikit-image {skimage.__version__}, skimage.data",
        "files": {name: {"sha256": hashes[name], "shape": shapes[name]} for name in hashes},
    }
    write_hashed(out, "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode(), {})
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "natural", help="output folder")
    parser.add_argument("--force", action="store_true", help="rewrite even when the folder is complete")
    args = parser.parse_args(argv)
    try:
        manifest = prepare(args.out, args.force)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(manifest['files'])} grey-level images ({manifest['source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
