"""
MONAI-style transforms for medical image restoration: the degradation physics every modality shares, each an array
transform plus a dictionary version (``...d``).

- ``tomography``: the modality-free parallel-beam geometry (:class:`ParallelBeamGeometry`), projector
  (:func:`radon`, :class:`Project`) and filtered back-projection (:func:`iradon`, :class:`FilteredBackProject`),
  for CT, PET and any other measurement of line integrals;
- ``ct``: the low-dose CT simulator built on them (HU <-> attenuation, photon counts: :class:`LowDoseCT`,
  :class:`RandLowDoseCT`);
- ``kspace``: MRI k-space truncation (:class:`KSpaceTruncate`), the paper's MRI super-resolution degradation, and
  zero-filling onto a finer grid (:class:`KSpaceZeroFill`);
- ``counts``: count-domain Poisson noise with a flat background (:class:`RandPoissonCounts`), for PET and other
  counting measurements.

Also the pipeline pieces the bundles share: ``intensity`` (per-volume percentile scaling, :class:`ScaleToPercentile`,
and its exact inverse) and ``sampling`` (random axial, coronal or sagittal training slices, :class:`RandSliced`).
"""

from .counts import RandPoissonCounts, RandPoissonCountsd, poisson_counts
from .ct import (
    MU_WATER_PER_MM,
    LowDoseCT,
    LowDoseCTd,
    RandLowDoseCT,
    RandLowDoseCTd,
    hu_to_mu,
    mu_to_hu,
    simulate_low_dose_ct,
)
from .intensity import (
    SCALE_KEY,
    RestoreIntensityScale,
    RestoreIntensityScaled,
    ScaleToPercentile,
    ScaleToPercentiled,
    percentile_scale,
)
from .kspace import (
    KSpaceTruncate,
    KSpaceTruncated,
    KSpaceZeroFill,
    KSpaceZeroFilld,
    kspace_keep,
    truncate_kspace,
    zero_fill_kspace,
)
from .sampling import RandSliced, slice_candidates
from .tomography import (
    FILTER_WINDOWS,
    FilteredBackProject,
    FilteredBackProjectd,
    ParallelBeamGeometry,
    Project,
    Projectd,
    backproject,
    iradon,
    radon,
    ramp_filter,
)

__all__ = [
    "FILTER_WINDOWS",
    "FilteredBackProject",
    "FilteredBackProjectd",
    "KSpaceTruncate",
    "KSpaceTruncated",
    "KSpaceZeroFill",
    "KSpaceZeroFilld",
    "LowDoseCT",
    "LowDoseCTd",
    "MU_WATER_PER_MM",
    "ParallelBeamGeometry",
    "Project",
    "Projectd",
    "RandLowDoseCT",
    "RandLowDoseCTd",
    "RandPoissonCounts",
    "RandPoissonCountsd",
    "RandSliced",
    "RestoreIntensityScale",
    "RestoreIntensityScaled",
    "SCALE_KEY",
    "ScaleToPercentile",
    "ScaleToPercentiled",
    "backproject",
    "hu_to_mu",
    "iradon",
    "kspace_keep",
    "mu_to_hu",
    "percentile_scale",
    "poisson_counts",
    "radon",
    "ramp_filter",
    "simulate_low_dose_ct",
    "slice_candidates",
    "truncate_kspace",
    "zero_fill_kspace",
]
