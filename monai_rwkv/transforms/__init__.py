"""MONAI-style transforms for medical image restoration."""

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

__all__ = [
    "FILTER_WINDOWS",
    "LowDoseCT",
    "LowDoseCTd",
    "MU_WATER_PER_MM",
    "ParallelBeamGeometry",
    "RandLowDoseCT",
    "RandLowDoseCTd",
    "backproject",
    "hu_to_mu",
    "iradon",
    "mu_to_hu",
    "radon",
    "ramp_filter",
    "simulate_low_dose_ct",
]
