"""Which bundles the app serves (the ``bundles`` conf option) and where fine-tuned weights go (``model_dir``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai_rwkv.bundles import find_bundle, list_bundles, served_tasks, short_name

__all__ = ["bundle_tasks", "finetuned_weights", "served_bundles"]


def served_bundles(spec: str | None = None) -> dict[str, Path]:
    """
    ``{task name: bundle folder}`` for the app's ``--conf bundles <spec>``.

    ``spec`` is a comma-separated list of bundle names (``ct_denoise``), bundle folders, or folders that hold
    bundles (each bundle in them is served); empty or None serves every bundle that comes with ``monai_rwkv``
    (:func:`monai_rwkv.bundles.list_bundles`). A task is named after its bundle's short name.

    Raises:
        monai_rwkv.bundles.BundleNotFoundError: an entry is neither a bundle nor a folder of bundles.
        ValueError: two bundles would get the same task name.
    """
    entries = [e.strip() for e in (spec or "").split(",") if e.strip()]
    found: list[Path] = []
    if not entries:
        found = [info.path for info in list_bundles()]
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir() and not (path / "configs" / "inference.json").is_file():
            inside = [info.path for info in list_bundles(path)]
            if inside:
                found += inside
                continue
        found.append(find_bundle(entry))
    bundles: dict[str, Path] = {}
    for path in found:
        if not (path / "configs" / "inference.json").is_file():
            continue  # a bundle still being assembled (metadata but no inference config)
        name = short_name(path.name)
        if name in bundles and bundles[name].resolve() != path.resolve():
            raise ValueError(f"two bundles named {name!r}: {bundles[name]} and {path}")
        bundles[name] = path.absolute()
    return bundles


def finetuned_weights(model_dir: str | os.PathLike, name: str) -> Path:
    """Where the train task of bundle ``name`` puts its fine-tuned weights (the infer task prefers them)."""
    return Path(model_dir) / name / "model.pt"


def bundle_tasks(bundle: str | os.PathLike) -> list[str]:
    """
    The tasks of a bundle that serves several with one network (:func:`monai_rwkv.bundles.served_tasks` of its
    ``configs/inference.json``, as in the all-in-one bundle), ``[]`` for a bundle of one task. The app serves such a
    bundle as one infer task per task (``<bundle>_<task>``) and gives it no train task: its training needs a dataset
    of every task, and a MONAI Label datastore holds one.
    """
    config = json.loads((Path(bundle) / "configs" / "inference.json").read_text(encoding="utf-8"))
    return served_tasks(config)
