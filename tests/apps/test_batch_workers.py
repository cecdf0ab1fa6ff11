"""Batch restoration in worker processes, and exclusive claims on studies shared by several runs."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from torch import nn

from monai_rwkv.apps import load_bundle_config, run_restore
from monai_rwkv.apps.batch import manifest_path
from monai_rwkv.apps.claims import ClaimHolder, StudyClaimed, _take_over, acquire_claim, claim_path
from monai_rwkv.apps.cli import main, parse_args
from monai_rwkv.apps.restore import restore_dataset, run_study
from monai_rwkv.apps.workers import BundleRestorerFactory, RestorerFactory, default_worker_threads
from monai_rwkv.inference import SliceWiseRestorer
from monai_rwkv.networks.nets import RestoreRWKV
from tests.bundles.utils import TINY_CLI_ARGS, TINY_NETWORK, make_tiny_bundle
from tests.robustness.conftest import write_ct_series

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


class Recording:
    """
    An identity restorer that waits ``delay`` seconds and appends ``<pid> <input name> <torch threads>
    <OMP_NUM_THREADS> <NUMBA_NUM_THREADS>`` to ``log``.
    """

    def __init__(self, delay: float = 0.0, log: str | None = None, fail_on: str | None = None):
        self.inner = SliceWiseRestorer(nn.Identity(), roi_size=(16, 16), device="cpu", progress=False)
        self.output_dtype = self.inner.output_dtype
        self.delay, self.log, self.fail_on = delay, log, fail_on

    def __call__(self, volume, desc=None):
        if self.log is not None:
            threads = (
                f"{torch.get_num_threads()} {os.environ.get('OMP_NUM_THREADS')} {os.environ.get('NUMBA_NUM_THREADS')}"
            )
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {desc} {threads}\n")
        time.sleep(self.delay)
        if desc == self.fail_on:
            raise KeyboardInterrupt  # as Ctrl-C (or SIGTERM, raised as Terminated) in the middle of a study
        return self.inner(volume, desc=desc)

    def describe(self):
        return self.inner.describe()


@dataclass(frozen=True)
class RecordingFactory(RestorerFactory):
    """Picklable: each worker process builds its own :class:`Recording`."""

    delay: float = 0.0
    log: str | None = None

    def build(self) -> Recording:
        return Recording(self.delay, self.log)


def write_volume(path: Path, seed: int, shape=(20, 16, 2)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(-1000, 1500, size=shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, AFFINE), path)


def nifti_dataset(folder: Path, n: int = 4) -> Path:
    for k in range(n):
        write_volume(folder / f"v{k}.nii.gz", seed=k)
    return folder


def summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def statuses(report) -> dict[str, str]:
    return {s.name: s.status for s in report.studies}


def hidden(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.rglob(f".*{suffix}"))


def write_claim(path: Path, holder: ClaimHolder) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(holder.to_json())


def holder_of(pid: int, host: str | None = None, started: float | None = None, **kwargs) -> ClaimHolder:
    stat = Path(f"/proc/{pid}/stat")
    start = int(stat.read_text().rsplit(")", 1)[1].split()[19]) if stat.exists() else None
    kwargs.setdefault("pid_start", start)
    when = time.time() if started is None else started
    return ClaimHolder(host or socket.gethostname(), pid, when, "f" * 16, **kwargs)


def test_two_workers_write_what_one_process_writes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle")
    data = nifti_dataset(tmp_path / "data", 3)
    write_ct_series(data / "series", n=3)
    one, two = tmp_path / "one", tmp_path / "two"

    assert main(["batch", "--bundle", str(bundle), str(data), str(one), *TINY_CLI_ARGS]) == 0
    capsys.readouterr()
    started = time.perf_counter()
    tiny = [arg for arg in TINY_CLI_ARGS if arg != "--no-progress"]
    assert main(["batch", "--bundle", str(bundle), str(data), str(two), "--workers", "2", *tiny]) == 0
    out, err = capsys.readouterr()
    out = out.splitlines()
    assert "studies: 100%" in err and "4/4" in err and "slice" not in err  # a bar over studies, none per slice
    print(f"--workers 2: {time.perf_counter() - started:.1f} s")
    assert sorted(line.split(":")[0] for line in out[:-1]) == ["series", "v0", "v1", "v2"]
    assert out[-1] == f"4 studies: 4 written, 0 skipped, 0 redone, 0 failed; summary: {two / 'restore_summary.csv'}"

    rows_one, rows_two = summary(one / "restore_summary.csv"), summary(two / "restore_summary.csv")
    assert [(r["name"], r["status"]) for r in rows_two] == [(r["name"], r["status"]) for r in rows_one]
    assert [r["name"] for r in rows_two] == ["v0", "v1", "v2", "series"]  # every study once, in input order
    for k in range(3):
        a, b = nib.load(one / f"v{k}_restored.nii.gz"), nib.load(two / f"v{k}_restored.nii.gz")
        np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(b.affine, a.affine)
    a, b = nib.load(one / "series_restored.nii.gz"), nib.load(two / "series_restored.nii.gz")
    np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), rtol=1e-6, atol=1e-4)
    slices_one, slices_two = sorted((one / "series_restored").iterdir()), sorted((two / "series_restored").iterdir())
    assert [p.name for p in slices_two] == [p.name for p in slices_one] and len(slices_two) == 3
    for x, y in zip(slices_one, slices_two):
        np.testing.assert_array_equal(pydicom.dcmread(y).pixel_array, pydicom.dcmread(x).pixel_array)
    assert hidden(two, ".lock") == [] and len(hidden(two, ".restore.json")) == 4


def test_workers_build_the_bundle_restorer_from_its_config_and_overrides(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "bundle")
    overrides = {f"network_def#{key}": value for key, value in TINY_NETWORK.items()}
    factory = BundleRestorerFactory.from_parser(load_bundle_config(bundle, "inference.json", overrides), bundle)
    assert pickle.loads(pickle.dumps(factory)) == factory  # what a spawned worker receives: config, not a network
    restorer = factory.for_worker().build()
    tiny = sum(p.numel() for p in RestoreRWKV(**TINY_NETWORK).parameters())
    assert restorer.progress is False and sum(p.numel() for p in restorer.network.parameters()) == tiny
    with pytest.raises(SystemExit, match="workers > 1 needs a bundle run"):
        run_restore(Recording(), tmp_path, tmp_path / "out", {}, workers=2)
    with pytest.raises(SystemExit, match="--workers: expected a positive integer, got '0'"):
        run_restore(Recording(), tmp_path, tmp_path / "out", {}, workers="0")


def test_the_bundle_run_passes_workers_and_its_config_to_the_workers(tmp_path: Path, monkeypatch) -> None:
    from monai.bundle import ConfigWorkflow

    import monai_rwkv.apps.workers as workers_module

    seen = []

    def in_this_process(factory, tasks, model, *args):  # as restore_in_workers, without starting processes
        seen.append((factory, *args[-4:-1]))
        return [run_study(factory.for_worker().build(), task, model) for task in tasks]

    monkeypatch.setattr(workers_module, "restore_in_workers", in_this_process)
    data = nifti_dataset(tmp_path / "data", 2)
    ct = make_tiny_bundle(tmp_path / "ct")
    other = make_tiny_bundle(tmp_path / "other")  # a config with no "workers" item (as the PET bundle's)
    config = json.loads((other / "configs" / "inference.json").read_text())
    del config["workers"]
    config["run"] = [config["run"][0].replace(", workers=@workers", "")]
    (other / "configs" / "inference.json").write_text(json.dumps(config))
    tiny = {f"network_def#{key}": value for key, value in TINY_NETWORK.items()} | {"roi_size": [16, 16]}
    for bundle in (ct, other):
        workflow = ConfigWorkflow(
            str(bundle / "configs" / "inference.json"),
            logging_file=False,
            workflow_type="infer",
            dataset_dir=str(data),
            output_dir=str(tmp_path / bundle.name),
            workers="2",  # as `--workers 2` reaches the config
            **tiny,
        )
        workflow.initialize()
        (report,) = workflow.run()
        assert report.ok and statuses(report) == {"v0": "written", "v1": "written"}
    assert [(type(f).__name__, workers, threads, progress) for f, workers, threads, progress in seen] == [
        ("BundleRestorerFactory", 2, None, True)
    ] * 2
    assert seen[0][0].bundle_root == str(ct) and seen[0][0].config["network_def"]["dim"] == 8


def test_default_threads_per_worker_divide_torch_threads() -> None:
    args = parse_args(["batch", "--bundle", "b", "in", "out", "--workers", "2", "--worker-threads", "3"])
    assert (args.workers, args.worker_threads) == (2, 3)
    assert (parse_args(["batch", "--bundle", "b", "in", "out"]).workers, args.no_progress) == (1, False)
    with pytest.raises(SystemExit):
        parse_args(["batch", "--bundle", "b", "in", "out", "--workers", "0"])
    total = torch.get_num_threads()
    assert default_worker_threads(1) == total and default_worker_threads(total + 1) == 1
    assert default_worker_threads(2) == max(1, total // 2)


def test_two_concurrent_runs_restore_each_study_exactly_once(tmp_path: Path) -> None:
    data = nifti_dataset(tmp_path / "data", 4)
    out, log = tmp_path / "out", tmp_path / "calls.log"
    barrier, reports = threading.Barrier(2), {}

    def run(name: str) -> None:
        barrier.wait()
        summary_file = tmp_path / f"summary_{name}.csv"
        reports[name] = restore_dataset(RecordingFactory(0.3, str(log)), data, out, "m", "1", summary_file=summary_file)

    threads = [threading.Thread(target=run, args=(name,)) for name in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    names = [f"v{k}" for k in range(4)]
    calls = sorted(line.split()[1] for line in log.read_text().splitlines())
    assert calls == sorted(f"{n}.nii.gz" for n in names)  # each study restored by exactly one run
    for name in names:
        pair = sorted([statuses(reports["A"])[name], statuses(reports["B"])[name]])
        assert pair in (["claimed", "written"], ["skipped", "written"]), (name, pair)
    assert any(s.status == "claimed" for r in reports.values() for s in r.studies)  # the runs did overlap
    claimed = next(s for r in reports.values() for s in r.studies if s.status == "claimed")
    assert claimed.detail.startswith(f"claimed by {socket.gethostname()} pid {os.getpid()} since ")
    assert claimed.detail.endswith("; left to that run")
    assert reports["A"].ok and reports["B"].ok and hidden(out, ".lock") == []
    rows = summary(tmp_path / "summary_A.csv")
    assert sorted(r["name"] for r in rows) == names and {r["status"] for r in rows} <= {"written", "claimed", "skipped"}

    state = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*_restored.nii.gz")}
    assert statuses(restore_dataset(RecordingFactory(), data, out, "m", "1")) == dict.fromkeys(names, "skipped")
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*_restored.nii.gz")} == state


def test_a_study_claimed_by_a_live_process_is_left_to_it(tmp_path: Path) -> None:
    data = nifti_dataset(tmp_path / "data", 2)
    out = tmp_path / "out"
    other = subprocess.Popen(["sleep", "60"])
    try:
        claim = claim_path([out / "v0_restored.nii.gz"])
        write_claim(claim, holder_of(other.pid))
        before = claim.read_bytes()
        report = restore_dataset(RecordingFactory(), data, out, "m", "1")
        assert report.ok and statuses(report) == {"v0": "claimed", "v1": "written"}
        assert report.counts()["claimed"] == 1 and report.counts_line().endswith("0 failed, 1 claimed")
        assert not (out / "v0_restored.nii.gz").exists() and not manifest_path([out / "v0_restored.nii.gz"]).exists()
        assert claim.read_bytes() == before  # the other process's claim is untouched
        rows = summary(out / "restore_summary.csv")
        assert rows[0]["status"] == "claimed" and f"pid {other.pid}" in rows[0]["detail"] and rows[0]["outputs"] == ""
    finally:
        other.kill()
        other.wait()
    report = restore_dataset(RecordingFactory(), data, out, "m", "1")  # its process is gone: taken over
    assert statuses(report) == {"v0": "written", "v1": "skipped"}
    detail = report.studies[0].detail
    assert detail.startswith(f"stale claim of {socket.gethostname()} pid {other.pid} since ")
    assert detail.endswith(" taken over (its process is gone)")
    assert hidden(out, ".lock") == []


def test_stale_claims_are_taken_over_and_their_leftovers_removed(tmp_path: Path) -> None:
    data = nifti_dataset(tmp_path / "data", 6)
    out = tmp_path / "out"
    gone = subprocess.Popen(["true"])
    gone.wait()
    zombie = subprocess.Popen(["true"])  # exited, not yet waited for: its process id still exists
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    old = time.time() - 7200
    claims = {
        "v0": holder_of(gone.pid),  # a process of this host that is gone
        "v1": holder_of(os.getpid(), pid_start=1),  # this process id, but another process's start time: reused
        "v2": holder_of(1234, host="elsewhere.example", started=old),  # another host's, older than the timeout
        "v3": holder_of(1234, host="elsewhere.example"),  # another host's, recent: it holds
        "v4": holder_of(os.getpid(), boot_id="another-boot"),  # taken before the host restarted
        "v5": holder_of(zombie.pid),
    }
    for name, holder in claims.items():
        write_claim(claim_path([out / f"{name}_restored.nii.gz"]), holder)
    (out / ".tmp-0123456789ab-v0_restored.nii.gz").write_bytes(b"partial")  # left by the dead process's writers
    (out / ".tmp-0123456789ab-.v0_restored.restore.json").write_bytes(b"{")
    (out / ".v0_restored.lock.tmp-0123456789abcdef").write_bytes(b"{")  # ... and by its claim
    report = restore_dataset(RecordingFactory(), data, out, "m", "1", claim_timeout=3600)
    zombie.wait()
    expected = dict.fromkeys(claims, "written") | {"v3": "claimed"}
    assert statuses(report) == expected
    details = {s.name: s.detail for s in report.studies}
    assert details["v0"].endswith("taken over (its process is gone)")
    assert details["v1"].endswith("taken over (its process is gone (the process id is reused))")
    assert details["v2"].startswith("stale claim of elsewhere.example pid 1234 since ")
    assert details["v2"].endswith("taken over (claimed 2.0 h ago from another host (timeout 1 h))")
    assert details["v3"].startswith("claimed by elsewhere.example pid 1234 since ")
    assert details["v4"].endswith("taken over (the host restarted since)")
    assert details["v5"].endswith("taken over (its process is gone (exited))")
    assert report.ok and hidden(out, ".lock") == [claim_path([out / "v3_restored.nii.gz"])]
    assert not list(out.glob(".tmp-*")) and not list(out.glob("*.tmp-*"))


def test_an_unreadable_claim_is_stale_after_a_minute_and_take_overs_are_serialised(tmp_path: Path) -> None:
    claim = tmp_path / "out" / ".a_restored.lock"
    claim.parent.mkdir()
    claim.write_bytes(b"")  # a claim being written by a process without hard links
    with pytest.raises(StudyClaimed, match="claim being written"):
        acquire_claim(claim)
    os.utime(claim, (time.time() - 120, time.time() - 120))
    with acquire_claim(claim) as taken:
        assert "unreadable claim" in taken.note and json.loads(claim.read_text())["pid"] == os.getpid()
    assert not claim.exists()

    claim.write_bytes(b"stale")
    guard = claim.with_name(claim.name + ".takeover")
    guard.write_bytes(b"")  # another process is taking this claim over right now
    assert _take_over(claim, b"stale") == "busy" and claim.exists()
    os.utime(guard, (time.time() - 60, time.time() - 60))  # ... or died doing so
    assert _take_over(claim, b"stale") == "changed" and not guard.exists()
    assert _take_over(claim, b"other") == "changed" and claim.exists()  # replaced meanwhile: judged again
    assert _take_over(claim, b"stale") == "removed" and not claim.exists() and not guard.exists()


def test_a_claim_is_released_when_a_study_fails_or_is_interrupted(tmp_path: Path) -> None:
    data = nifti_dataset(tmp_path / "data", 2)
    (data / "sub").mkdir()
    (data / "sub" / "bad.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    report = restore_dataset(RecordingFactory(), data, out, "m", "1")
    assert statuses(report) == {"sub/bad": "failed", "v0": "written", "v1": "written"}
    assert hidden(out, ".lock") == [] and not (out / "sub").exists()  # nor the folder made for its claim

    with pytest.raises(KeyboardInterrupt):
        restore_dataset(Recording(fail_on="v1.nii.gz"), data, tmp_path / "out2", "m", "1")
    assert hidden(tmp_path / "out2", ".lock") == [] and not (tmp_path / "out2" / "v1_restored.nii.gz").exists()


def test_a_killed_worker_leaves_no_claim_that_blocks_the_next_run(tmp_path: Path) -> None:
    data = nifti_dataset(tmp_path / "data", 5)
    out, log = tmp_path / "out", tmp_path / "calls.log"
    signals: dict[str, tuple[int, str]] = {}

    def stop_workers() -> None:
        """SIGKILL the first worker seen restoring; SIGTERM the other once it has gone on to its second study."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(signals) < 2:
            calls = [line.split()[:2] for line in log.read_text().splitlines()] if log.exists() else []
            if calls and "kill" not in signals:
                pid, name = calls[0]
                os.kill(int(pid), signal.SIGKILL)
                signals["kill"] = int(pid), name.split(".")[0]
            elif "kill" in signals:
                others = [(int(p), n) for p, n in calls if int(p) != signals["kill"][0]]
                if len(others) >= 2:
                    os.kill(others[-1][0], signal.SIGTERM)
                    signals["term"] = others[-1][0], others[-1][1].split(".")[0]
            time.sleep(0.02)

    stopper = threading.Thread(target=stop_workers)
    stopper.start()
    report = restore_dataset(RecordingFactory(1.0, str(log)), data, out, "m", "1", workers=2)
    stopper.join()
    killed, terminated = signals["kill"][1], signals["term"][1]
    outcome = {s.name: s for s in report.studies}
    assert [s.name for s in report.studies] == [f"v{k}" for k in range(5)]  # every study once
    assert outcome[killed].status == "failed" and "died (exit code -9) while restoring it" in outcome[killed].detail
    assert outcome[terminated].status == "failed" and "(exit code 143)" in outcome[terminated].detail
    assert report.counts()["written"] == 1  # the other worker went on after the first was killed ...
    stopped = [s for s in report.studies if "not restored: every worker process stopped" in s.detail]
    assert len(stopped) == 2 and not report.ok  # ... until it was stopped too: the rest failed
    threads = {tuple(line.split()[2:]) for line in log.read_text().splitlines()}
    n = str(default_worker_threads(2))
    assert threads == {(n, n, n)}  # torch threads and the thread variables of each worker
    # SIGTERM: the worker removed its claim; SIGKILL: the claim is left, with a process id that is gone
    assert hidden(out, ".lock") == [claim_path([out / f"{killed}_restored.nii.gz"])]

    again = restore_dataset(RecordingFactory(), data, out, "m", "1")
    assert again.ok and statuses(again)[terminated] == "written"  # it left neither claim nor manifest
    assert {s.status for s in again.studies if s.name not in (killed, terminated)} <= {"written", "skipped"}
    taken = next(s for s in again.studies if s.name == killed)
    assert taken.status == "redone" and taken.detail.startswith(f"stale claim of {socket.gethostname()} pid ")
    assert taken.detail.endswith(" taken over (its process is gone); interrupted (outputs claimed, never recorded)")
    assert hidden(out, ".lock") == [] and not list(out.glob(".tmp-*"))
