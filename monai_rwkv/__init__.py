"""Restore-RWKV medical image restoration for MONAI."""

__version__ = "0.1.0"
