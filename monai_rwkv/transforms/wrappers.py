"""
The two shapes every dictionary transform here shares, so that each one only says which array transform it wraps:
:class:`ArrayWrapperd` (a deterministic array transform applied to every key) and :class:`RandArrayWrapperd` (a
random one, seeded with the dictionary transform and randomised once per call).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import NdarrayOrTensor
from monai.transforms.transform import MapTransform, RandomizableTransform, Transform

__all__ = ["ArrayWrapperd", "RandArrayWrapperd"]


class ArrayWrapperd(MapTransform):
    """
    A deterministic array transform (``self.transform``, set by the subclass) applied to every key; extra positional
    arguments per call (e.g. an attenuation map from another key) come from :meth:`call_args`.
    """

    transform: Transform

    def call_args(self, data: Mapping[Hashable, NdarrayOrTensor]) -> tuple:
        """Extra positional arguments of the array transform for this call (none by default)."""
        return ()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Apply the array transform to every key in ``data`` (a copy is returned)."""
        d = dict(data)
        if self.first_key(d) == ():
            return d
        extra = self.call_args(d)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], *extra)
        return d


class RandArrayWrapperd(RandomizableTransform, MapTransform):
    """
    The pattern every random dictionary transform here shares: one array transform (``self.transform``) seeded with
    this one, randomised once per call and applied to every key with ``randomize=False`` (each key still gets its
    own noise stream from the array transform). Subclasses set ``self.transform`` and may pass extra arguments per
    call through :meth:`call_args`.
    """

    transform: RandomizableTransform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):  # noqa: ANN201
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def call_args(self, data: Mapping[Hashable, NdarrayOrTensor]) -> tuple:
        """Extra positional arguments of the array transform for this call (none by default)."""
        return ()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Apply the array transform to every key in ``data`` (a copy is returned)."""
        d = dict(data)
        self.randomize(None)
        if not self._do_transform or self.first_key(d) == ():
            return d
        extra = self.call_args(d)
        self.transform.randomize(None)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], *extra, randomize=False)
        return d
