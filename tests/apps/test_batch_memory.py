"""A long batch in one process: resident memory stays bounded (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_rwkv.apps import load_bundle_config, restore_dataset
from tests.bundles.utils import TINY_NETWORK, make_tiny_bundle

STUDIES = 50
WARM_UP = 10
#: allowed RSS growth from study WARM_UP to the last one (docs/batch.md has measured numbers).
TOLERANCE_MB = 50.0


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc to measure RSS")
def test_fifty_studies_in_one_process_keep_memory_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for n in range(STUDIES):
        volume = rng.integers(-1000, 2000, size=(64, 64, 4)).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.5, 1.0])), data / f"study{n:03d}.nii.gz")
    bundle = make_tiny_bundle(tmp_path / "bundle")
    overrides = {f"network_def#{key}": value for key, value in TINY_NETWORK.items()}
    overrides |= {"device": "cpu", "roi_size": [32, 32], "progress": False}
    restorer = load_bundle_config(bundle, "inference.json", overrides).get_parsed_content("restorer")
    rss: list[float] = []
    report = restore_dataset(restorer, data, tmp_path / "out", "m", "1", callback=lambda _: rss.append(rss_mb()))
    assert report.ok and report.counts()["written"] == STUDIES and len(rss) == STUDIES
    growth = rss[-1] - rss[WARM_UP - 1]
    print(f"RSS MB after studies 1, {WARM_UP}, {STUDIES}: {rss[0]:.1f}, {rss[WARM_UP - 1]:.1f}, {rss[-1]:.1f}")
    seconds = [s.seconds for s in report.studies]
    print(f"growth {WARM_UP}->{STUDIES}: {growth:.1f} MB; max {max(rss):.1f} MB; {np.mean(seconds):.2f} s/study")
    print(f"per study: {np.round(rss, 1).tolist()}")
    assert growth < TOLERANCE_MB, rss
