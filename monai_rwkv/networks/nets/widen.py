"""Widen a Restore-RWKV state dict by an integer factor so that the wider network computes the same function.

Every feature channel of the narrow network becomes ``factor`` copies in the wide one. Weights that read the
copies are divided by ``factor`` (the copies' sum equals the old channel), weights that write them are repeated,
per-channel parameters (LayerNorm, gammas, Bi-WKV decay and bonus, Omni-Shift kernels) are repeated. LayerNorm
sees each old channel ``factor`` times, so its mean and variance, and with them every output, are unchanged. The
channels of a pixel (un)shuffle and of a skip concatenation follow their sources. Without a perturbation the
copies would receive identical gradients and stay copies: ``noise`` adds to the weights that write each channel
a perturbation that sums to zero over its copies, so that the wide network's output differs from the narrow one's
only at second order in ``noise``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .restore_rwkv import infer_config

__all__ = ["widen_state_dict"]

_PER_CHANNEL = ("gamma1", "gamma2", "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")
_OMNI_SHIFT = ("conv1x1.weight", "conv3x3.weight", "conv5x5.weight", "conv5x5_reparam.weight")


def widen_state_dict(
    state: Mapping[str, torch.Tensor],
    factor: int,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The state dict of the same Restore-RWKV with ``factor`` times the width (``dim``), computing the same outputs.

    Args:
        state: a :class:`~monai_rwkv.networks.nets.RestoreRWKV` state dict (official key layout), 2D or 3D.
        factor: integer width multiple (2 turns ``dim`` 16 into 32).
        noise: standard deviation, relative to each weight tensor's own, of the zero-sum perturbation of the
            copies' incoming weights (0: an exact copy of the function, but training cannot separate the copies).
        generator: random generator of the perturbation.

    Returns:
        a new state dict; load it into ``RestoreRWKV(**{**infer_config(state), "dim": factor * dim})``.

    Raises:
        ValueError: ``factor`` is not a positive integer, or ``state`` holds keys this layout does not know.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}.")
    config = infer_config(state)
    sub = 2 ** config["spatial_dims"]  # channels per pixel (un)shuffle group
    width = _Widener(state, factor, noise, generator)
    c1 = config["dim"]
    c2, c3 = 2 * c1, 4 * c1

    def fresh(channels: int) -> torch.Tensor:  # the copies of a layer's own output channels
        return torch.arange(channels * factor) % channels

    def grouped(source: torch.Tensor) -> torch.Tensor:  # channel c * sub + k of a pixel (un)shuffle group
        return (source[:, None] * sub + torch.arange(sub)).flatten()

    def skip(upsampled: torch.Tensor, encoder: torch.Tensor, channels: int) -> torch.Tensor:
        return torch.cat([upsampled, encoder + channels])

    m1 = fresh(c1)
    width.conv("patch_embed", out_map=m1, in_map=None)
    width.stage("encoder_level1", m1, config["hidden_rate"])
    levels = {1: m1}
    downs = ((2, "down1_2", "encoder_level2"), (3, "down2_3", "encoder_level3"), (4, "down3_4", "latent"))
    for level, down, stage in downs:
        reduced = fresh(2 * (c1 << (level - 2)) // sub)  # Downsample: conv to 2C / sub channels, then unshuffle
        width.conv(f"{down}.body.0", out_map=reduced, in_map=levels[level - 1], bias=False)
        levels[level] = grouped(reduced)
        width.stage(stage, levels[level], config["hidden_rate"])
    up3 = fresh(c3)
    width.conv("up4_3.body.0", out_map=grouped(up3), in_map=levels[4], bias=False)
    dec3 = fresh(c3)
    width.conv("reduce_chan_level3", out_map=dec3, in_map=skip(up3, levels[3], c3))
    width.stage("decoder_level3", dec3, config["hidden_rate"])
    up2 = fresh(c2)
    width.conv("up3_2.body.0", out_map=grouped(up2), in_map=dec3, bias=False)
    dec2 = fresh(c2)
    width.conv("reduce_chan_level2", out_map=dec2, in_map=skip(up2, levels[2], c2))
    width.stage("decoder_level2", dec2, config["hidden_rate"])
    up1 = fresh(c1)
    width.conv("up2_1.body.0", out_map=grouped(up1), in_map=dec2, bias=False)
    dec1 = skip(up1, m1, c1)
    width.stage("decoder_level1", dec1, config["hidden_rate"])
    width.stage("refinement", dec1, config["hidden_rate"])
    width.conv("output", out_map=None, in_map=dec1)
    if "conditioning" in state:
        width.out["conditioning"] = state["conditioning"].clone()
        width.done.add("conditioning")
    unknown = sorted(set(state) - width.done)
    if unknown:
        raise ValueError(f"widen_state_dict: keys {unknown[:3]} are not of a RestoreRWKV state dict")
    return width.out


class _Widener:
    """Fills a widened state dict one layer at a time; ``out_map`` / ``in_map`` give, for every wide channel, the
    narrow channel it copies (each narrow channel ``factor`` times)."""

    def __init__(self, state: Mapping[str, torch.Tensor], factor: int, noise: float, generator: torch.Generator | None):
        self.state, self.factor, self.noise, self.generator = state, factor, noise, generator
        self.out: dict[str, torch.Tensor] = {}
        self.done: set[str] = set()

    def take(self, key: str) -> torch.Tensor:
        self.done.add(key)
        return self.state[key]

    def weight(self, key: str, out_map: torch.Tensor | None, in_map: torch.Tensor | None) -> None:
        w = self.take(key)
        if in_map is not None:
            w = w[:, in_map] / self.factor
        if out_map is not None:
            w = w[out_map]
            if self.noise:
                w = w + self._zero_sum_noise(w, out_map)
        self.out[key] = w.clone()

    def _zero_sum_noise(self, w: torch.Tensor, out_map: torch.Tensor) -> torch.Tensor:
        draw = torch.randn(w.shape, generator=self.generator, dtype=torch.float64)
        mean = torch.zeros((int(out_map.max()) + 1, *w.shape[1:]), dtype=torch.float64)
        mean.index_add_(0, out_map, draw)
        draw -= mean[out_map] / self.factor  # the copies of a channel share its change: their perturbations sum to 0
        return (draw * self.noise * w.double().std()).to(w.dtype)

    def conv(self, name: str, out_map: torch.Tensor | None, in_map: torch.Tensor | None, bias: bool = True) -> None:
        self.weight(f"{name}.weight", out_map, in_map)
        if bias:
            b = self.take(f"{name}.bias")
            self.out[f"{name}.bias"] = (b if out_map is None else b[out_map]).clone()

    def stage(self, name: str, m: torch.Tensor, hidden_rate: int) -> None:
        blocks = sorted({int(k.split(".")[1]) for k in self.state if k.startswith(name + ".")})
        hidden = torch.arange(hidden_rate * len(m)) % (hidden_rate * len(m) // self.factor)
        for i in blocks:
            p = f"{name}.{i}."
            self.done.add(p + "att.dwconv.weight")  # the unused convolution of the 2024 release: dropped
            for key in _PER_CHANNEL:
                self.out[p + key] = self.take(p + key)[m].clone()
            for key in ("att.spatial_decay", "att.spatial_first"):
                self.out[p + key] = self.take(p + key)[:, m].clone()
            for mix in ("att", "ffn"):
                self.out[f"{p}{mix}.omni_shift.alpha"] = self.take(f"{p}{mix}.omni_shift.alpha").clone()
                for key in _OMNI_SHIFT:
                    if f"{p}{mix}.omni_shift.{key}" in self.state:
                        self.out[f"{p}{mix}.omni_shift.{key}"] = self.take(f"{p}{mix}.omni_shift.{key}")[m].clone()
            for key in ("key", "value", "receptance", "output"):
                self.weight(f"{p}att.{key}.weight", m, m)
            self.weight(f"{p}ffn.receptance.weight", m, m)
            self.weight(f"{p}ffn.key.weight", hidden, m)
            self.weight(f"{p}ffn.value.weight", m, hidden)
