"""
Count-domain Poisson noise: the quantum noise of photon (CT) and coincidence (PET) measurements, as a MONAI
randomisable transform.

An image of non-negative expected values ``x`` (a sinogram, or any count-proportional quantity) at a count level of
``counts_per_unit`` detected events per unit of ``x`` becomes ``Poisson(x * counts_per_unit) / counts_per_unit``:
unbiased (its mean is ``x``) with variance ``x / counts_per_unit``, so halving the counts doubles the variance.
A flat background fraction (randoms and scatter, as a fraction of the mean) may be added to the expectation before
sampling and subtracted after, as a scanner's randoms/scatter correction does.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor
from monai.utils.misc import MAX_SEED

from .wrappers import RandArrayWrapperd

__all__ = ["RandPoissonCounts", "RandPoissonCountsd", "poisson_counts"]


def _stream_seed(seed: int, stream: int) -> int:
    """The seed of noise stream ``stream`` of a drawn ``seed``: ``seed`` itself for stream 0, else a 32-bit seed mixed
    from ``(seed, stream)`` by :class:`numpy.random.SeedSequence`, so the streams of one seed are independent."""
    if stream == 0:
        return seed
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def poisson_counts(
    expected: torch.Tensor,
    counts_per_unit: float,
    background_fraction: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Sample ``Poisson((x + b) * c) / c - b`` where ``b = background_fraction * mean(x)`` and ``c = counts_per_unit``.

    Args:
        expected: non-negative expected values ``x`` (negative values are an error).
        counts_per_unit: detected events per unit of ``x`` (> 0).
        background_fraction: flat randoms/scatter background as a fraction of ``mean(x)`` (>= 0).
        generator: random stream (on ``expected``'s device).

    Returns:
        float tensor of ``expected``'s shape (float64 for float64 input, else float32).
    """
    if not counts_per_unit > 0:
        raise ValueError(f"counts_per_unit must be > 0, got {counts_per_unit}.")
    if not background_fraction >= 0:
        raise ValueError(f"background_fraction must be >= 0, got {background_fraction}.")
    dtype = torch.float64 if expected.dtype == torch.float64 else torch.float32
    x = expected.to(dtype)
    if bool((x < 0).any()):
        raise ValueError("expected values must be non-negative (counts cannot be negative).")
    background = background_fraction * float(x.mean()) if x.numel() else 0.0
    rate = (x + background) * counts_per_unit
    return torch.poisson(rate, generator=generator) / counts_per_unit - background


class RandPoissonCounts(RandomizableTransform):
    """
    Array transform: :func:`poisson_counts` on an image, reproducible with :meth:`set_random_state`.

    :meth:`randomize` draws a seed; each call then takes the next noise stream of that seed (stream 0 is the seed
    itself), so a call with ``randomize=False`` gives new noise, as :class:`RandPoissonCountsd` uses it for its keys.

    Args:
        counts_per_unit: detected events per unit of the image's values.
        background_fraction: flat background as a fraction of the image's mean.
        prob: probability of applying the noise.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, counts_per_unit: float, background_fraction: float = 0.0, prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob)
        poisson_counts(torch.zeros(1), counts_per_unit, background_fraction)  # validates the arguments
        self.counts_per_unit = float(counts_per_unit)
        self.background_fraction = float(background_fraction)
        self._seed = 0
        self._stream = 0  # noise streams of ``_seed`` used since the last randomize()

    def randomize(self, data: object = None) -> None:
        """Decide whether to apply, and draw the seed of the torch noise generator from ``self.R``."""
        super().randomize(None)
        self._seed = int(self.R.randint(MAX_SEED))
        self._stream = 0

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """The noisy ``img`` (``randomize=False``: the next noise stream of the seed drawn last)."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        data = convert_to_tensor(img, track_meta=False)
        generator = torch.Generator(device=data.device).manual_seed(_stream_seed(self._seed, self._stream))
        self._stream += 1
        out = poisson_counts(data, self.counts_per_unit, self.background_fraction, generator)
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class RandPoissonCountsd(RandArrayWrapperd):
    """
    Dictionary version of :class:`RandPoissonCounts`.

    As MONAI's dictionary noise transforms: one :class:`RandPoissonCounts`, randomised once per call, then applied
    to every key with ``randomize=False``. Each key gets its own noise (the next stream of the call's seed, in key
    order); the first key present gets what :class:`RandPoissonCounts` gives for the same seed.

    Args:
        keys: keys of the images to make noisy.
        counts_per_unit, background_fraction: as for :class:`RandPoissonCounts`.
        prob: probability of applying the noise (to all keys at once).
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = RandPoissonCounts.backend

    def __init__(
        self,
        keys: KeysCollection,
        counts_per_unit: float,
        background_fraction: float = 0.0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = RandPoissonCounts(counts_per_unit, background_fraction, prob=1.0)
