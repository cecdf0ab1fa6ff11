"""A bundle's ``train.json`` as a MONAI Label train task: fine-tune the bundle's network on the datastore."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.data import partition_dataset
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import device_list, name_to_device

from monai_rwkv.apps.bundle import flag

__all__ = ["MODES", "RestorationTrainTask"]

logger = logging.getLogger(__name__)

#: where the training pairs come from (the request's ``mode``); see :meth:`RestorationTrainTask.datalist`.
MODES = ("auto", "pairs", "labels", "images")


class RestorationTrainTask(TrainTask):
    """
    Fine-tune a bundle with its own ``train.json`` (merged over ``inference.json``, as ``python -m monai.bundle run
    --config_file "['configs/inference.json','configs/train.json']"``): the same transforms, degradation
    simulation, loss, optimiser, validation metric and best-model saving, with the datastore as the data.

    Training data (request ``mode``):

    * ``pairs``: each datastore image with a *final* label is a (degraded input, clean target) pair, e.g. a low-dose
      CT and its full-dose scan (bundles whose ``train.json`` has ``paired``);
    * ``labels``: the final labels are clean volumes; the bundle simulates the degradation (low dose, k-space
      truncation, ...) on the fly;
    * ``images``: every datastore image is a clean volume; the degradation is simulated;
    * ``auto`` (default): ``pairs`` if the bundle can train on pairs and some images have final labels, else
      ``labels`` if some have, else ``images``.

    The request's ``images`` (comma-separated image ids) restricts training to those images, e.g. to the images of
    the bundle's modality in a datastore shared by several bundles (default: all images).

    The request's ``val_split`` of the volumes (at least one) is held out for validation (a single volume is used for
    both). The best weights (validation PSNR) go to ``<model_dir>/<name>/model.pt``, which the bundle's infer task
    then uses; each run's log and checkpoints stay in ``<model_dir>/<name>/runs/<time>/``.
    """

    def __init__(self, bundle: str | os.PathLike, conf: dict[str, str], finetuned: str | os.PathLike):
        self.bundle = Path(bundle)
        self.conf = conf
        self.finetuned = Path(finetuned)
        configs = self.bundle / "configs"
        meta = json.loads((configs / "metadata.json").read_text(encoding="utf-8"))
        self.version = meta.get("version")
        self.train_config = json.loads((configs / "train.json").read_text(encoding="utf-8"))
        super().__init__(f"Fine-tune {meta.get('name', self.bundle.name)} on the datastore")

    @property
    def supports_pairs(self) -> bool:
        return "paired" in self.train_config

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update({"bundle": self.bundle.name, "version": self.version})
        return info

    def config(self) -> dict[str, Any]:
        return {
            "device": device_list(),
            "mode": list(MODES),
            "images": "",
            "pretrained": True,
            "max_epochs": 10,
            "epoch_length": 50,
            "val_split": 0.2,
            "learning_rate": self.train_config.get("learning_rate", 1e-3),
            "seed": self.train_config.get("seed", 0),
        }

    def stats(self) -> dict[str, Any]:
        summary = self.finetuned.parent / "last_run.json"
        try:
            return json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def datalist(
        self, mode: str, datastore: Datastore, images: str | list[str] | None = None
    ) -> tuple[str, list[dict[str, str]]]:
        """
        ``(mode, items)``: the resolved mode and the bundle's datalist items (``label`` [+ ``image``]) from the
        datastore's images (only those whose ids are in ``images``, a list or comma-separated string, if given).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        ids = list(datastore.list_images())
        if images:
            wanted = [i.strip() for i in images.split(",")] if isinstance(images, str) else [str(i) for i in images]
            unknown = sorted(set(wanted) - set(ids))
            if unknown:
                raise ValueError(f"{self.bundle.name}: no such image(s) in the datastore: {', '.join(unknown)}")
            ids = [i for i in ids if i in wanted]
        paths = {os.path.realpath(datastore.get_image_uri(i)) for i in ids}
        pairs = [
            {"image": d["image"], "label": d["label"]}
            for d in datastore.datalist()
            if d and d.get("label") and os.path.realpath(d["image"]) in paths
        ]
        if mode == "auto":
            mode = ("pairs" if self.supports_pairs else "labels") if pairs else "images"
        if mode == "pairs":
            if not self.supports_pairs:
                raise ValueError(f"{self.bundle.name}: train.json has no 'paired' option; use mode labels or images")
            items = pairs
        elif mode == "labels":
            items = [{"label": d["label"]} for d in pairs]
        else:
            items = [{"label": datastore.get_image_uri(i)} for i in ids]
        if not items:
            raise ValueError(f"{self.bundle.name}: no training data for mode {mode!r} ({len(pairs)} labelled images)")
        return mode, items

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        mode, items = self.datalist(str(request.get("mode", "auto")), datastore, request.get("images"))
        val_split = float(request.get("val_split", 0.2))
        if len(items) == 1:
            train, val = items, items
        else:
            n_val = min(len(items) - 1, max(1, round(val_split * len(items))))
            train, val = partition_dataset(items, ratios=[len(items) - n_val, n_val], shuffle=False)
        run_dir = self.finetuned.parent / "runs" / time.strftime("%Y%m%d-%H%M%S")
        init = self.finetuned if self.finetuned.is_file() else self.bundle / "models" / "model.pt"
        pretrained = flag(request.get("pretrained", True), "pretrained") and init.is_file()
        overrides = {
            "bundle_root": os.fspath(self.bundle.absolute()),
            "dataset_dir": os.fspath(run_dir),
            "output_dir": os.fspath(run_dir),
            "device": name_to_device(request.get("device", "cuda")),
            "init_weights": os.fspath(init) if pretrained else None,
            "resume": False,
            "max_epochs": int(request.get("max_epochs", 10)),
            "epoch_length": int(request.get("epoch_length", 50)),
            "learning_rate": float(request.get("learning_rate", self.train_config.get("learning_rate", 1e-3))),
            "seed": int(request.get("seed", self.train_config.get("seed", 0))),
            "val_interval": 1,  # validate (and keep the best weights) after every epoch
            "progress": False,
            "num_workers": 0,
            "train#dataset#data": train,
            "validate#dataset#data": val,
        }
        if self.supports_pairs:
            overrides["paired"] = mode == "pairs"
        logger.info(
            "%s: fine-tuning on %d + %d volume(s), mode %s, in %s",
            self.bundle.name,
            len(train),
            len(val),
            mode,
            run_dir,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        parser = ConfigParser()
        configs = self.bundle / "configs"
        parser.read_config([os.fspath(configs / "inference.json"), os.fspath(configs / "train.json")])
        parser.read_meta(os.fspath(configs / "metadata.json"))
        parser.update(overrides)
        parser.get_parsed_content("initialize")
        parser.get_parsed_content("run")
        trainer = parser.get_parsed_content("train#trainer")
        best = run_dir / "model.pt"
        if not best.is_file():
            raise RuntimeError(f"{self.bundle.name}: training wrote no {best}")
        tmp = self.finetuned.with_name(f".{self.finetuned.name}.tmp")
        shutil.copyfile(best, tmp)
        os.replace(tmp, self.finetuned)
        metric = parser.get_parsed_content("validate#evaluator").state.best_metric
        summary = {
            "bundle": self.bundle.name,
            "mode": mode,
            "train_volumes": len(train),
            "val_volumes": len(val),
            "epochs": int(trainer.state.epoch),
            "iterations": int(trainer.state.iteration),
            "best_val_psnr": float(metric),
            "init_weights": overrides["init_weights"],
            "model": os.fspath(self.finetuned),
            "run_dir": os.fspath(run_dir),
            "seconds": round(time.time() - start, 2),
        }
        (self.finetuned.parent / "last_run.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        logger.info("%s: fine-tuned weights %s (%s)", self.bundle.name, self.finetuned, summary)
        return summary
