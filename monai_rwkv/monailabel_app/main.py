"""
The MONAI Label app of monai_rwkv: every bundle as an infer task (type ``"others"``) and a train task; a bundle that
serves several tasks with one network (the all-in-one bundle) as one infer task per task (``all_in_one_mri``, ...)
and no train task.

Start it with ``monailabel start_server --app <this folder> --studies <images> --conf zoo_source local`` (see
docs/monailabel.md). Options (``--conf key value``):

* ``bundles``: comma-separated bundle names, bundle folders or folders of bundles to serve (default: every bundle
  that comes with monai_rwkv);
* ``model_dir``: where the train tasks put fine-tuned weights (default ``<app>/model``); an infer task uses its
  bundle's fine-tuned weights from there when they exist, the bundle's ``models/model.pt`` otherwise;
* ``preload``: ``true`` loads every network at start-up (MONAI Label's option).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp

import monai_rwkv
from monai_rwkv.monailabel_app.lib.bundles import bundle_tasks, finetuned_weights, served_bundles
from monai_rwkv.monailabel_app.lib.infers import RestorationInferTask
from monai_rwkv.monailabel_app.lib.trainers import RestorationTrainTask

__all__ = ["RestoreRWKVApp"]

logger = logging.getLogger(__name__)


class RestoreRWKVApp(MONAILabelApp):
    """Serves this project's bundles: restoration (denoising, super-resolution, synthesis) of whole volumes."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles = served_bundles(conf.get("bundles"))
        self.model_dir = Path(conf.get("model_dir") or Path(app_dir) / "model").absolute()
        logger.info("Restore-RWKV bundles: %s; fine-tuned weights in %s", self.bundles, self.model_dir)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Restore-RWKV",
            description="Image restoration with Restore-RWKV bundles: results are float images in physical units",
            version=monai_rwkv.__version__,
        )

    def init_infers(self) -> dict[str, RestorationInferTask]:
        infers = {}
        for name, path in self.bundles.items():
            tasks = bundle_tasks(path)
            if tasks:  # one infer task per task of a bundle that serves several (no fine-tuned weights: no train task)
                served = {f"{name}_{t}": RestorationInferTask(path, self.conf, overrides={"task": t}) for t in tasks}
            else:
                served = {name: RestorationInferTask(path, self.conf, finetuned_weights(self.model_dir, name))}
            for infer_name, task in served.items():
                if task.is_valid():
                    infers[infer_name] = task
                else:
                    logger.warning("%s: not served (no configs/inference.json or models/model.pt)", path)
        return infers

    def init_trainers(self) -> dict[str, RestorationTrainTask]:
        return {
            name: RestorationTrainTask(path, self.conf, finetuned_weights(self.model_dir, name))
            for name, path in self.bundles.items()
            if os.path.isfile(path / "configs" / "train.json") and not bundle_tasks(path)
        }
