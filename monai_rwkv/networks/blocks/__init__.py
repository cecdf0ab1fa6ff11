"""Building blocks of Restore-RWKV (MONAI style: every block takes ``spatial_dims``)."""

from .omni_shift import OmniShift
from .rwkv import ChannelMix, ReWKV, RWKVBlock, TokenLayerNorm, scan_order, to_image, to_tokens
from .sampling import Downsample, PixelShuffle, PixelUnshuffle, Upsample

__all__ = [
    "ChannelMix",
    "Downsample",
    "OmniShift",
    "PixelShuffle",
    "PixelUnshuffle",
    "RWKVBlock",
    "TokenLayerNorm",
    "ReWKV",
    "Upsample",
    "scan_order",
    "to_image",
    "to_tokens",
]
