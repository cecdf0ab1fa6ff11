"""Restore-RWKV networks."""

from .blend import BlendWithInput, check_strength
from .classical import BilateralDenoiser, BM3DDenoiser, GaussianDenoiser, NonLocalMeansDenoiser
from .ensemble import SelfEnsemble, grid_symmetries
from .restore_rwkv import PRESETS, RestoreRWKV, infer_config
from .widen import widen_state_dict

__all__ = [
    "PRESETS",
    "BM3DDenoiser",
    "BilateralDenoiser",
    "BlendWithInput",
    "GaussianDenoiser",
    "NonLocalMeansDenoiser",
    "RestoreRWKV",
    "SelfEnsemble",
    "check_strength",
    "grid_symmetries",
    "infer_config",
    "widen_state_dict",
]
