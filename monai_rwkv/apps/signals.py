"""
Termination signals as exceptions, so that a stopped run cleans up like an interrupted one.

``docker stop``, ``kill``, SLURM's time limit and systemd send SIGTERM; a closed terminal sends SIGHUP. Python's
default for both ends the process at once, leaving whatever was being written (a temporary DICOM series folder
with some slices). Inside :func:`terminate_as_interrupt` they raise :class:`Terminated` instead, a
``KeyboardInterrupt``: every ``finally`` and every Ctrl-C handler runs, the atomic writers remove their temporary
outputs, and the caller exits with ``128 + signal number`` as a shell does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TERMINATION_SIGNALS", "Terminated", "terminate_as_interrupt"]

#: the signals handled (those that exist on this platform).
TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """
    Raised in the main thread when a termination signal arrives.

    Attributes:
        signum: the signal's number; ``exit_status`` is ``128 + signum``.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """
    Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (once: signals that arrive
    while it unwinds are ignored, so that the cleanup is not cut short). The previous handlers are restored on
    exit. Outside the main thread (where Python cannot install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
