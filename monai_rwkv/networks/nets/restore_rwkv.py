"""Restore-RWKV: a U-shaped RWKV network for medical image restoration (2D as published, 3D extension)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from monai_rwkv.networks.blocks import Downsample, RWKVBlock, Upsample

__all__ = ["PRESETS", "RestoreRWKV"]

#: Named configurations for :meth:`RestoreRWKV.from_preset`. ``paper`` is the published model
#: (27.85 M parameters); ``light`` (1.19 M) is this project's choice, see docs/networks.md.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"dim": 48, "num_blocks": (4, 6, 6, 8), "num_refinement_blocks": 4, "hidden_rate": 4},
    "light": {"dim": 16, "num_blocks": (1, 2, 2, 2), "num_refinement_blocks": 1, "hidden_rate": 4},
}

_LEVELS = 4  # three 2x down-samplings: sizes are padded to multiples of 8 inside forward


class RestoreRWKV(nn.Module):
    """Restore-RWKV image-to-image network (Yang et al., "Restore-RWKV", arXiv 2407.11087).

    A four-level encoder/decoder of :class:`~monai_rwkv.networks.blocks.RWKVBlock` stages with
    channels C, 2C, 4C, 8C, pixel-(un)shuffle resampling, skip connections, a refinement stage and a
    global residual. With ``spatial_dims=2`` the parameter names and shapes equal the authors' released
    checkpoints, so state dicts load both ways (see :meth:`from_official`).

    Args:
        spatial_dims: 2 (published) or 3 (this project's extension: scans cycle through W, H, D).
        in_channels: number of image channels of the input.
        out_channels: number of output channels. The image is added to the output when equal to ``in_channels``.
        conditioning_channels: extra input channels after the image's, e.g. a noise-level map
            (:class:`~monai_rwkv.transforms.NoiseLevelMap`): the first convolution sees them, the global residual
            adds only the image.
        dim: width C of the first level.
        num_blocks: number of RWKV blocks at levels 1-4 (encoder; the decoder mirrors levels 1-3).
        num_refinement_blocks: blocks of the full-resolution refinement stage.
        recurrence: chained Bi-WKV scans per spatial mix; defaults to ``spatial_dims`` (2 in 2D, 3 in 3D).
        hidden_rate: channel-mix hidden width as a multiple of the level width.

    Shapes:
        input (B, in_channels + conditioning_channels, *spatial) of any size; output (B, out_channels, *spatial).
        Sizes that are not multiples of 8 are reflect-padded inside ``forward`` and cropped back (replicate
        padding for sides shorter than the pad).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        recurrence: int | None = None,
        hidden_rate: int = 4,
        conditioning_channels: int = 0,
    ) -> None:
        super().__init__()
        if conditioning_channels < 0:
            raise ValueError(f"conditioning_channels must be >= 0, got {conditioning_channels}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(num_blocks) != _LEVELS:
            raise ValueError(f"num_blocks needs one entry per level ({_LEVELS}), got {tuple(num_blocks)}.")
        recurrence = spatial_dims if recurrence is None else recurrence
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.conditioning_channels = conditioning_channels
        if conditioning_channels:  # recorded in the state dict, so that from_official tells image from conditioning
            self.register_buffer("conditioning", torch.tensor(conditioning_channels))
        self.config = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "dim": dim,
            "num_blocks": tuple(num_blocks),
            "num_refinement_blocks": num_refinement_blocks,
            "recurrence": recurrence,
            "hidden_rate": hidden_rate,
            "conditioning_channels": conditioning_channels,
        }
        conv = Conv[Conv.CONV, spatial_dims]

        def stage(channels: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*(RWKVBlock(spatial_dims, channels, recurrence, hidden_rate) for _ in range(depth)))

        c1, c2, c3, c4 = dim, 2 * dim, 4 * dim, 8 * dim
        self.patch_embed = conv(in_channels + conditioning_channels, c1, 3, padding=1, bias=True)
        self.encoder_level1 = stage(c1, num_blocks[0])
        self.down1_2 = Downsample(spatial_dims, c1)
        self.encoder_level2 = stage(c2, num_blocks[1])
        self.down2_3 = Downsample(spatial_dims, c2)
        self.encoder_level3 = stage(c3, num_blocks[2])
        self.down3_4 = Downsample(spatial_dims, c3)
        self.latent = stage(c4, num_blocks[3])
        self.up4_3 = Upsample(spatial_dims, c4)
        self.reduce_chan_level3 = conv(2 * c3, c3, 1, bias=True)
        self.decoder_level3 = stage(c3, num_blocks[2])
        self.up3_2 = Upsample(spatial_dims, c3)
        self.reduce_chan_level2 = conv(2 * c2, c2, 1, bias=True)
        self.decoder_level2 = stage(c2, num_blocks[1])
        self.up2_1 = Upsample(spatial_dims, c2)
        self.decoder_level1 = stage(c2, num_blocks[0])  # no channel reduction after the level-1 skip
        self.refinement = stage(c2, num_refinement_blocks)
        self.output = conv(c2, out_channels, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.in_channels + self.conditioning_channels
        if x.shape[1] != expected:
            extra = (
                f" ({self.in_channels} image + {self.conditioning_channels} conditioning)"
                if self.conditioning_channels
                else ""
            )
            raise ValueError(f"expected {expected} input channels{extra}, got input of shape {tuple(x.shape)}.")
        spatial_shape = x.shape[2:]
        padded = _pad_to_multiple(x, 2 ** (_LEVELS - 1))
        enc1 = self.encoder_level1(self.patch_embed(padded))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        out = self.output(self.refinement(dec1))
        if self.in_channels == self.out_channels:
            out = out + padded[:, : self.in_channels]
        return out[(...,) + tuple(slice(0, s) for s in spatial_shape)]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> RestoreRWKV:
        """Build a named configuration (``"paper"`` or ``"light"``); keyword arguments override it."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def checkpoint_filter_fn(
        self, state: Mapping[str, torch.Tensor], widen_noise: float = 0.01, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """A state dict of a narrower network of this layout, or of one without conditioning channels (e.g. the
        weights of a blind denoiser), adapted to this network, which then computes what the original did (the
        start of a fine-tune).

        - A width (``dim``) that divides this network's is widened (:func:`~monai_rwkv.networks.nets.widen.
          widen_state_dict`, every channel copied; ``widen_noise`` and ``generator``: the perturbation that lets
          training separate the copies, which changes the output at second order only).
        - The first convolution's weights for missing conditioning channels are zero, so the output does not
          depend on the conditioning; the number of conditioning channels (buffer ``conditioning``) is added.

        A state dict that already fits is returned as it is.
        """
        state = dict(state)
        if "patch_embed.weight" in state and state["patch_embed.weight"].shape[0] != self.config["dim"]:
            state = self._widened(state, widen_noise, generator)
        if self.conditioning_channels and "conditioning" not in state:
            state["conditioning"] = self.conditioning.clone()
        weight = state.get("patch_embed.weight")
        wanted = self.patch_embed.weight.shape[1]
        if weight is not None and weight.shape[1] == self.in_channels and wanted > self.in_channels:
            extra = weight.new_zeros((weight.shape[0], wanted - weight.shape[1], *weight.shape[2:]))
            state["patch_embed.weight"] = torch.cat([weight, extra], dim=1)
        return state

    def _widened(
        self, state: dict[str, torch.Tensor], noise: float, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        from .widen import widen_state_dict  # widen imports this module

        narrow = infer_config(state)
        factor, rest = divmod(self.config["dim"], narrow["dim"])
        others = {k: v for k, v in narrow.items() if k not in ("dim", "conditioning_channels")}
        mismatch = {k: (v, self.config[k]) for k, v in others.items() if self.config[k] != v}
        if rest or mismatch:
            raise ValueError(
                f"cannot adapt a state dict of width {narrow['dim']} to this network of width {self.config['dim']}: "
                + (f"the width is not a multiple of {narrow['dim']}" if rest else f"other settings differ {mismatch}")
                + "; build the network with the checkpoint's settings (RestoreRWKV.from_official)."
            )
        return widen_state_dict(state, factor, noise=noise, generator=generator)

    @classmethod
    def from_official(
        cls, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor], map_location: str | torch.device = "cpu"
    ) -> RestoreRWKV:
        """Build the network described by a Restore-RWKV state dict and load it.

        Accepts a path (loaded with ``weights_only=True``) or a mapping; the official layout of 2024
        (with unused ``att.dwconv`` weights) and the current one; BasicSR-style wrappers
        (``params``/``params_ema``/``state_dict``) and ``module.`` prefixes. Width, depths, recurrence,
        hidden rate, channels and spatial dimensionality are inferred from the tensors; the stored
        fused Omni-Shift kernels are ignored and recomputed.
        """
        state = _unwrap_state_dict(checkpoint, map_location)
        model = cls(**infer_config(state))
        model.load_state_dict(state)
        return model


def infer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments of :class:`RestoreRWKV` that produce the layout of ``state``."""
    try:
        embed, out = state["patch_embed.weight"], state["output.weight"]
        first = "encoder_level1.0."
        recurrence = state[first + "att.spatial_decay"].shape[0]
        hidden = state[first + "ffn.key.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"Not a Restore-RWKV state dict: missing {err.args[0]!r}.") from None
    dim = embed.shape[0]

    def depth(prefix: str) -> int:
        return len({key.split(".")[1] for key in state if key.startswith(prefix + ".") and key.endswith("gamma1")})

    # a network with conditioning channels records their number (the buffer "conditioning"); without it every input
    # channel is the image's, as in the published networks
    conditioning = int(state["conditioning"]) if "conditioning" in state else 0
    return {
        "spatial_dims": embed.dim() - 2,
        "in_channels": embed.shape[1] - conditioning,
        "out_channels": out.shape[0],
        "dim": dim,
        "num_blocks": tuple(depth(f"encoder_level{i}") for i in (1, 2, 3)) + (depth("latent"),),
        "num_refinement_blocks": depth("refinement"),
        "recurrence": recurrence,
        "hidden_rate": hidden // dim,
        "conditioning_channels": conditioning,
    }


def _unwrap_state_dict(
    checkpoint: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device
) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
    for wrapper in ("params_ema", "params", "state_dict", "model"):
        if isinstance(checkpoint, Mapping) and wrapper in checkpoint and isinstance(checkpoint[wrapper], Mapping):
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"Expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}.")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the spatial axes of (B, C, *S) at their far ends up to multiples of ``multiple``."""
    extra = [(-s) % multiple for s in x.shape[2:]]
    if not any(extra):
        return x
    pad: list[int] = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pad += [0, e]
    fits = all(e < s for e, s in zip(extra, x.shape[2:]))
    return F.pad(x, pad, mode="reflect" if fits else "replicate")
