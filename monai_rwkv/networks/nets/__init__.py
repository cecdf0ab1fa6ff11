"""Restore-RWKV networks."""

from .classical import BilateralDenoiser, BM3DDenoiser, GaussianDenoiser, NonLocalMeansDenoiser
from .ensemble import SelfEnsemble, grid_symmetries
from .restore_rwkv import PRESETS, RestoreRWKV, infer_config

__all__ = [
    "PRESETS",
    "BM3DDenoiser",
    "BilateralDenoiser",
    "GaussianDenoiser",
    "NonLocalMeansDenoiser",
    "RestoreRWKV",
    "SelfEnsemble",
    "grid_symmetries",
    "infer_config",
]
