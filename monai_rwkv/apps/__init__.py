"""
Applications: end-to-end restoration of image files (shared by the bundles and the ``monai-rwkv`` command),
the low-dose CT evaluation protocol, and bundle helpers.

Names are imported on first use, so that ``monai-rwkv`` can check its arguments before loading torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "bundle_input_spec": "bundle",
    "bundle_metadata": "bundle",
    "bundle_root": "bundle",
    "exit_on_errors": "bundle",
    "flag": "bundle",
    "load_bundle_config": "bundle",
    "load_bundle_network": "bundle",
    "model_name_version": "bundle",
    "post_processing": "bundle",
    "restoring_configs": "bundle",
    "run_evaluate": "bundle",
    "run_restore": "bundle",
    "task_config": "bundle",
    "weights_for": "bundle",
    "evaluate_restoration": "evaluate",
    "volume_slice_metrics": "evaluate",
    "volume_slices": "evaluate",
    "InputImage": "restore",
    "RestoreReport": "restore",
    "RestoreTask": "restore",
    "find_inputs": "restore",
    "plan_tasks": "restore",
    "read_volume": "restore",
    "restore_dataset": "restore",
    "restore_task": "restore",
    "restore_tasks": "restore",
    "AUTO_TASK": "routing",
    "TaskRouter": "routing",
    "TaskSpecs": "routing",
    "is_auto_task": "routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
