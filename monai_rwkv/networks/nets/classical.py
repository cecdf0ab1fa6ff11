"""
Classical image denoisers as parameter-free ``nn.Module`` s, for baselines that run through the same pipeline as
the networks (:class:`~monai_rwkv.inference.SliceWiseRestorer`, :func:`~monai_rwkv.apps.evaluate.evaluate_restoration`).

All filters take ``(B, C, H, W)`` images (the restorers give ``(B, 1, H, W)`` in [0, 1]) and return the same
shape and dtype; channels are filtered independently. Borders use reflect padding (``d c b | a b c d``, the edge
sample is not repeated; numpy ``"reflect"``, scipy.ndimage ``"mirror"``), extended periodically so that any
padding width works, even wider than the image. The filters are pure torch (CPU or CUDA, no gradients needed),
compute in at least float32 with autocast disabled, and have no weights (empty ``state_dict``).

Intensity parameters (``sigma_range``, ``h``) are in the units of the input. For the CT restorers, which map
[-1024, 3072] HU to [0, 1] (:data:`~monai_rwkv.inference.CT_INTENSITY_RANGE`), a value in HU converts with
``value_hu / 4096`` (e.g. 20 HU -> 0.0048828125).

Two more classes serve the MRI super-resolution baselines (``scripts/mri_baselines.py``) and work on images in any
intensity range: :class:`TotalVariationDenoiser` (ROF total-variation denoising, Chambolle's dual projection; its
borders are Neumann: no gradient across the edge) and :class:`KSpaceApodizer` (k-space truncation with a Tukey
window; its Fourier transform is periodic, no padding). :class:`TVKSpaceReconstruction` combines the two ideas: a
data-consistent total-variation reconstruction that keeps the measured central k-space block exactly.

:class:`BM3DDenoiser` is the exception to "pure torch": it calls the optional ``bm3d`` package (binary wheels on
PyPI, free for non-commercial use only; ``pip install bm3d``) on the CPU, one image at a time, as a reference
baseline for the reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from monai_rwkv.transforms.kspace import kspace_keep

__all__ = [
    "BM3DDenoiser",
    "BilateralDenoiser",
    "GaussianDenoiser",
    "KSpaceApodizer",
    "NonLocalMeansDenoiser",
    "TVKSpaceReconstruction",
    "TotalVariationDenoiser",
    "gaussian_kernel1d",
    "reflect_pad2d",
]


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices ``-pad .. size + pad - 1`` mapped into ``[0, size)`` by whole-sample reflection (period 2 (size-1))."""
    idx = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def reflect_pad2d(x: torch.Tensor, pad_h: int, pad_w: int | None = None) -> torch.Tensor:
    """
    Reflect-pad the last two dimensions (``d c b | a b c d | c b a``), any width (periodic beyond the image).

    Args:
        x: ``(..., H, W)``.
        pad_h: rows added above and below.
        pad_w: columns added left and right (default ``pad_h``).

    Returns:
        ``(..., H + 2 pad_h, W + 2 pad_w)``.
    """
    pad_w = pad_h if pad_w is None else pad_w
    if pad_h:
        x = x.index_select(-2, _reflect_index(x.shape[-2], pad_h, x.device))
    if pad_w:
        x = x.index_select(-1, _reflect_index(x.shape[-1], pad_w, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """
    Normalised 1D Gaussian, ``exp(-x^2 / (2 sigma^2))`` for ``|x| <= int(truncate * sigma + 0.5)``, as
    ``scipy.ndimage.gaussian_filter``; ``sigma == 0`` gives ``[1]``.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}.")
    radius = int(truncate * float(sigma) + 0.5)
    if sigma == 0 or radius == 0:
        return torch.ones(1, dtype=dtype)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype)


class _Filter(nn.Module):
    """Shared plumbing: shape check, computation dtype (>= float32, no autocast), result in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``, same dtype and device."""
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}.")
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self._filter(work.contiguous())
        return out.to(x.dtype)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianDenoiser(_Filter):
    """
    Separable Gaussian smoothing with reflect padding.

    ``out = x * g_sigma`` along rows then columns, with the kernel of :func:`gaussian_kernel1d` (radius
    ``int(truncate * sigma + 0.5)``); equals ``scipy.ndimage.gaussian_filter(x, sigma, mode="mirror",
    truncate=truncate)`` on each image.

    Args:
        sigma: standard deviation in pixels (0: identity).
        truncate: kernel radius in standard deviations.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, sigma: float, truncate: float = 4.0) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.sigma = float(sigma)
        self.truncate = float(truncate)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        k = gaussian_kernel1d(self.sigma, self.truncate, x.dtype).to(x.device)
        r = (k.numel() - 1) // 2
        if r == 0:
            return x.clone()
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, w)
        y = F.conv2d(reflect_pad2d(y, r, 0), k.view(1, 1, -1, 1))
        y = F.conv2d(reflect_pad2d(y, 0, r), k.view(1, 1, 1, -1))
        return y.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, truncate={self.truncate}"


class BilateralDenoiser(_Filter):
    """
    Exact (brute-force) bilateral filter with reflect padding.

    For every pixel ``p`` and offsets ``d`` in the square ``[-radius, radius]^2``, with ``P`` the reflect-padded
    image::

        w(p, d) = exp(-|d|^2 / (2 sigma_spatial^2) - (P[p + d] - x[p])^2 / (2 sigma_range^2))
        out[p] = sum_d w(p, d) P[p + d] / sum_d w(p, d)

    computed with one shifted view of ``P`` per offset (memory ``O(B C H W)``, time ``O((2 radius + 1)^2 B C H W)``).

    Args:
        sigma_spatial: spatial standard deviation in pixels (> 0).
        sigma_range: intensity standard deviation in the units of the input (> 0). For the CT restorers
            (HU [-1024, 3072] -> [0, 1]) use ``sigma_hu / 4096``.
        radius: half-width of the square neighbourhood in pixels; None: ``ceil(2 sigma_spatial)``.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, sigma_spatial: float, sigma_range: float, radius: int | None = None) -> None:
        super().__init__()
        if not sigma_spatial > 0 or not sigma_range > 0:
            raise ValueError(f"sigma_spatial and sigma_range must be > 0, got {sigma_spatial}, {sigma_range}.")
        self.sigma_spatial = float(sigma_spatial)
        self.sigma_range = float(sigma_range)
        self.radius = math.ceil(2 * self.sigma_spatial) if radius is None else int(radius)
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}.")

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        r, (h, w) = self.radius, x.shape[-2:]
        padded = reflect_pad2d(x, r)
        num, den = torch.zeros_like(x), torch.zeros_like(x)
        inv_2sr2 = 1.0 / (2 * self.sigma_range**2)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                shifted = padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
                spatial = (dy * dy + dx * dx) / (2 * self.sigma_spatial**2)
                weight = torch.exp(-((shifted - x) ** 2) * inv_2sr2 - spatial)
                num.addcmul_(weight, shifted)
                den.add_(weight)
        return num / den

    def extra_repr(self) -> str:
        return f"sigma_spatial={self.sigma_spatial}, sigma_range={self.sigma_range}, radius={self.radius}"


class NonLocalMeansDenoiser(_Filter):
    """
    Pixel-wise non-local means (Buades et al. 2005) with square patches and a square search window.

    With ``P`` the image reflect-padded by ``search_radius + patch_radius``, for every pixel ``p`` and offset ``d``
    in ``[-search_radius, search_radius]^2``::

        D(p, d) = mean_{u in [-patch_radius, patch_radius]^2} (P[p + u] - P[p + d + u])^2
        w(p, d) = exp(-max(D(p, d) - 2 sigma^2, 0) / h^2)
        out[p]  = sum_d w(p, d) P[p + d] / sum_d w(p, d)

    (the centre offset has weight 1). One shifted view and one separable box filter per offset: memory
    ``O(B C H W)``, time ``O((2 search_radius + 1)^2 B C H W)``.

    Args:
        h: filtering strength, in the units of the input (> 0); for the CT restorers ``h_hu / 4096``.
        patch_radius: half-width of the compared patches (patches of ``2 patch_radius + 1`` pixels square).
        search_radius: half-width of the search window.
        sigma: noise standard deviation subtracted from the patch distance (``2 sigma^2``), input units; 0: none.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, h: float, patch_radius: int = 1, search_radius: int = 5, sigma: float = 0.0) -> None:
        super().__init__()
        if not h > 0:
            raise ValueError(f"h must be > 0, got {h}.")
        if patch_radius < 0 or search_radius < 0 or sigma < 0:
            raise ValueError("patch_radius, search_radius and sigma must be >= 0.")
        self.h = float(h)
        self.patch_radius = int(patch_radius)
        self.search_radius = int(search_radius)
        self.sigma = float(sigma)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        s, p, (h, w) = self.search_radius, self.patch_radius, x.shape[-2:]
        b, c = x.shape[:2]
        padded = reflect_pad2d(x.reshape(b * c, 1, h, w), s + p)  # (BC, 1, H + 2(s+p), W + 2(s+p))
        ref = padded[..., s : s + h + 2 * p, s : s + w + 2 * p]  # the patches around each pixel, offset 0
        num = torch.zeros(b * c, 1, h, w, dtype=x.dtype, device=x.device)
        den = torch.zeros_like(num)
        k = 2 * p + 1
        inv_h2, bias = 1.0 / self.h**2, 2 * self.sigma**2
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                shifted = padded[..., s + dy : s + dy + h + 2 * p, s + dx : s + dx + w + 2 * p]
                dist = (ref - shifted) ** 2
                if p:
                    dist = F.avg_pool2d(F.avg_pool2d(dist, (k, 1), stride=1), (1, k), stride=1)
                weight = torch.exp(-(dist - bias).clamp_min(0) * inv_h2)
                value = shifted[..., p : p + h, p : p + w]
                num.addcmul_(weight, value)
                den.add_(weight)
        return (num / den).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"h={self.h}, patch_radius={self.patch_radius}, search_radius={self.search_radius}, sigma={self.sigma}"


class BM3DDenoiser(_Filter):
    """
    BM3D (Dabov et al. 2007, in the implementation of Makinen, Azzari and Foi 2020) of each image for additive
    white Gaussian noise of standard deviation ``sigma``, through the optional ``bm3d`` package. Runs on the CPU
    in float64, one ``(H, W)`` image at a time; the result returns to the input's device.

    Args:
        sigma: noise standard deviation in the units of the input (> 0); the filter's strength.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.

    Raises:
        ImportError: at construction, when ``bm3d`` is not installed (the message says how to install it).
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}.")
        try:
            import bm3d  # noqa: PLC0415  (optional, non-commercial licence: imported only when asked for)
        except ImportError as e:
            raise ImportError("BM3DDenoiser needs the optional bm3d package: pip install bm3d") from e
        self._bm3d = bm3d.bm3d
        self.sigma = float(sigma)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().double().cpu().numpy()
        out = torch.empty(x.shape, dtype=torch.float64)
        for b in range(x.shape[0]):
            for c in range(x.shape[1]):
                out[b, c] = torch.from_numpy(self._bm3d(images[b, c], sigma_psd=self.sigma).reshape(x.shape[-2:]))
        return out.to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def _forward_differences(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Discrete gradient of ``(..., H, W)`` images: forward differences along rows (``dy``) and columns (``dx``), zero
    on the last row / column (Neumann border: nothing flows across the edge). Both outputs are ``(..., H, W)``.
    """
    dy = F.pad(v[..., 1:, :] - v[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(v[..., :, 1:] - v[..., :, :-1], (0, 1, 0, 0))
    return dy, dx


def _divergence(py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """
    Discrete divergence of a ``(..., H, W)`` vector field, the negative adjoint of :func:`_forward_differences`
    (``<grad u, p> = -<u, div p>`` for all ``u``, ``p``): ``div p[i] = p[i] - p[i - 1]`` per axis, with ``p[-1]``
    and ``p[H - 1]`` (resp. ``W - 1``) taken as 0.
    """
    dy = F.pad(py[..., :-1, :], (0, 0, 0, 1)) - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    dx = F.pad(px[..., :, :-1], (0, 1, 0, 0)) - F.pad(px[..., :, :-1], (1, 0, 0, 0))
    return dy + dx


class TotalVariationDenoiser(_Filter):
    """
    Isotropic total-variation (ROF) denoising of each 2D image, by Chambolle's dual projection algorithm
    (A. Chambolle, "An algorithm for total variation minimization and applications", JMIV 20, 2004).

    For each image ``f`` (one channel of one batch item) the result approximates the unique minimiser of::

        E(u) = 1/2 sum (u - f)^2 + weight * sum_pixels sqrt((D_y u)^2 + (D_x u)^2)

    with ``D_y``, ``D_x`` forward differences that are zero on the last row / column (Neumann border). With
    ``q = weight * p`` the dual field (``|q| <= weight`` at every pixel) and ``div`` the negative adjoint of
    ``(D_y, D_x)``, the iteration is::

        g = grad(div q - f)
        q <- (q + tau g) / (1 + tau |g| / weight)
        u  = f - div q

    from ``q = 0`` (so iteration 0 gives ``u = f``). Chambolle proves convergence for ``tau <= 1/8`` and notes that
    ``tau = 1/4`` (the default) converges in practice, faster. The number of iterations is fixed (no stopping rule),
    so the cost is exactly ``n_iter`` passes of a few element-wise operations over the batch; the result is
    equivariant to transposing the image, invariant to adding a constant to it (``u(f + c) = u(f) + c``) and scales
    with the intensities (``u(a f; a weight) = a u(f; weight)`` for ``a > 0``): ``weight`` is in the units of the
    input.

    Args:
        weight: regularisation strength ``>= 0`` in intensity units (0: identity; larger: flatter).
        n_iter: iterations of the dual projection (>= 0).
        tau: step size, in ``(0, 1/4]``.

    Shapes:
        ``(N, C, H, W) -> (N, C, H, W)``; float32 or float64 computation in the input's precision (other types in
        float32), result in the input's dtype.
    """

    def __init__(self, weight: float, n_iter: int = 100, tau: float = 0.25) -> None:
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 0:
            raise ValueError(f"n_iter must be an integer >= 0, got {n_iter}.")
        if not 0 < tau <= 0.25:
            raise ValueError(f"tau must be in (0, 1/4], got {tau}.")
        self.weight, self.n_iter, self.tau = float(weight), int(n_iter), float(tau)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight == 0 or self.n_iter == 0:
            return x.clone()
        qy, qx = torch.zeros_like(x), torch.zeros_like(x)
        step = self.tau / self.weight
        for _ in range(self.n_iter):
            gy, gx = _forward_differences(_divergence(qy, qx) - x)
            denominator = torch.sqrt(gy * gy + gx * gx).mul_(step).add_(1.0)
            qy = (qy + self.tau * gy).div_(denominator)
            qx = (qx + self.tau * gx).div_(denominator)
        return x - _divergence(qy, qx)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, n_iter={self.n_iter}, tau={self.tau}"


class KSpaceApodizer(_Filter):
    """
    K-space truncation with a Tukey apodisation window: the classical reduction of the Gibbs ringing of a
    zero-filled MR image at the price of resolution.

    For each ``(H, W)`` image: ``fftshift(fft2(x))``, multiplied by the separable window
    ``window(H, factor, alpha)[:, None] * window(W, factor, alpha)[None, :]`` (:meth:`window`:
    zero outside the central block that :func:`~monai_rwkv.transforms.kspace.truncate_kspace` keeps for ``factor``,
    a Tukey taper of parameter ``alpha`` over it), ``ifft2`` and magnitude. ``alpha`` 0 gives exactly
    ``truncate_kspace(x, factor)``. Applied to a zero-filled magnitude image (the output of ``truncate_kspace``),
    ``alpha`` 0 is not the identity: taking the magnitude put content outside the kept block again, which is removed.

    Args:
        factor: the truncation factor per axis (>= 1; 4 for the paper's x4 task).
        alpha: Tukey parameter in [0, 1] (0: rectangular, 1: Hann).

    Shapes:
        ``(N, C, H, W) -> (N, C, H, W)``, real and non-negative; computed in float64 for float64 input, else float32
        (result in the input's dtype).
    """

    def __init__(self, factor: float, alpha: float) -> None:
        super().__init__()
        kspace_keep(1, factor)  # validates factor
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        self.factor, self.alpha = float(factor), float(alpha)

    @staticmethod
    def window(n: int, factor: float, alpha: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """
        The 1D k-space weights for an axis of ``n`` samples, in ``fftshift`` order: zero outside the kept block of
        :func:`~monai_rwkv.transforms.kspace.kspace_keep`, and inside it a Tukey window centred on the zero frequency
        (index ``n // 2``). With ``keep`` the block length, ``h = keep / 2`` and ``u`` the signed frequency (index
        minus ``n // 2``)::

            w(u) = 1                                                    for |u| <= (1 - alpha) h
            w(u) = (1 + cos(pi (|u| - (1 - alpha) h) / (alpha h))) / 2  for (1 - alpha) h < |u| <= h

        ``alpha`` 0 is the rectangular window (every kept frequency weight 1: plain zero-filling); ``alpha`` 1 is the
        Hann window ``(1 + cos(pi u / h)) / 2``, zero at ``|u| = h``. The window is symmetric in ``u``, so for an
        even ``keep`` the unpaired most negative kept frequency ``u = -h`` gets weight 0 whenever ``alpha > 0`` (the
        point spread function is then real); ``w(0) = 1``, so the mean intensity is kept.

        Returns:
            ``(n,)`` tensor of ``dtype``.
        """
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        block = kspace_keep(n, factor)
        keep = block.stop - block.start
        w = torch.zeros(n, dtype=torch.float64)
        u = torch.arange(block.start, block.stop, dtype=torch.float64) - n // 2
        half = keep / 2.0
        flat = (1.0 - alpha) * half
        inside = torch.ones_like(u)
        if alpha > 0:
            taper = u.abs() > flat
            inside[taper] = 0.5 * (1.0 + torch.cos(math.pi * (u[taper].abs() - flat) / (alpha * half)))
        w[block] = inside
        return w.to(dtype)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        window = self.window(h, self.factor, self.alpha)[:, None] * self.window(w, self.factor, self.alpha)[None]
        spectrum = torch.fft.fftshift(torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1))
        spectrum = spectrum * window.to(device=x.device, dtype=x.dtype)
        return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=(-2, -1)), dim=(-2, -1)).abs()

    def extra_repr(self) -> str:
        return f"factor={self.factor}, alpha={self.alpha}"


def _hermitian_kspace_mask(h: int, w: int, factor: float, device: torch.device | None = None) -> torch.Tensor:
    """
    ``(H, W)`` boolean mask, in unshifted ``fft2`` order, of the block that :func:`~monai_rwkv.transforms.kspace.
    kspace_keep` keeps for ``factor`` together with its point reflection (frequency ``-k`` for every kept ``k``).
    For an even block length the most negative kept frequency has no positive partner inside the block; the reflection
    adds it, so that the mask is closed under ``k -> -k``, as the Fourier transform of a real image is
    (``X(-k) = conj(X(k))``): fixing a real image's spectrum on the block fixes it on the whole mask.
    """
    block = torch.zeros(h, w, dtype=torch.bool, device=device)
    block[kspace_keep(h, factor), kspace_keep(w, factor)] = True
    block = torch.fft.ifftshift(block, dim=(-2, -1))
    reflected = torch.roll(torch.flip(block, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))  # index k -> (-k) mod n
    return block | reflected


class TVKSpaceReconstruction(_Filter):
    """
    Data-consistent total-variation reconstruction of a k-space-truncated image (compressed-sensing style, POCS
    variant): alternate a few Chambolle iterations of TV denoising with the projection onto the images whose kept
    k-space block equals the measured one.

    The input is a zero-filled magnitude image (:func:`~monai_rwkv.transforms.kspace.truncate_kspace` with
    ``factor``). Its measured data ``y`` are taken as the kept block (the :func:`~monai_rwkv.transforms.kspace.
    kspace_keep` block of ``fftshift(fft2(x))``) of the FFT of the input itself, completed by the Hermitian partners
    of the block (an even block's unpaired most negative frequency: see below) to the mask ``M``. This is an
    approximation of the true measurement: the magnitude of the zero-filled image is not band-limited, its kept block
    differs from the truncated spectrum of the truth where that image was negative (rectified ringing) or complex.
    With ``P_C`` the projection onto ``C = {u real : (fft2 u)[M] = y}`` (replace ``fft2(u)`` on ``M`` by ``y``,
    inverse FFT, real part; exact in real image space by Parseval, and the real part only removes rounding since the
    replaced spectrum is Hermitian), the iteration is::

        u_0 = P_C(0) = Re ifft2(y on M, 0 elsewhere)      (start "zero_filled": the zero-filled real image)
        u_0 = x                                            (start "input": the input, already in C)
        repeat n_iter times:
            v = TotalVariationDenoiser(weight, n_iter=tv_iter)(u)     (from a zero dual field every time)
            v = max(v, 0)                                            (the truth is real and non-negative)
            u = P_C(v)

    and the result is the last ``u``: its kept block equals the measured one (to FFT rounding), it is real but may
    dip slightly below 0 (the data projection comes last). With an exact ROF step and without the clipping, ``v``
    would be the proximal-gradient (ISTA, step 1) iteration for
    ``min_v weight TV(v) + 1/2 dist(v, C)^2 = weight TV(v) + 1/(2 H W) ||(fft2 v)[M] - y||^2`` (``grad 1/2 dist^2
    = v - P_C v``); here the ROF step is inexact (``tv_iter`` Chambolle iterations, step 1/4) and the iteration is
    stopped after ``n_iter`` steps, so ``n_iter`` and ``tv_iter`` regularise as well (on brain MRI, few inner
    iterations and ~10 outer ones scored best; closer-to-exact ROF steps flattened too much). ``weight`` is in the
    intensity units of the input, as for :class:`TotalVariationDenoiser`. ``weight`` 0 or ``n_iter`` 0 return the
    start image (data consistency only: for ``"zero_filled"`` the zero-filled real image, for ``"input"`` the input).
    Each image (batch item, channel) is reconstructed independently; the FFT is periodic (no padding), the TV step
    has Neumann borders.

    Args:
        factor: the truncation factor per axis (>= 1; 4 for the x4 task), as in ``truncate_kspace``.
        weight: TV weight ``>= 0`` of each denoising step, in intensity units.
        n_iter: outer iterations (TV step then data projection), ``>= 0``.
        tv_iter: Chambolle iterations of each TV step, ``>= 1``.
        start: ``"zero_filled"`` (default) or ``"input"``, the image the iteration starts from.

    Shapes:
        ``(N, C, H, W) -> (N, C, H, W)``, real; computed in float64 for float64 input, else float32 (FFTs in the
        matching complex type), result in the input's dtype.
    """

    def __init__(
        self, factor: float, weight: float, n_iter: int = 10, tv_iter: int = 5, start: str = "zero_filled"
    ) -> None:
        super().__init__()
        kspace_keep(1, factor)  # validates factor
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 0:
            raise ValueError(f"n_iter must be an integer >= 0, got {n_iter}.")
        if isinstance(tv_iter, bool) or int(tv_iter) != tv_iter or tv_iter < 1:
            raise ValueError(f"tv_iter must be an integer >= 1, got {tv_iter}.")
        if start not in ("zero_filled", "input"):
            raise ValueError(f"start must be 'zero_filled' or 'input', got {start!r}.")
        self.factor, self.weight, self.n_iter, self.tv_iter = float(factor), float(weight), int(n_iter), int(tv_iter)
        self.start = start

    def mask(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        """The ``(H, W)`` boolean mask ``M`` of fixed frequencies, unshifted ``fft2`` order (block and partners)."""
        return _hermitian_kspace_mask(h, w, self.factor, device)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask(*x.shape[-2:], device=x.device)
        measured = torch.fft.fft2(x) * mask  # y on M, 0 elsewhere: (N, C, H, W) complex

        def project(u: torch.Tensor) -> torch.Tensor:
            return torch.fft.ifft2(torch.where(mask, measured, torch.fft.fft2(u))).real

        u = torch.fft.ifft2(measured).real if self.start == "zero_filled" else x.clone()
        if self.weight == 0:
            return u
        denoise = TotalVariationDenoiser(self.weight, n_iter=self.tv_iter)
        for _ in range(self.n_iter):
            u = project(denoise(u).clamp_min_(0))
        return u

    def extra_repr(self) -> str:
        return (
            f"factor={self.factor}, weight={self.weight}, n_iter={self.n_iter}, tv_iter={self.tv_iter}, "
            f"start={self.start!r}"
        )
