"""
MONAI-style transforms for medical image restoration: the degradation physics every modality shares, each an array
transform plus a dictionary version (``...d``).

- ``ct``: parallel-beam projector (:func:`radon`), filtered back-projection (:func:`iradon`) and the low-dose CT
  simulator built on them (:class:`LowDoseCT`, :class:`RandLowDoseCT`);
- ``kspace``: MRI k-space truncation (:class:`KSpaceTruncate`), the paper's MRI super-resolution degradation;
- ``counts``: count-domain Poisson noise with a flat background (:class:`RandPoissonCounts`), for PET and other
  counting measurements.
"""

from .counts import RandPoissonCounts, RandPoissonCountsd, poisson_counts
from .ct import (
    FILTER_WINDOWS,
    MU_WATER_PER_MM,
    LowDoseCT,
    LowDoseCTd,
    ParallelBeamGeometry,
    RandLowDoseCT,
    RandLowDoseCTd,
    backproject,
    hu_to_mu,
    iradon,
    mu_to_hu,
    radon,
    ramp_filter,
    simulate_low_dose_ct,
)
from .kspace import KSpaceTruncate, KSpaceTruncated, kspace_keep, truncate_kspace

__all__ = [
    "FILTER_WINDOWS",
    "KSpaceTruncate",
    "KSpaceTruncated",
    "LowDoseCT",
    "LowDoseCTd",
    "MU_WATER_PER_MM",
    "ParallelBeamGeometry",
    "RandPoissonCounts",
    "RandPoissonCountsd",
    "RandLowDoseCT",
    "RandLowDoseCTd",
    "backproject",
    "hu_to_mu",
    "iradon",
    "kspace_keep",
    "mu_to_hu",
    "poisson_counts",
    "radon",
    "ramp_filter",
    "simulate_low_dose_ct",
    "truncate_kspace",
]
