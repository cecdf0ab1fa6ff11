"""CPU kernels of the parallel-beam projector and back-projector of :mod:`monai_rwkv.transforms.tomography`, in numba.

This module imports numba at import time; :mod:`~monai_rwkv.transforms.tomography` imports it on first use and runs
its ``grid_sample`` path when that fails. The kernels compute exactly what that path computes (Joseph's method for
the forward projection, pixel-driven linear interpolation for the back-projection, zero outside the image or the
detector), with float64 sums and coordinates whatever the input dtype, one pass over the data and no temporary
sampling grid. Each call is single-threaded (``nogil``), so data-loader workers do not oversubscribe the cores.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["back_project", "forward_project"]

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def _joseph(images, steps, detector, major_cos, major_sin, minor_spacing, lo, hi, step_len, out):  # pragma: no cover
    """Line integrals of ``images`` for views whose rays advance along their first axis.

    ``images`` is ``(N, S, M)``: ``S`` pixel lines at coordinates ``steps`` (mm) that each ray crosses once, ``M``
    pixels of ``minor_spacing`` mm along each line. View ``v`` meets line ``k`` at the minor coordinate
    ``(detector[j] - steps[k] * major_sin[v]) / major_cos[v]`` (mm from the centre), interpolated linearly between
    the two nearest pixels (zero beyond the line's ends); bins outside ``[lo[v], hi[v])`` are left as they are
    in ``out`` (``(N, V, n_det)``, float64), the others receive the sum times ``step_len[v]``.
    """
    n_img, n_steps, n_minor = images.shape
    n_det = detector.shape[0]
    centre = (n_minor - 1) / 2.0
    top = n_minor + 1.0  # q in [0, top] after clamping: index 0 and the last two entries of a padded line are 0
    padded = np.zeros((n_steps, n_minor + 3), dtype=images.dtype)
    acc = np.zeros(n_det)
    for n in range(n_img):
        padded[:, 1 : n_minor + 1] = images[n]
        for v in range(major_cos.shape[0]):
            inv = 1.0 / (major_cos[v] * minor_spacing)
            j0, j1 = lo[v], hi[v]
            acc[j0:j1] = 0.0
            for k in range(n_steps):
                line = padded[k]
                base = centre + 1.0 - steps[k] * major_sin[v] * inv  # + 1: index into the zero-padded line
                for j in range(j0, j1):
                    q = min(max(base + detector[j] * inv, 0.0), top)
                    i = int(q)
                    f = q - i
                    acc[j] += line[i] + f * (line[i + 1] - line[i])
            for j in range(j0, j1):
                out[n, v, j] = acc[j] * step_len[v]


@numba.njit(**_JIT)
def _back_project(sinograms, cos, sin, y, x, det_spacing, out):  # pragma: no cover
    """``out[n, r, c] += sum_v q_v(x_c cos_v + y_r sin_v)`` with linear interpolation between detector bins (zero
    beyond the detector); ``sinograms`` is ``(N, V, n_det)``, ``out`` ``(N, H, W)`` float64."""
    n_img, n_views, n_det = sinograms.shape
    centre = (n_det - 1) / 2.0 + 1.0  # + 1: index into the zero-padded detector row
    top = n_det + 1.0  # q in [0, top] after clamping: index 0 and the last two entries of a padded row are 0
    padded = np.zeros(n_det + 3)
    for n in range(n_img):
        for v in range(n_views):
            padded[1 : n_det + 1] = sinograms[n, v]
            cx, sx = cos[v] / det_spacing, sin[v] / det_spacing
            for r in range(y.shape[0]):
                base = centre + y[r] * sx
                for c in range(x.shape[0]):
                    q = min(max(base + x[c] * cx, 0.0), top)
                    i = int(q)
                    f = q - i
                    out[n, r, c] += padded[i] + f * (padded[i + 1] - padded[i])


def forward_project(
    images: np.ndarray,
    steps: np.ndarray,
    detector: np.ndarray,
    major_cos: np.ndarray,
    major_sin: np.ndarray,
    minor_spacing: float,
    lo: np.ndarray,
    hi: np.ndarray,
    step_len: np.ndarray,
    out: np.ndarray,
) -> None:
    """Run :func:`_joseph` (see there) on contiguous arrays; ``out`` is filled in place."""
    _joseph(
        np.ascontiguousarray(images),
        np.ascontiguousarray(steps, dtype=np.float64),
        np.ascontiguousarray(detector, dtype=np.float64),
        np.ascontiguousarray(major_cos, dtype=np.float64),
        np.ascontiguousarray(major_sin, dtype=np.float64),
        float(minor_spacing),
        np.ascontiguousarray(lo, dtype=np.int64),
        np.ascontiguousarray(hi, dtype=np.int64),
        np.ascontiguousarray(step_len, dtype=np.float64),
        out,
    )


def back_project(
    sinograms: np.ndarray, theta: np.ndarray, y: np.ndarray, x: np.ndarray, det_spacing: float
) -> np.ndarray:
    """Un-normalised back-projection ``(N, H, W)`` float64 of ``(N, V, n_det)`` sinograms (:func:`_back_project`)."""
    out = np.zeros((sinograms.shape[0], y.shape[0], x.shape[0]))
    theta = np.asarray(theta, dtype=np.float64)
    _back_project(
        np.ascontiguousarray(sinograms),
        np.cos(theta),
        np.sin(theta),
        np.ascontiguousarray(y, dtype=np.float64),
        np.ascontiguousarray(x, dtype=np.float64),
        float(det_spacing),
        out,
    )
    return out
