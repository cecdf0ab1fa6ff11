"""Low-dose CT simulation in pure PyTorch (CPU and CUDA), built on the shared tomography of
:mod:`monai_rwkv.transforms.tomography` (geometry, :func:`radon`, :func:`iradon`).

The simulator follows the usual projection-domain recipe for making low-dose CT from a normal-dose image:

1. HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (1/mm), negative values clipped to 0 (air).
2. Forward projection (Joseph's method, see :func:`radon`): line integrals ``p`` (dimensionless) of parallel rays,
   or of the rays of a fan-beam scanner (:mod:`~monai_rwkv.transforms.fanbeam`, rebinned to parallel rays after
   step 4).
3. Expected photon counts ``I = I0 * dose_fraction * exp(-p)``; Poisson quantum noise plus Gaussian electronic
   noise of variance ``electronic_noise_var`` (counts^2); counts clamped to at least ``min_counts``.
4. ``p_noisy = -log(I_noisy / (I0 * dose_fraction))``.
5. Filtered back-projection (:func:`iradon`): a ramp filter with a window, applied by FFT with zero padding,
   followed by a linearly interpolating pixel-driven back-projection.
6. ``HU = 1000 * (mu / mu_water - 1)``.

:class:`RandLowDoseCT` may then strengthen the scan's view-aliasing streaks (``streak_scale``): the streaks alone
are the noise-free reconstruction with the scan's views minus the view-complete one (:func:`view_aliasing`).

The geometry and its conventions are those of :class:`ParallelBeamGeometry` (see the tomography module). Measured
in HU with its defaults: noise-free projection + FBP of a real 256 x 256 head slice (0.957 mm) is within about 12 HU
RMSE with the default half-pixel detector bins (27 HU with one bin per pixel); on the 128 x 128 test head phantom
the default ``cutoff=1`` gives 22 HU RMSE, 9.7 HU of ringing far from the skull edges and aliased, whiter noise,
``cutoff=0.5`` (the image Nyquist frequency) 39 HU RMSE, 3.8 HU of ringing and about half the noise std.

The noise comes from torch generators; the random streams of CPU and CUDA generators differ, so a seed reproduces
the noise only on the same device type (on the CPU whichever vector instructions it has: the simulation runs in
float64, :data:`SIMULATION_DTYPE`). A 256 x 256 slice takes about 0.5-1 s on one CPU thread (see the tomography module).
Simulate whole slices, so that every ray crosses the whole object, then crop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Optional, Union

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms.transform import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, ensure_tuple
from monai.utils.misc import MAX_SEED

from ._util import FWHM_TO_SIGMA, gaussian_blur, value_range
from .counts import _stream_seed
from .fanbeam import FanBeamGeometry, fan_project, rebin_to_parallel
from .tomography import FILTER_WINDOWS, ParallelBeamGeometry, _pair, filter_window, iradon, radon
from .wrappers import ArrayWrapperd, RandArrayWrapperd

__all__ = [
    "BEAMS",
    "VIEW_SAMPLINGS",
    "MU_WATER_PER_MM",
    "SIMULATION_DTYPE",
    "hu_to_mu",
    "mu_to_hu",
    "simulate_low_dose_ct",
    "complete_views",
    "view_aliasing",
    "reconstruction_kernel",
    "RandLowDoseCT",
    "RandLowDoseCTd",
    "LowDoseCT",
    "LowDoseCTd",
]

BEAMS = ("parallel", "fan")
"""Scan geometries of the simulator: parallel beam over 180 degrees, or an equiangular fan beam over 360 degrees
rebinned to parallel rays before reconstruction (:mod:`monai_rwkv.transforms.fanbeam`)."""

VIEW_SAMPLINGS = ("uniform", "log-uniform")
"""How :class:`RandLowDoseCT` draws ``n_views`` from a range: every integer equally likely, or log-uniformly (each
octave of view counts equally likely, so that the few-view scans with the strongest streaks are drawn more often)."""

SIMULATION_DTYPE = torch.float64
"""The dtype :func:`simulate_low_dose_ct` computes in, whatever its input's. ``torch.poisson`` draws a
rate-dependent number of uniforms per count, so one last-bit change of one expected count re-draws the noise of
every later bin; and float32 results differ in the last bit between CPU instruction sets (a 256 x 256 head slice
came out different with ``ATEN_CPU_CAPABILITY=default`` than with ``avx2``). In float64 the same seed gives the
same scan on every CPU tested (``tests/transforms/test_ct.py``), at up to about 30 % more simulation time."""

MU_WATER_PER_MM = 0.0192
"""Linear attenuation of water in 1/mm at an effective energy of about 70 keV (NIST XCOM: 0.193 cm^2/g)."""


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER_PER_MM, clip_negative: bool = True) -> torch.Tensor:
    """Convert Hounsfield units to linear attenuation in 1/mm: ``mu = mu_water * (1 + HU / 1000)``.

    With ``clip_negative`` values below -1000 HU (e.g. the -1024 padding of many scanners) become 0 (air).
    """
    mu = mu_water * (1.0 + hu / 1000.0)
    return mu.clamp_min(0.0) if clip_negative else mu


def mu_to_hu(mu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Convert linear attenuation in 1/mm to Hounsfield units: ``HU = 1000 * (mu / mu_water - 1)``."""
    return 1000.0 * (mu / mu_water - 1.0)


def simulate_low_dose_ct(
    image_hu: torch.Tensor,
    geometry: Union[ParallelBeamGeometry, FanBeamGeometry],
    dose_fraction: float = 0.25,
    incident_photons: float = 2e6,
    electronic_noise_var: float = 10.0,
    min_counts: float = 1.0,
    window: str = "ram-lak",
    cutoff: float = 1.0,
    mu_water: float = MU_WATER_PER_MM,
    generator: Optional[torch.Generator] = None,
    detector_blur_fwhm: float = 0.0,
) -> torch.Tensor:
    """Simulate a low-dose acquisition of ``image_hu`` and reconstruct it (see the module docstring).

    Args:
        image_hu: ``(..., H, W)`` float tensor in HU.
        geometry: the scan geometry (pixel spacing included): parallel beam, or fan beam (the counts are drawn per
            fan ray, then the noisy line integrals are rebinned to parallel rays and reconstructed).
        dose_fraction: dose relative to the reference (``incident_photons``); e.g. 0.25 for quarter dose.
        incident_photons: ``I0``, expected photons per detector bin per view at full dose (unattenuated ray).
            The noise depends on it and on the geometry; the default 2e6 with the default geometry and filter
            gives a noise std of about 13 HU (full dose) and 27 HU (quarter dose) inside the brain of the
            0.957 mm InVesalius head slices (see scripts/prepare_ct_data.py).
        electronic_noise_var: variance of the additive Gaussian electronic noise, in counts^2 (0 disables it).
        min_counts: counts are clamped to at least this (photons) before the log.
        window: ramp filter window, one of :data:`FILTER_WINDOWS`.
        cutoff: filter cutoff as a fraction of the detector Nyquist frequency (see :func:`iradon`).
        mu_water: attenuation of water in 1/mm.
        generator: random generator on ``image_hu.device``; None uses torch's global one.
        detector_blur_fwhm: FWHM in detector bins of a Gaussian blur of the line integrals along the detector
            (detector cross-talk and focal-spot size: the reconstruction is softer, the noise is not), 0 for none.

    Returns:
        ``(..., H, W)`` reconstructed low-dose image in HU, same dtype and device as ``image_hu``; computed in
        float64 whatever the input dtype (see :data:`SIMULATION_DTYPE`).
    """
    if dose_fraction <= 0 or incident_photons <= 0 or min_counts <= 0 or electronic_noise_var < 0:
        raise ValueError("dose_fraction, incident_photons and min_counts must be > 0, electronic_noise_var >= 0.")
    if not detector_blur_fwhm >= 0:
        raise ValueError(f"detector_blur_fwhm must be >= 0, got {detector_blur_fwhm!r}.")
    blank = incident_photons * dose_fraction
    sino = _line_integrals(hu_to_mu(image_hu.to(SIMULATION_DTYPE), mu_water), geometry, detector_blur_fwhm)
    expected = blank * torch.exp(-sino)
    counts = torch.poisson(expected, generator=generator)
    if electronic_noise_var > 0:
        noise = torch.randn(counts.shape, generator=generator, device=counts.device, dtype=counts.dtype)
        counts = counts + math.sqrt(electronic_noise_var) * noise
    noisy_sino = -torch.log(counts.clamp_min(min_counts) / blank)
    return mu_to_hu(_fbp(noisy_sino, geometry, window, cutoff), mu_water).to(image_hu.dtype)


def _line_integrals(
    mu: torch.Tensor, geometry: Union[ParallelBeamGeometry, FanBeamGeometry], detector_blur_fwhm: float
) -> torch.Tensor:
    """The (detector-blurred) line integrals of ``mu`` along the rays of ``geometry`` (fan rays not yet rebinned)."""
    if isinstance(geometry, FanBeamGeometry):
        fine = ParallelBeamGeometry.create(geometry.image_shape, geometry.spacing)
        sino = fan_project(radon(mu, fine), fine, geometry)
    else:
        sino = radon(mu, geometry)
    return _detector_blur(sino, detector_blur_fwhm)


def _fbp(
    sino: torch.Tensor, geometry: Union[ParallelBeamGeometry, FanBeamGeometry], window: str, cutoff: float
) -> torch.Tensor:
    """Filtered back-projection of line integrals of ``geometry`` (fan-beam ones rebinned to parallel rays first)."""
    if isinstance(geometry, FanBeamGeometry):
        sino, geometry = rebin_to_parallel(sino, geometry), geometry.parallel()
    return iradon(sino, geometry, window, cutoff)


def complete_views(geometry: Union[ParallelBeamGeometry, FanBeamGeometry]) -> int:
    """The view count of a view-complete scan of ``geometry``'s image: the default of its ``create`` (parallel beam:
    ``pi / 2`` times the larger image side, rounded up to a multiple of 8; fan beam: twice that over 360 degrees)."""
    views = ParallelBeamGeometry.create(geometry.image_shape, geometry.spacing).n_views
    return 2 * views if isinstance(geometry, FanBeamGeometry) else views


def view_aliasing(
    image_hu: torch.Tensor,
    geometry: Union[ParallelBeamGeometry, FanBeamGeometry],
    window: str = "ram-lak",
    cutoff: float = 1.0,
    detector_blur_fwhm: float = 0.0,
    mu_water: float = MU_WATER_PER_MM,
) -> torch.Tensor:
    """
    The view-aliasing streaks of a scan of ``image_hu`` with too few views: its noise-free reconstruction with
    ``geometry``'s views minus that with the view-complete count (:func:`complete_views`), the same detector, beam
    and kernel. Without noise, it isolates the streaks that the missing views add.

    Args:
        image_hu: ``(..., H, W)`` float tensor in HU.
        geometry: the scan geometry; a view-complete (or denser) one has no aliasing and gives zeros.
        window, cutoff, detector_blur_fwhm, mu_water: as for :func:`simulate_low_dose_ct`.

    Returns:
        ``(..., H, W)`` difference in HU, ``image_hu``'s dtype and device (computed in :data:`SIMULATION_DTYPE`).
    """
    complete = complete_views(geometry)
    if geometry.n_views >= complete:
        return torch.zeros_like(image_hu)
    mu = hu_to_mu(image_hu.to(SIMULATION_DTYPE), mu_water)
    dense = dataclasses.replace(geometry, n_views=complete)
    sparse_fbp = _fbp(_line_integrals(mu, geometry, detector_blur_fwhm), geometry, window, cutoff)
    dense_fbp = _fbp(_line_integrals(mu, dense, detector_blur_fwhm), dense, window, cutoff)
    return ((sparse_fbp - dense_fbp) * (1000.0 / mu_water)).to(image_hu.dtype)


def _detector_blur(sinogram: torch.Tensor, fwhm: float) -> torch.Tensor:
    """A Gaussian blur of ``fwhm`` bins along the last (detector) axis, edges replicated; 0 returns the input."""
    return gaussian_blur(sinogram, [fwhm * FWHM_TO_SIGMA]) if fwhm > 0 else sinogram


def reconstruction_kernel(
    image: torch.Tensor,
    spacing: Sequence[float],
    det_spacing: float,
    window: str = "ram-lak",
    cutoff: float = 1.0,
    detector_blur_fwhm: float = 0.0,
) -> torch.Tensor:
    """``image`` as a noise-free filtered back-projection with infinitely many views would reconstruct it.

    By the Fourier slice theorem, filtered back-projection with a windowed ramp multiplies the image's 2-D spectrum
    at radial frequency ``rho`` by the window ``W(rho * det_spacing)`` (:func:`filter_window`) and, with a Gaussian
    detector blur, by its transfer function: this applies that response by FFT (edges replicated over half the
    image on every side, so nothing wraps around). Ram-Lak at a cutoff above the image's frequencies without blur
    is the identity and returns ``image`` itself. Used as the full-dose target of the same reconstruction kernel
    as a simulated low-dose scan (:class:`RandLowDoseCTd`'s ``kernel_keys``), it leaves out the discretisation
    blur of the simulator's own projector (about 12 HU RMSE on a head slice).

    Args:
        image: ``(..., H, W)`` float tensor (any units: the response is 1 at zero frequency).
        spacing: pixel size ``(dy, dx)`` in mm.
        det_spacing: detector bin width of the reconstruction in mm.
        window, cutoff: the filter window (:data:`FILTER_WINDOWS`) and its cutoff as a fraction of the detector
            Nyquist frequency, as for :func:`simulate_low_dose_ct`.
        detector_blur_fwhm: FWHM in detector bins of the Gaussian blur of the line integrals, 0 for none.

    Returns:
        ``(..., H, W)`` tensor of the dtype and device of ``image``.
    """
    dy, dx = _pair(spacing, "spacing")
    if not det_spacing > 0 or not 0 < cutoff <= 1 or not detector_blur_fwhm >= 0:
        raise ValueError(
            f"need det_spacing > 0, cutoff in (0, 1] and detector_blur_fwhm >= 0, got {det_spacing!r}, {cutoff!r}, "
            f"{detector_blur_fwhm!r}."
        )
    highest = math.hypot(0.5 / dy, 0.5 / dx) * det_spacing  # cycles per bin at the image's corner frequency
    if window == "ram-lak" and highest <= 0.5 * cutoff and detector_blur_fwhm == 0:
        return image
    h, w = image.shape[-2:]
    ph, pw = h // 2, w // 2
    flat = image.reshape(-1, 1, h, w)
    padded = torch.nn.functional.pad(flat, (pw, pw, ph, ph), mode="replicate")
    size = padded.shape[-2:]
    work = torch.float64 if image.dtype == torch.float64 else torch.float32
    fy = torch.fft.fftfreq(size[0], d=dy, dtype=work, device=image.device)[:, None]
    fx = torch.fft.rfftfreq(size[1], d=dx, dtype=work, device=image.device)[None, :]
    rho = torch.sqrt(fy**2 + fx**2) * det_spacing  # cycles per detector bin
    response = filter_window(rho, window, cutoff)
    if detector_blur_fwhm > 0:
        sigma = detector_blur_fwhm * FWHM_TO_SIGMA  # bins
        response = response * torch.exp(-2.0 * (math.pi * sigma * rho) ** 2)
    spectrum = torch.fft.rfft2(padded.to(work)) * response
    out = torch.fft.irfft2(spectrum, s=size)[..., ph : ph + h, pw : pw + w]
    return out.reshape(image.shape).to(image.dtype)


def _image_spacing(img: NdarrayOrTensor, spacing: Union[float, Sequence[float], None]) -> tuple[float, float]:
    """Pixel spacing ``(dy, dx)`` in mm: the argument, else a MetaTensor's first two ``pixdim``, else 1 mm."""
    if spacing is not None:
        return _pair(spacing, "spacing")
    if isinstance(img, MetaTensor):
        pixdim = [float(p) for p in img.pixdim[:2]]
        if len(pixdim) == 2 and min(pixdim) > 0:
            return pixdim[0], pixdim[1]
    return 1.0, 1.0


def _working_tensor(img: NdarrayOrTensor) -> tuple[torch.Tensor, torch.dtype]:
    """``img`` as a plain tensor (float64 for float64 input, else float32; :func:`simulate_low_dose_ct` computes in
    :data:`SIMULATION_DTYPE` whatever it gets) and the output dtype (the input's if floating point, else float32)."""
    data = convert_to_tensor(img, track_meta=False)
    out_dtype = data.dtype if data.is_floating_point() else torch.float32
    return data.to(torch.float64 if out_dtype == torch.float64 else torch.float32), out_dtype


class RandLowDoseCT(RandomizableTransform):
    """Simulate a low-dose CT scan of a normal-dose image in HU (projection-domain Poisson + electronic noise).

    Input: a 2-D slice ``(H, W)``, channel-first ``(C, H, W)`` or a batch ``(B, C, H, W)`` in HU, as a numpy array,
    torch tensor or MetaTensor on any device; the last two dimensions are always the slice. Output: the simulated
    low-dose reconstruction in HU, of the same shape and kind (numpy in, numpy out), float (float32 for integer
    input). All channels and batch items share one dose and scanner but get independent noise.

    A scanner, not only a dose: ``dose_fraction``, ``incident_photons``, ``electronic_noise_var``, ``n_views``,
    ``window``, ``cutoff``, ``detector_blur_fwhm`` and ``beam`` each take one value or a range (a ``(low, high)``
    pair; a sequence of windows or beams), drawn per call by :meth:`randomize` (the photons log-uniformly, the views
    as integers as ``views_sampling`` says, the window and the beam uniformly from their lists, the rest
    uniformly), so that training sees the grain and streaks of many dose levels, detectors, geometries and
    reconstruction kernels. The values of the last draw are in :attr:`params`.

    The noise comes from ``torch`` generators seeded from this transform's ``self.R``, so
    ``set_random_state(seed)`` makes the output deterministic on a given device type. :meth:`randomize` draws the
    settings (only those given as ranges, in the order of the arguments) and a seed; each call then takes the next
    noise stream of that seed (stream 0 is the seed itself), so with ``randomize=False`` the settings are kept and
    the noise is new, as :class:`RandLowDoseCTd` uses it for its keys.

    Args:
        prob: probability of applying the transform.
        dose_fraction: relative dose, or a ``(low, high)`` range.
        incident_photons: ``I0``, photons per detector bin per view at full dose (default 2e6: about 13 HU noise std
            at full dose, 27 HU at quarter dose, in the brain of the 0.957 mm head slices), or a range.
        electronic_noise_var: Gaussian electronic noise variance in counts^2, or a range.
        min_counts: lower clamp of the noisy counts before the log.
        spacing: pixel size ``(dy, dx)`` or a number, in mm; None reads a MetaTensor's ``pixdim`` or uses 1 mm.
        n_views: number of views per 180 degrees, or an integer range (None: see
            :meth:`ParallelBeamGeometry.create`); fewer views give streaks. A fan-beam scan takes twice as many over
            its full rotation.
        n_det: number of detector bins (None: cover the image diagonal).
        det_spacing: detector bin width in mm (None: half the smaller pixel size).
        window: ramp filter window, one of :data:`FILTER_WINDOWS`, or a sequence of them to draw from.
        cutoff: filter cutoff as a fraction of the detector Nyquist frequency (see :func:`iradon`), or a range.
        mu_water: attenuation of water in 1/mm.
        detector_blur_fwhm: Gaussian blur of the line integrals along the detector, FWHM in bins, or a range
            (see :func:`simulate_low_dose_ct`).
        beam: ``"parallel"``, ``"fan"`` (:data:`BEAMS`; fan: :meth:`FanBeamGeometry.create`'s defaults, detector
            pitch ``det_spacing`` at the rotation centre), or a sequence of them to draw from.
        views_sampling: how a range of ``n_views`` is drawn, one of :data:`VIEW_SAMPLINGS`: ``"uniform"`` (every
            integer of the range equally likely) or ``"log-uniform"`` (rounded ``exp(U(log low, log high))``: as
            many draws in 120-240 views as in 240-480).
        kernel_noise_only: the drawn reconstruction kernel (window, cutoff, detector blur) shapes the noise and
            streaks only: the detail of the image that the kernel removes (``img - kernel(img)``,
            :meth:`kernel`) is added back, so the output is the image at its own resolution with the grain of a
            softer (or sharper) reconstruction, and :meth:`kernel` returns the image itself. False (default): the
            whole reconstruction has the drawn kernel, as a scanner's.
        streak_scale: a factor, or a ``(low, high)`` range (>= 0) to draw it from uniformly, for the view-aliasing
            streaks of the scan (:func:`view_aliasing`): the scan gets ``(factor - 1) x`` its own streaks added,
            so its streaks are those of its view count made stronger while its noise stays that of its dose. 1
            (default) adds nothing and costs nothing; otherwise each scan with fewer views than a view-complete one
            costs two more noise-free projections and reconstructions (one of them view-complete).

    Example::

        ld = RandLowDoseCT(dose_fraction=(0.1, 0.5), window=("ram-lak", "shepp-logan", "hann"), spacing=0.957)
        ld.set_random_state(0)
        noisy = ld(slice_hu)  # (1, 256, 256) -> (1, 256, 256)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        prob: float = 1.0,
        dose_fraction: Union[float, Sequence[float]] = 0.25,
        incident_photons: Union[float, Sequence[float]] = 2e6,
        electronic_noise_var: Union[float, Sequence[float]] = 10.0,
        min_counts: float = 1.0,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Union[int, Sequence[int], None] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        window: Union[str, Sequence[str]] = "ram-lak",
        cutoff: Union[float, Sequence[float]] = 1.0,
        mu_water: float = MU_WATER_PER_MM,
        detector_blur_fwhm: Union[float, Sequence[float]] = 0.0,
        beam: Union[str, Sequence[str]] = "parallel",
        views_sampling: str = "uniform",
        kernel_noise_only: bool = False,
        streak_scale: Union[float, Sequence[float]] = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.kernel_noise_only = bool(kernel_noise_only)
        self.streak_range = value_range(streak_scale, "streak_scale", 0.0, strict=False)
        self.dose_range = value_range(dose_fraction, "dose_fraction", 0.0, strict=True)
        self.photons_range = value_range(incident_photons, "incident_photons", 0.0, strict=True)
        self.electronic_range = value_range(electronic_noise_var, "electronic_noise_var", 0.0, strict=False)
        self.views_range = None if n_views is None else tuple(int(v) for v in value_range(n_views, "n_views", 1, False))
        if views_sampling not in VIEW_SAMPLINGS:
            raise ValueError(f"views_sampling must be one of {VIEW_SAMPLINGS}, got {views_sampling!r}.")
        self.views_sampling = views_sampling
        self.windows = (window,) if isinstance(window, str) else tuple(window)
        for name in self.windows:
            if name not in FILTER_WINDOWS:
                raise ValueError(f"unknown filter window {name!r}, expected one of {FILTER_WINDOWS}.")
        if not self.windows:
            raise ValueError("window must name at least one filter window.")
        self.cutoff_range = value_range(cutoff, "cutoff", 0.0, strict=True)
        if self.cutoff_range[1] > 1:
            raise ValueError(f"cutoff must be in (0, 1], got {cutoff!r}.")
        self.blur_range = value_range(detector_blur_fwhm, "detector_blur_fwhm", 0.0, strict=False)
        self.beams = (beam,) if isinstance(beam, str) else tuple(beam)
        if not self.beams or any(b not in BEAMS for b in self.beams):
            raise ValueError(f"beam must be one of {BEAMS} or a sequence of them, got {beam!r}.")
        self.min_counts = min_counts
        self.spacing = spacing
        self.n_det, self.det_spacing = n_det, det_spacing
        self.mu_water = mu_water
        self.dose: float = self.dose_range[0]
        self.incident_photons: float = self.photons_range[0]
        self.electronic_noise_var: float = self.electronic_range[0]
        self.n_views: Optional[int] = None if self.views_range is None else self.views_range[0]
        self.window: str = self.windows[0]
        self.cutoff: float = self.cutoff_range[0]
        self.detector_blur_fwhm: float = self.blur_range[0]
        self.beam: str = self.beams[0]
        self.streak_scale: float = self.streak_range[0]
        self.seed: int = 0
        self._stream = 0  # noise streams of ``seed`` used since the last randomize()

    def randomize(self, data: Optional[object] = None) -> None:
        """Decide whether to apply; draw the settings given as ranges and the seed of the noise from ``self.R``."""
        super().randomize(None)
        self._stream = 0
        if not self._do_transform:
            return
        self.dose = self._uniform(self.dose_range)
        self.incident_photons = self._log_uniform(self.photons_range)
        self.electronic_noise_var = self._uniform(self.electronic_range)
        if self.views_range is not None and self.views_range[1] > self.views_range[0]:
            low, high = self.views_range
            if self.views_sampling == "log-uniform":
                self.n_views = min(max(round(self._log_uniform(self.views_range)), low), high)
            else:
                self.n_views = int(self.R.randint(low, high + 1))
        if len(self.windows) > 1:
            self.window = self.windows[int(self.R.randint(len(self.windows)))]
        self.cutoff = self._uniform(self.cutoff_range)
        self.detector_blur_fwhm = self._uniform(self.blur_range)
        if len(self.beams) > 1:
            self.beam = self.beams[int(self.R.randint(len(self.beams)))]
        self.seed = int(self.R.randint(MAX_SEED))
        self.streak_scale = self._uniform(self.streak_range)  # last: without a range the draws above are unchanged

    def _uniform(self, pair: tuple[float, float]) -> float:
        return float(self.R.uniform(*pair)) if pair[1] > pair[0] else pair[0]

    def _log_uniform(self, pair: tuple[float, float]) -> float:
        low, high = pair
        return float(math.exp(self.R.uniform(math.log(low), math.log(high)))) if high > low else low

    @property
    def params(self) -> dict[str, object]:
        """The settings of the last draw (what the next call simulates)."""
        return {
            "dose_fraction": self.dose,
            "incident_photons": self.incident_photons,
            "electronic_noise_var": self.electronic_noise_var,
            "n_views": self.n_views,
            "window": self.window,
            "cutoff": self.cutoff,
            "detector_blur_fwhm": self.detector_blur_fwhm,
            "beam": self.beam,
            "streak_scale": self.streak_scale,
        }

    def geometry(self, img: NdarrayOrTensor) -> Union[ParallelBeamGeometry, FanBeamGeometry]:
        """The scan geometry used for ``img`` (shape ``(..., H, W)``)."""
        shape, spacing = tuple(img.shape[-2:]), _image_spacing(img, self.spacing)
        if self.beam == "fan":
            views = None if self.n_views is None else 2 * self.n_views
            return FanBeamGeometry.create(shape, spacing, views, n_det=self.n_det, det_spacing=self.det_spacing)
        return ParallelBeamGeometry.create(shape, spacing, self.n_views, self.n_det, self.det_spacing)

    def kernel(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img`` through the reconstruction kernel of the last draw only (window, cutoff, detector blur; no noise,
        no view sampling; :func:`reconstruction_kernel`): the full-dose image of the same kernel as the scan. Same
        shape and kind as ``img``; ``img`` itself when the kernel is the identity, the transform is not applied or
        ``kernel_noise_only`` is set (the scan then keeps the image's own resolution)."""
        if not self._do_transform or self.kernel_noise_only:
            return img
        work, out_dtype = _working_tensor(img)
        out = self._kernel(work, self.geometry(img))
        if out is work:
            return img
        result, *_ = convert_to_dst_type(out, dst=img, dtype=out_dtype)
        return result

    def _kernel(self, work: torch.Tensor, geom: Union[ParallelBeamGeometry, FanBeamGeometry]) -> torch.Tensor:
        """``work`` through the drawn kernel for ``geom``; ``work`` itself when the kernel is the identity."""
        parallel = geom.parallel() if isinstance(geom, FanBeamGeometry) else geom
        return reconstruction_kernel(
            work, geom.spacing, parallel.det_spacing, self.window, self.cutoff, self.detector_blur_fwhm
        )

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Return the simulated low-dose image (same shape and kind as ``img``; see the class docstring).

        ``randomize=False`` keeps the settings and seed drawn last and uses the next noise stream of that seed.
        """
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        geom = self.geometry(img)
        work, out_dtype = _working_tensor(img)
        generator = torch.Generator(device=work.device)
        generator.manual_seed(_stream_seed(self.seed, self._stream))
        self._stream += 1
        out = simulate_low_dose_ct(
            work,
            geom,
            dose_fraction=self.dose,
            incident_photons=self.incident_photons,
            electronic_noise_var=self.electronic_noise_var,
            min_counts=self.min_counts,
            window=self.window,
            cutoff=self.cutoff,
            mu_water=self.mu_water,
            generator=generator,
            detector_blur_fwhm=self.detector_blur_fwhm,
        )
        if self.kernel_noise_only:
            kernel = self._kernel(work, geom)
            if kernel is not work:
                out = out + (work - kernel)  # the detail the kernel took away, back: only the noise keeps its grain
        if self.streak_scale != 1.0:
            aliasing = view_aliasing(work, geom, self.window, self.cutoff, self.detector_blur_fwhm, self.mu_water)
            out = out + (self.streak_scale - 1.0) * aliasing
        result, *_ = convert_to_dst_type(out, dst=img, dtype=out_dtype)
        return result


class RandLowDoseCTd(RandArrayWrapperd):
    """Dictionary-based version of :class:`RandLowDoseCT`.

    As MONAI's dictionary noise transforms: one :class:`RandLowDoseCT`, randomised once per call, then applied to
    every key with ``randomize=False``. All ``keys`` get the same dose; each gets its own noise (the next stream of
    the call's seed, in key order), and the first key present gets what :class:`RandLowDoseCT` gives for the same
    seed. To keep the normal-dose image as a training target, copy it first, e.g.
    ``Compose([CopyItemsd("image", names="label"), RandLowDoseCTd("image", ...)])``; with ``kernel_keys="label"``
    the target is the normal-dose image through the drawn reconstruction kernel (:meth:`RandLowDoseCT.kernel`), so
    that a network trained on random filters learns to remove noise and streaks, not to change the kernel.

    Args:
        keys: keys of the images (HU) to degrade.
        prob: probability of applying the transform (to all keys at once).
        dose_fraction, incident_photons, electronic_noise_var, min_counts, spacing, n_views, n_det, det_spacing,
        window, cutoff, mu_water, detector_blur_fwhm, beam, views_sampling, kernel_noise_only, streak_scale: as
        for :class:`RandLowDoseCT` (values or ranges).
        kernel_keys: keys of images to pass through the drawn reconstruction kernel only (no noise, no view
            sampling), e.g. the training target; none of ``keys``.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = RandLowDoseCT.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        dose_fraction: Union[float, Sequence[float]] = 0.25,
        incident_photons: Union[float, Sequence[float]] = 2e6,
        electronic_noise_var: Union[float, Sequence[float]] = 10.0,
        min_counts: float = 1.0,
        spacing: Union[float, Sequence[float], None] = None,
        n_views: Union[int, Sequence[int], None] = None,
        n_det: Optional[int] = None,
        det_spacing: Optional[float] = None,
        window: Union[str, Sequence[str]] = "ram-lak",
        cutoff: Union[float, Sequence[float]] = 1.0,
        mu_water: float = MU_WATER_PER_MM,
        detector_blur_fwhm: Union[float, Sequence[float]] = 0.0,
        beam: Union[str, Sequence[str]] = "parallel",
        views_sampling: str = "uniform",
        kernel_noise_only: bool = False,
        streak_scale: Union[float, Sequence[float]] = 1.0,
        kernel_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.kernel_keys = ensure_tuple(kernel_keys)
        overlap = set(self.kernel_keys) & set(self.keys)
        if overlap:
            raise ValueError(f"kernel_keys {sorted(map(str, overlap))} are also in keys: a key is scanned or blurred.")
        self.transform = RandLowDoseCT(
            prob=1.0,
            dose_fraction=dose_fraction,
            incident_photons=incident_photons,
            electronic_noise_var=electronic_noise_var,
            min_counts=min_counts,
            spacing=spacing,
            n_views=n_views,
            n_det=n_det,
            det_spacing=det_spacing,
            window=window,
            cutoff=cutoff,
            mu_water=mu_water,
            detector_blur_fwhm=detector_blur_fwhm,
            beam=beam,
            views_sampling=views_sampling,
            kernel_noise_only=kernel_noise_only,
            streak_scale=streak_scale,
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Scan every key of ``keys`` and pass every key of ``kernel_keys`` through the same draw's kernel."""
        d = super().__call__(data)
        if self._do_transform and self.first_key(d) != ():
            for key in self.kernel_keys:
                if key in d:
                    d[key] = self.transform.kernel(d[key])
                elif not self.allow_missing_keys:
                    raise KeyError(f"kernel key {key!r} is not in the data.")
        return d


def _axial_slices(volume: torch.Tensor) -> torch.Tensor:
    """``(C, i, j, k)`` -> ``(k, C, j, i)``: the axial slices as images of rows j and columns i."""
    return volume.permute(3, 0, 2, 1)


class LowDoseCT(Transform):
    """Reproducible low-dose simulation, for fixed validation and test sets.

    Unlike :class:`RandLowDoseCT`, every call draws its noise from the same ``seed``, so an image always gets the
    same low-dose version (a deterministic transform: ``CacheDataset`` caches its result).

    Input: a slice ``(C, H, W)`` (last two dimensions the slice, spacing from ``spacing`` or the MetaTensor's
    ``pixdim``) or a volume ``(C, i, j, k)`` whose axial slices (last axis) are simulated one by one, each as an
    image of rows j and columns i with the in-plane spacing ``(pixdim[1], pixdim[0])``. Output: float32 (float64
    for float64 input) HU, same shape and meta.

    Args:
        dose_fraction: relative dose (0.25: quarter dose).
        seed: seed of the noise; the same seed gives the same noise on a given device type.
        spacing: pixel size ``(dy, dx)`` of the slices in mm, or None to read it from the MetaTensor.
        simulator_args: other :class:`RandLowDoseCT` arguments (``incident_photons``, ``n_views``, ...).
    """

    backend = RandLowDoseCT.backend

    def __init__(
        self,
        dose_fraction: float = 0.25,
        seed: int = 0,
        spacing: Union[float, Sequence[float], None] = None,
        **simulator_args,
    ) -> None:
        self.dose_fraction = float(dose_fraction)
        self.seed = int(seed)
        self.spacing = spacing
        self.simulator = RandLowDoseCT(prob=1.0, dose_fraction=float(dose_fraction), spacing=spacing, **simulator_args)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """The low-dose version of ``img`` (see the class docstring)."""
        self.simulator.set_random_state(self.seed)
        if img.ndim == 3:
            return self.simulator(img)
        if img.ndim != 4:
            raise ValueError(f"expected a channel-first slice (C, H, W) or volume (C, i, j, k), got {img.shape}.")
        data = convert_to_tensor(img, track_meta=False)
        spacing = self.spacing
        if spacing is None and isinstance(img, MetaTensor):
            spacing = (float(img.pixdim[1]), float(img.pixdim[0]))
        self.simulator.spacing = spacing
        try:
            slices = self.simulator(_axial_slices(data if data.is_floating_point() else data.float()))
        finally:
            self.simulator.spacing = self.spacing
        out = slices.permute(1, 3, 2, 0).contiguous()
        result, *_ = convert_to_dst_type(out, dst=img, dtype=out.dtype)
        return result


class LowDoseCTd(ArrayWrapperd):
    """Dictionary-based version of :class:`LowDoseCT`: every key gets the same seed.

    Args:
        keys: keys of the images (HU) to degrade in place.
        dose_fraction, seed, spacing, simulator_args: as for :class:`LowDoseCT`.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LowDoseCT.backend

    def __init__(
        self,
        keys: KeysCollection,
        dose_fraction: float = 0.25,
        seed: int = 0,
        spacing: Union[float, Sequence[float], None] = None,
        allow_missing_keys: bool = False,
        **simulator_args,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LowDoseCT(dose_fraction, seed, spacing, **simulator_args)
