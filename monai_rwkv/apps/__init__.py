"""
Applications: end-to-end restoration of image files (shared by the bundles and the ``monai-rwkv`` command),
the low-dose CT evaluation protocol, and bundle helpers.
"""

from monai_rwkv.apps.bundle import (
    bundle_root,
    exit_on_errors,
    load_bundle_config,
    load_bundle_network,
    model_name_version,
    run_evaluate,
    run_restore,
)
from monai_rwkv.apps.evaluate import evaluate_low_dose, simulate_low_dose_volume, volume_slice_metrics
from monai_rwkv.apps.restore import (
    InputImage,
    RestoreReport,
    RestoreTask,
    find_inputs,
    plan_tasks,
    read_volume,
    restore_dataset,
    restore_task,
    restore_tasks,
)

__all__ = [
    "InputImage",
    "RestoreReport",
    "RestoreTask",
    "bundle_root",
    "evaluate_low_dose",
    "exit_on_errors",
    "find_inputs",
    "load_bundle_config",
    "load_bundle_network",
    "model_name_version",
    "plan_tasks",
    "read_volume",
    "restore_dataset",
    "restore_task",
    "restore_tasks",
    "run_evaluate",
    "run_restore",
    "simulate_low_dose_volume",
    "volume_slice_metrics",
]
