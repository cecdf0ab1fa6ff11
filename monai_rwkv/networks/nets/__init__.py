"""Restore-RWKV networks."""

from .classical import BilateralDenoiser, GaussianDenoiser, NonLocalMeansDenoiser
from .restore_rwkv import PRESETS, RestoreRWKV, infer_config

__all__ = ["PRESETS", "BilateralDenoiser", "GaussianDenoiser", "NonLocalMeansDenoiser", "RestoreRWKV", "infer_config"]
