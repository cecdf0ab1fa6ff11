"""Restore-RWKV networks."""

from .restore_rwkv import PRESETS, RestoreRWKV, infer_config

__all__ = ["PRESETS", "RestoreRWKV", "infer_config"]
