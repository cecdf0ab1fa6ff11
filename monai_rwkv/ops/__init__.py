"""Operators of Restore-RWKV: the bidirectional WKV and its O(T^2) reference."""

from .reference import bi_wkv_at, bi_wkv_quadratic
from .wkv import bi_wkv, describe_backend

__all__ = ["bi_wkv", "bi_wkv_at", "bi_wkv_quadratic", "describe_backend"]
