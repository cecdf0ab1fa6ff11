"""
MONAI-style transforms for medical image restoration: the degradation physics every modality shares, each an array
transform plus a dictionary version (``...d``).

- ``tomography``: the modality-free parallel-beam geometry (:class:`ParallelBeamGeometry`), projector
  (:func:`radon`, :class:`Project`) and filtered back-projection (:func:`iradon`, :class:`FilteredBackProject`),
  for CT, PET and any other measurement of line integrals;
- ``ct``: the low-dose CT simulator built on them (HU <-> attenuation, photon counts: :class:`LowDoseCT`,
  :class:`RandLowDoseCT`; the streaks of too few views alone: :func:`view_aliasing`);
- ``pet``: the PET low-count simulator built on them: an FDG brain phantom from tissue probability maps
  (:func:`fdg_phantom`, :class:`RandFDGPhantom`, :func:`attenuation_map`) and a 2-D acquisition with attenuation,
  Poisson counts, randoms/scatter and OSEM reconstruction (:func:`simulate_pet`, :class:`PETAcquisition`,
  :class:`RandPETAcquisition`);
- ``kspace``: MRI k-space truncation (:class:`KSpaceTruncate`), the paper's MRI super-resolution degradation, and
  zero-filling onto a finer grid (:class:`KSpaceZeroFill`);
- ``noise_level``: the noise level of each slice estimated from the image (:func:`estimate_noise_level`) and
  appended as an input channel (:class:`NoiseLevelMap`), for networks that adapt to the noise they are given;
- ``counts``: count-domain Poisson noise with a flat background (:class:`RandPoissonCounts`), for PET and other
  counting measurements;
- ``degradation``: a simulated degradation scaled by a random factor against its clean reference
  (:class:`RandDegradationScale`), for artefacts stronger than the simulator's range.

Also the pipeline pieces the bundles share: ``intensity`` (per-volume percentile scaling, :class:`ScaleToPercentile`,
its exact inverse, and :class:`KeepOutside` for input values no restoration should change), ``sampling`` (random
axial, coronal or sagittal training slices, :class:`RandSliced`, resampled to a random pixel size,
:class:`RandPixelSized`) and ``synthetic_ct`` (synthetic head, thorax and
abdomen CT slices in HU, :class:`RandSyntheticCT`, for training on more anatomy than the data holds) and
``natural_ct`` (CT-like slices from the structure of photographs, :class:`RandNaturalCT`).
"""

from .counts import RandPoissonCounts, RandPoissonCountsd, poisson_counts
from .ct import (
    MU_WATER_PER_MM,
    LowDoseCT,
    LowDoseCTd,
    RandLowDoseCT,
    RandLowDoseCTd,
    complete_views,
    hu_to_mu,
    mu_to_hu,
    reconstruction_kernel,
    simulate_low_dose_ct,
    view_aliasing,
)
from .degradation import RandDegradationScale, RandDegradationScaled, scale_degradation
from .intensity import (
    SCALE_KEY,
    KeepOutside,
    KeepOutsided,
    RestoreIntensityScale,
    RestoreIntensityScaled,
    ScaleFromMeta,
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
from .natural_ct import (
    NATURAL_CT_RIMS,
    TISSUE_LADDER_HU,
    RandNaturalCT,
    RandNaturalCTd,
    load_grey_image,
    natural_ct,
)
from .noise_level import NoiseLevelMap, NoiseLevelMapd, estimate_noise_level, noise_level_channel
from .pet import (
    FULL_COUNTS_PER_SLICE,
    LOW_COUNT_FRACTION,
    MAX_SUV,
    MU_WATER_511KEV_PER_MM,
    WHITE_MATTER_SUV,
    PETAcquisition,
    PETAcquisitiond,
    RandFDGPhantom,
    RandPETAcquisition,
    RandPETAcquisitiond,
    attenuation_map,
    fdg_phantom,
    pet_geometry,
    simulate_pet,
)
from .sampling import RandPixelSized, RandSliced, slice_candidates
from .synthetic_ct import SYNTHETIC_CT_REGIONS, RandGeneratedSliced, RandSyntheticCT, RandSyntheticCTd, synthetic_ct
from .tomography import (
    FILTER_WINDOWS,
    TOMOGRAPHY_BACKENDS,
    FilteredBackProject,
    FilteredBackProjectd,
    ParallelBeamGeometry,
    Project,
    Projectd,
    backproject,
    filter_window,
    iradon,
    radon,
    ramp_filter,
)

__all__ = [
    "NATURAL_CT_RIMS",
    "TISSUE_LADDER_HU",
    "RandNaturalCT",
    "RandNaturalCTd",
    "RandGeneratedSliced",
    "load_grey_image",
    "natural_ct",
    "estimate_noise_level",
    "noise_level_channel",
    "FILTER_WINDOWS",
    "TOMOGRAPHY_BACKENDS",
    "FULL_COUNTS_PER_SLICE",
    "FilteredBackProject",
    "FilteredBackProjectd",
    "KSpaceTruncate",
    "KSpaceTruncated",
    "KSpaceZeroFill",
    "KSpaceZeroFilld",
    "LOW_COUNT_FRACTION",
    "LowDoseCT",
    "LowDoseCTd",
    "MAX_SUV",
    "MU_WATER_511KEV_PER_MM",
    "MU_WATER_PER_MM",
    "NoiseLevelMap",
    "NoiseLevelMapd",
    "PETAcquisition",
    "PETAcquisitiond",
    "ParallelBeamGeometry",
    "Project",
    "Projectd",
    "RandDegradationScale",
    "RandDegradationScaled",
    "RandFDGPhantom",
    "RandLowDoseCT",
    "RandLowDoseCTd",
    "RandPETAcquisition",
    "RandPETAcquisitiond",
    "RandPoissonCounts",
    "RandPoissonCountsd",
    "RandPixelSized",
    "RandSliced",
    "RandSyntheticCT",
    "RandSyntheticCTd",
    "SYNTHETIC_CT_REGIONS",
    "KeepOutside",
    "KeepOutsided",
    "RestoreIntensityScale",
    "RestoreIntensityScaled",
    "SCALE_KEY",
    "ScaleFromMeta",
    "ScaleToPercentile",
    "ScaleToPercentiled",
    "WHITE_MATTER_SUV",
    "attenuation_map",
    "backproject",
    "complete_views",
    "fdg_phantom",
    "filter_window",
    "hu_to_mu",
    "iradon",
    "kspace_keep",
    "mu_to_hu",
    "percentile_scale",
    "pet_geometry",
    "poisson_counts",
    "radon",
    "ramp_filter",
    "reconstruction_kernel",
    "scale_degradation",
    "simulate_low_dose_ct",
    "simulate_pet",
    "slice_candidates",
    "synthetic_ct",
    "truncate_kspace",
    "view_aliasing",
    "zero_fill_kspace",
]
