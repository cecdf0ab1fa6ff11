"""
One run over inputs of several modalities, for a bundle that serves several tasks with one network (the all-in-one
bundle's ``task`` ``"auto"``): each DICOM series goes to the task whose input modality its ``Modality`` names
(``CT`` to the CT task, ``MR`` to MRI, ``PT`` to PET), and is checked, restored and written exactly as under that
task. The modality of each task is its own bundle's (``network_data_format.inputs.image.modality`` in its
metadata): nothing here knows a modality.

A NIfTI file carries no modality, so it cannot be routed: it fails with one line that says to choose the task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from monai_rwkv.apps.bundle import task_config
from monai_rwkv.data import DICOM_MODALITY, InputSpec
from monai_rwkv.inference import VolumeRestorer

__all__ = ["AUTO_TASK", "TaskRouter", "TaskSpecs", "is_auto_task"]

#: the ``task`` value that chooses the task of each input by its DICOM Modality.
AUTO_TASK = "auto"


def is_auto_task(task: Any) -> bool:
    """Whether a ``task`` config value (any case, spaces around) asks for :data:`AUTO_TASK`."""
    return str(task).strip().lower() == AUTO_TASK


class TaskSpecs:
    """
    The input check of a multi-task bundle run with ``task`` ``"auto"``: the task of an image is the one whose
    :class:`~monai_rwkv.data.InputSpec` names the image's DICOM Modality, and the image is checked against that
    spec alone. Has :class:`~monai_rwkv.data.InputSpec`'s ``problems`` and ``describe``, so it goes wherever a
    spec does (:func:`~monai_rwkv.apps.restore.check_input`, ``restore_dataset(spec=...)``).

    Args:
        specs: task name -> its input spec; each must name a modality, and no two the same.

    Raises:
        ValueError: a spec without a modality, or two tasks of one modality.
    """

    def __init__(self, specs: Mapping[str, InputSpec]) -> None:
        self.specs = dict(specs)
        self.tasks: dict[str, str] = {}  # modality -> task
        for task, spec in self.specs.items():
            if not spec.modality:
                raise ValueError(f"task {task!r} names no input modality: its inputs cannot be chosen by Modality")
            if spec.modality in self.tasks:
                raise ValueError(f"tasks {self.tasks[spec.modality]!r} and {task!r} both take Modality {spec.modality}")
            self.tasks[spec.modality] = task

    @classmethod
    def from_tasks(cls, tasks: Mapping[str, str]) -> TaskSpecs:
        """The specs of the task bundles ``tasks`` (task -> bundle, as for :func:`~monai_rwkv.apps.task_config`)."""
        return cls({task: InputSpec.from_metadata(task_config(tasks, task).get("_meta_", {})) for task in tasks})

    def task_for(self, meta: Mapping[str, Any], path: str | os.PathLike = "") -> str:
        """
        The task of an image from its meta (the first source slice's DICOM Modality).

        Raises:
            ValueError: one line naming ``path``: no DICOM Modality (a NIfTI file), or one no task takes.
        """
        modality = str(meta.get(DICOM_MODALITY) or "").strip().upper()
        where = f"{os.fspath(path)}: " if os.fspath(path) else ""
        if not modality:
            raise ValueError(
                f"{where}no DICOM Modality to choose the task by (a NIfTI file carries none); "
                f"restore it with the task named (--task {self._choices()})"
            )
        if modality not in self.tasks:
            raise ValueError(f"{where}Modality {modality}: no task of this bundle takes it ({self._takes()})")
        return self.tasks[modality]

    def problems(self, image: torch.Tensor, meta: Mapping[str, Any], path: str | os.PathLike) -> list[str]:
        """The chosen task's :meth:`InputSpec.problems`; raises ``ValueError`` when no task can be chosen."""
        return self.specs[self.task_for(meta, path)].problems(image, meta, path)

    def describe(self) -> str:
        """What each task expects: ``"CT, 1 channel, ... (task ct); MR, ... (task mri)"``."""
        return "; ".join(f"{spec.describe()} (task {task})" for task, spec in self.specs.items())

    def _choices(self) -> str:
        tasks = list(self.specs)
        return ", ".join(tasks[:-1]) + f" or {tasks[-1]}" if len(tasks) > 1 else tasks[0]

    def _takes(self) -> str:
        return ", ".join(f"{modality} -> {task}" for modality, task in self.tasks.items())


class TaskRouter:
    """
    A restorer that restores each volume with the restorer of its task (:meth:`TaskSpecs.task_for`): the
    ``VolumeRestorer`` of a multi-task bundle run with ``task`` ``"auto"``.

    Args:
        restorers: task name -> that task's restorer (usually sharing one network).
        specs: the tasks' input specs (the same task names).

    Raises:
        ValueError: the tasks of ``restorers`` and ``specs`` differ, or the restorers write different types.
    """

    def __init__(self, restorers: Mapping[str, VolumeRestorer], specs: TaskSpecs) -> None:
        if set(restorers) != set(specs.specs):
            raise ValueError(f"restorers for tasks {sorted(restorers)}, input specs for {sorted(specs.specs)}")
        dtypes = {r.output_dtype for r in restorers.values()}
        if len(dtypes) != 1:
            raise ValueError(f"the tasks' restorers write different types {sorted(dtypes)}; set one output_dtype")
        self.restorers = dict(restorers)
        self.specs = specs
        self.output_dtype: str = dtypes.pop()

    @classmethod
    def from_tasks(
        cls, tasks: Mapping[str, str], settings: Mapping[str, Any], specs: TaskSpecs | None = None
    ) -> TaskRouter:
        """
        The router over every task of ``tasks`` (task -> bundle): each task's ``restorer`` from its own bundle's
        ``inference.json`` with ``settings`` set (e.g. ``{"network": network, "device": "cpu"}``, one network
        for all), see :func:`~monai_rwkv.apps.task_config`; ``specs``: ``TaskSpecs.from_tasks(tasks)`` if None.
        """
        restorers = {t: task_config(tasks, t, "inference.json", settings).get_parsed_content("restorer") for t in tasks}
        return cls(restorers, TaskSpecs.from_tasks(tasks) if specs is None else specs)

    def task_for(self, volume: torch.Tensor) -> str:
        """The task of ``volume`` (read by :func:`~monai_rwkv.apps.read_volume`, meta included)."""
        return self.specs.task_for(getattr(volume, "meta", {}))

    def __call__(self, volume: torch.Tensor, desc: str | None = None) -> torch.Tensor:
        """Restore ``volume`` with its task's restorer (see :class:`~monai_rwkv.inference.VolumeRestorer`)."""
        return self.restorers[self.task_for(volume)](volume, desc=desc)

    def describe(self) -> dict[str, Any]:
        """Each task's restorer settings, by task."""
        return {"tasks": {task: r.describe() for task, r in self.restorers.items()}}
