"""Side-by-side PNG of one axial slice: low-dose input, restoration, full-dose reference (CT window).

Usage::

    python scripts/make_figure.py LOW.nii.gz RESTORED.nii.gz REFERENCE.nii.gz OUT.png [--slice K]
        [--window -160 240]

Pillow (installed with scikit-image, a dev dependency) writes the PNG; each panel is the slice as rows j and
columns i, windowed to [low, high] HU and scaled to 8 bits, with no interpolation.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from monai_rwkv.data import sitk_load_image


def load_slice(path: str, k: int) -> np.ndarray:
    return np.asarray(sitk_load_image()(path), dtype=np.float32)[..., k].T  # (rows j, columns i)


def to_uint8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return (np.clip((hu - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("low")
    p.add_argument("restored")
    p.add_argument("reference")
    p.add_argument("out")
    p.add_argument("--slice", type=int, default=0)
    p.add_argument("--window", type=float, nargs=2, default=(-160.0, 240.0))
    p.add_argument("--labels", nargs=3, default=("quarter dose", "restored", "full dose"))
    args = p.parse_args()
    panels = [to_uint8(load_slice(f, args.slice), args.window) for f in (args.low, args.restored, args.reference)]
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    canvas = Image.new("L", (strip.width, strip.height + 16), 0)
    canvas.paste(strip, (0, 16))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(args.labels):
        draw.text((i * panels[0].shape[1] + 4, 2), label, fill=255)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
