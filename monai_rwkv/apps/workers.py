"""
Batch restoration in worker processes: one model per worker, studies pulled from a shared queue.

:func:`restore_in_workers` (used by :func:`~monai_rwkv.apps.restore.restore_tasks` when ``workers > 1``) starts
``workers`` processes with the ``spawn`` start method (a fresh interpreter each: CUDA and numba's thread pools are
never inherited half-initialised from a fork). Each worker builds its restorer once from a picklable
:class:`RestorerFactory` (for bundles, :class:`BundleRestorerFactory`: the bundle's parsed-but-unresolved config
with the same overrides; a loaded network is never pickled), then takes studies from one queue until it is empty,
running :func:`~monai_rwkv.apps.restore.run_study` on each (claim, verify, restore, manifest) and sending the
:class:`~monai_rwkv.apps.batch.StudyOutcome` back. The parent process collects the outcomes (the callback and the
log lines in the order studies finish, a progress bar over studies), and the caller writes one summary, in the
tasks' order.

Threads: each worker uses ``worker_threads`` torch threads, by default the parent's ``torch.get_num_threads()``
divided by ``workers`` (at least 1); ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` are set to
the same number in the workers' environment. On CUDA every worker puts its own model on the same GPU (``device``)
and they share it: memory is that of one worker times ``workers``.

A worker that dies (killed, out of memory) fails the study it was restoring ("the worker process died ...; run
again to resume"), the other workers go on; its claim is left with a dead process id, so the next run takes it over
(see :mod:`monai_rwkv.apps.claims`). A worker that cannot build its model stops the batch with that error. Ctrl-C,
SIGTERM or SIGHUP in the parent stop the workers with SIGTERM (they ignore SIGINT, so a Ctrl-C at the terminal
reaches them once, through the parent): each removes its temporary outputs and its claim and exits; workers also
exit when the parent process is gone.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from monai_rwkv.apps.batch import StudyOutcome
from monai_rwkv.apps.signals import terminate_as_interrupt
from monai_rwkv.data.errors import one_line

__all__ = ["BundleRestorerFactory", "RestorerFactory", "default_worker_threads", "restore_in_workers"]

#: environment variables that size the thread pools of a worker (set to its number of threads).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
#: seconds the workers get to clean up after SIGTERM before they are killed.
STOP_GRACE = 30.0
_POLL = 0.5


class RestorerFactory:
    """Builds a restorer in the process that calls :meth:`build`; picklable, so that each worker builds its own."""

    def build(self) -> Any:
        """The restorer (a :class:`~monai_rwkv.inference.VolumeRestorer`)."""
        raise NotImplementedError

    def for_worker(self) -> RestorerFactory:
        """The factory a worker uses (e.g. without per-slice progress bars, which would mix in one terminal)."""
        return self


@dataclass(frozen=True)
class BundleRestorerFactory(RestorerFactory):
    """
    A bundle's restorer built from its config.

    Attributes:
        config: the bundle's raw config (``_meta_`` and the overrides included), as ``ConfigParser.get()`` returns
            it before anything is instantiated.
        bundle_root: the bundle folder (``bundle_root`` in the config is set to it).
        overrides: config items set after the config is loaded (``{"progress": False}`` in the workers).
        restorer_id: the config item to build.
    """

    config: Mapping[str, Any]
    bundle_root: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    restorer_id: str = "restorer"

    @classmethod
    def from_parser(cls, parser: Any, bundle_root: str | os.PathLike | None = None) -> BundleRestorerFactory:
        """From a ``ConfigParser`` with the bundle's config (and overrides) read; ``bundle_root`` default: its own."""
        root = parser.get_parsed_content("bundle_root") if bundle_root is None else bundle_root
        return cls(copy.deepcopy(parser.get()), os.path.abspath(os.fspath(root)))

    def build(self) -> Any:
        from monai.bundle import ConfigParser

        parser = ConfigParser(copy.deepcopy(dict(self.config)))
        parser["bundle_root"] = self.bundle_root
        parser.update(dict(self.overrides))
        return parser.get_parsed_content(self.restorer_id)

    def for_worker(self) -> BundleRestorerFactory:
        return replace(self, overrides={**self.overrides, "progress": False})


def default_worker_threads(workers: int) -> int:
    """Torch threads per worker: this process's ``torch.get_num_threads()`` divided by ``workers``, at least 1."""
    return max(1, torch.get_num_threads() // max(1, workers))


@contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """Set :data:`THREAD_VARIABLES` to ``threads`` while workers are started (they inherit the environment)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    try:
        for name in THREAD_VARIABLES:
            value = threads
            if name == "NUMBA_NUM_THREADS":  # numba refuses more threads than CPUs
                value = min(threads, os.cpu_count() or threads)
            os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file, flush=True)


def _worker(*args: Any) -> None:
    """A worker process: its signal and warning settings, then :func:`_serve` with ``args``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its workers with SIGTERM
    warnings.showwarning = _show_warning
    # notices about an optional GPU DICOM decoder that is never used: shown (or not) by the parent, not per worker
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    try:
        with terminate_as_interrupt():
            _serve(*args)
    except KeyboardInterrupt as e:  # Terminated: temporary outputs and the claim were removed while unwinding
        sys.exit(getattr(e, "exit_status", 130))


def _serve(
    factory: RestorerFactory,
    threads: int,
    parent_pid: int,
    jobs: Any,
    results: Any,
    options: tuple,
    studies: Any,
    slot: int,
) -> None:
    """Build the model once, then restore studies from ``jobs`` until ``None`` arrives.

    ``studies[slot]`` (shared memory) holds the index of the study this worker took last: written before the
    study starts, so that the parent can name it if the worker dies, even where a queued message would be lost.
    """
    from monai_rwkv.apps.restore import run_study

    torch.set_num_threads(threads)
    try:
        restorer = factory.build()
    except SystemExit as e:  # bundle helpers exit with one line
        results.put(("fatal", str(e.code)))
        return
    except Exception as e:  # noqa: BLE001 - reported by the parent as one line
        results.put(("fatal", one_line(e)))
        return
    while True:
        try:
            item = jobs.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the parent is gone: nobody collects the outcomes
                return
            continue
        if item is None or os.getppid() != parent_pid:
            return
        index, task = item
        studies[slot] = index
        outcome = run_study(restorer, task, *options)
        results.put(("done", (index, outcome)))


def _failed(task: Any, detail: str) -> StudyOutcome:
    return StudyOutcome(task.image.name, task.image.path, "failed", detail=f"{task.image.path}: {detail}")


def _stop(processes: Sequence[Any]) -> None:
    """SIGTERM to the live workers, a grace period to clean up, then SIGKILL."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def restore_in_workers(
    factory: RestorerFactory,
    tasks: Sequence[Any],
    model: tuple[str, str],
    overwrite: bool,
    guard: Any,
    spec: Any,
    allow_mismatch: bool,
    claim_timeout: float,
    workers: int,
    threads: int | None = None,
    progress: bool = False,
    record: Callable[[StudyOutcome], None] | None = None,
) -> list[StudyOutcome]:
    """
    Restore ``tasks`` in ``workers`` processes (see the module docstring).

    Args:
        factory: builds the restorer in each worker.
        tasks: the studies (:class:`~monai_rwkv.apps.restore.RestoreTask`).
        model, overwrite, guard, spec, allow_mismatch, claim_timeout: as for
            :func:`~monai_rwkv.apps.restore.run_study`.
        workers: number of processes (at most one per study).
        threads: torch threads per worker (default :func:`default_worker_threads`).
        progress: show a progress bar over studies.
        record: called in this process with each outcome as it arrives.

    Returns:
        one outcome per task, in the tasks' order.

    Raises:
        TypeError: ``factory`` is not a :class:`RestorerFactory`.
        SystemExit: a worker could not build its model (``"error: ..."``); the other workers are stopped.
    """
    if not isinstance(factory, RestorerFactory):
        raise TypeError(
            "workers > 1 needs a RestorerFactory (each worker builds its own model), "
            f"not a loaded {type(factory).__name__}"
        )
    count = min(workers, len(tasks))
    if count == 0:
        return []
    threads = default_worker_threads(workers) if threads is None else max(1, int(threads))
    context = multiprocessing.get_context("spawn")
    jobs, results = context.Queue(), context.Queue()
    for item in enumerate(tasks):
        jobs.put(item)
    for _ in range(count):
        jobs.put(None)
    options = (model, overwrite, guard, spec, allow_mismatch, claim_timeout)
    # the study each worker took last (-1: none yet): shared memory, written by the worker before it starts one,
    # so a worker killed at once still names its study (a message on the results queue can die in its feeder)
    studies = context.Array("q", [-1] * count, lock=False)
    processes = []
    outcomes: list[StudyOutcome | None] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc="studies", unit="study", disable=not progress, dynamic_ncols=True)

    def deliver(index: int, outcome: StudyOutcome) -> None:
        outcomes[index] = outcome
        bar.update(1)
        if record is not None:
            with tqdm.external_write_mode():
                record(outcome)

    try:
        with _thread_environment(threads):
            for n in range(count):
                process = context.Process(
                    target=_worker,
                    args=(factory.for_worker(), threads, os.getpid(), jobs, results, options, studies, n),
                    name=f"monai-rwkv-worker-{n + 1}",
                    daemon=True,
                )
                process.start()
                processes.append(process)
        gone: set[int] = set()
        while any(o is None for o in outcomes):
            try:
                kind, payload = results.get(timeout=_POLL)
            except queue.Empty:
                for slot, process in enumerate(processes):
                    if process.pid in gone or process.is_alive():
                        continue
                    gone.add(process.pid)
                    index = studies[slot]
                    if index >= 0 and outcomes[index] is None:
                        problem = f"the worker process {process.pid} died (exit code {process.exitcode}) while "
                        deliver(index, _failed(tasks[index], problem + "restoring it; run again to resume"))
                if len(gone) == len(processes):
                    codes = sorted({p.exitcode for p in processes})
                    for index, outcome in enumerate(outcomes):
                        if outcome is None:
                            problem = f"not restored: every worker process stopped (exit code {codes})"
                            deliver(index, _failed(tasks[index], problem))
                continue
            if kind == "fatal":
                raise SystemExit(payload if payload.startswith("error: ") else f"error: {payload}")
            if kind == "done":
                index, outcome = payload
                deliver(index, outcome)
    except BaseException:
        _stop(processes)
        jobs.cancel_join_thread()
        raise
    finally:
        bar.close()
    for process in processes:
        process.join(STOP_GRACE)
    _stop(processes)
    return [o for o in outcomes if o is not None]
