"""Make the bundled demo input: a simulated quarter-dose scan of the bundled full-dose CT sample.

The full-dose sample comes from scripts/prepare_ct_data.py (``--sample``, real test-split slices of the
InVesalius head CT). Each axial slice gets a projection-domain low-dose simulation
(monai_rwkv.transforms.RandLowDoseCT, dose fraction 0.25, fixed seed) and is stored as int16 HU with the
full-dose file's affine, as a scanner would store it.

Usage::

    python scripts/make_ct_demo_sample.py FULL_DOSE.nii.gz LOW_DOSE.nii.gz [--dose 0.25] [--seed 2024]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from monai_rwkv.data import sitk_load_image, write_nifti
from monai_rwkv.transforms import RandLowDoseCT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("full_dose")
    p.add_argument("low_dose")
    p.add_argument("--dose", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    image = sitk_load_image()(args.full_dose)  # (i, j, k) HU
    pixdim = [float(s) for s in image.pixdim[:2]]
    sim = RandLowDoseCT(dose_fraction=args.dose, spacing=(pixdim[1], pixdim[0]))
    sim.set_random_state(args.seed)
    volume = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    slices = [sim(volume[..., k].T).T for k in range(volume.shape[-1])]  # each slice as (rows j, cols i)
    low = torch.stack(slices, dim=-1).clamp(-1024, 3071)
    write_nifti(low, args.low_dose, image.affine, dtype="int16", overwrite=args.overwrite)
    print(f"wrote {args.low_dose}: dose fraction {args.dose}, seed {args.seed}, shape {tuple(low.shape)}")


if __name__ == "__main__":
    main()
