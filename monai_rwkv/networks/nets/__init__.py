"""Restore-RWKV networks."""

from .classical import BilateralDenoiser, BM3DDenoiser, GaussianDenoiser, NonLocalMeansDenoiser
from .restore_rwkv import PRESETS, RestoreRWKV, infer_config

__all__ = [
    "PRESETS",
    "BM3DDenoiser",
    "BilateralDenoiser",
    "GaussianDenoiser",
    "NonLocalMeansDenoiser",
    "RestoreRWKV",
    "infer_config",
]
