"""
Exclusive claims on studies: each study is restored by one process at a time, even when several runs (two
``monai-rwkv batch`` commands, each possibly with ``--workers``) share an output folder.

Before a study is verified or restored, its process creates a hidden claim file beside the study's outputs,
``<dir>/.<name>_restored.lock``, atomically and exclusively (a complete file is hard-linked into place, which fails
when the name exists; ``O_CREAT | O_EXCL`` where the file system has no hard links). It holds JSON: the host name,
the process id, the process's start time (Linux), the host's boot id, the time of the claim and a random token.
The claim is removed once the study's manifest is written, or when the study fails or is interrupted (Ctrl-C,
SIGTERM, SIGHUP); only its owner (same token) removes it.

A study already claimed by a live process is left to that process (:class:`StudyClaimed`). A claim is stale, and
taken over with a note, when

* it comes from this host and its process is gone (no such process id, a zombie, another process that reuses the
  id: its start time differs, or the host restarted since: another boot id);
* it comes from another host and was taken more than ``timeout`` seconds ago (:data:`CLAIM_TIMEOUT`, 24 hours:
  another host's processes cannot be checked, so this must exceed the longest study);
* it cannot be read (only while being written without hard links) and is older than a minute.

Taking over is serialised by a second hidden file (``.<name>_restored.lock.takeover``), so two runs that find
the same stale claim never both take it; the temporary files that the dead process's atomic writers left for the
study are removed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from monai_rwkv.apps.batch import study_file

__all__ = ["CLAIM_SUFFIX", "CLAIM_TIMEOUT", "Claim", "ClaimHolder", "StudyClaimed", "acquire_claim", "claim_path"]

CLAIM_SUFFIX = ".lock"
#: seconds after which a claim of another host is stale (its process cannot be checked from here).
CLAIM_TIMEOUT = 24 * 3600.0
#: seconds after which an unreadable claim (one being written without hard links) is stale.
UNREADABLE_GRACE = 60.0
#: seconds after which a take-over guard is left by a process that died while taking over.
_GUARD_STALE = 30.0
_ATTEMPTS = 5

logger = logging.getLogger(__name__)


def claim_path(outputs: Sequence[Path]) -> Path:
    """
    The claim of a study with these outputs: ``<dir>/.<base>.lock`` beside the first output, where ``<base>`` is
    its name without ``.nii`` / ``.nii.gz`` (like the study's manifest, ``.<base>.restore.json``).
    """
    return study_file(outputs, CLAIM_SUFFIX)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` of a process (Linux ``/proc``), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class ClaimHolder:
    """Who holds a claim (the content of the claim file)."""

    host: str
    pid: int
    started: float
    token: str
    pid_start: int | None = None
    boot_id: str | None = None

    @classmethod
    def me(cls) -> ClaimHolder:
        stat = _proc_stat(os.getpid())
        return cls(socket.gethostname(), os.getpid(), time.time(), secrets.token_hex(8), stat and stat[1], _boot_id())

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"{self.host} pid {self.pid} since {when}"

    def stale_reason(self, timeout: float = CLAIM_TIMEOUT) -> str | None:
        """Why this claim is stale (its process is gone, or too old for another host), or None when it holds."""
        if self.host != socket.gethostname():
            age = time.time() - self.started
            if age > timeout:
                return f"claimed {age / 3600:.1f} h ago from another host (timeout {timeout / 3600:g} h)"
            return None
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return "the host restarted since"
        if not _pid_alive(self.pid):
            return "its process is gone"
        stat = _proc_stat(self.pid)
        if stat is not None and stat[0] in ("Z", "X"):
            return "its process is gone (exited)"
        if stat is not None and self.pid_start is not None and stat[1] != self.pid_start:
            return "its process is gone (the process id is reused)"
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClaimHolder:
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError("not a claim")
        return cls(
            str(record["host"]),
            int(record["pid"]),
            float(record["started"]),
            str(record["token"]),
            None if record.get("pid_start") is None else int(record["pid_start"]),
            record.get("boot_id"),
        )


class StudyClaimed(Exception):
    """A study claimed by another live process (``holder``; None: a claim being written right now)."""

    def __init__(self, path: Path, holder: ClaimHolder | None):
        self.path, self.holder = Path(path), holder
        who = holder.describe() if holder is not None else "another process (claim being written)"
        super().__init__(f"claimed by {who}; left to that run")


@dataclass
class Claim:
    """A claim this process holds; :meth:`release` (or leaving the ``with`` block) removes it."""

    path: Path
    holder: ClaimHolder
    created: list[Path]
    note: str = ""

    def release(self) -> None:
        """Remove the claim file if it is still ours, and the empty folders created for it."""
        try:
            current = ClaimHolder.from_json(self.path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            current = None
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)
        else:
            logger.warning("%s: the claim was taken over by another process meanwhile", self.path)
        _rmdirs(self.created)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s folder; return the folders created (outermost first)."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.insert(0, parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _create(path: Path, holder: ClaimHolder) -> bool:
    """Create the claim file exclusively, complete; False when it exists."""
    text = holder.to_json().encode()
    tmp = path.with_name(f"{path.name}.tmp-{holder.token}")
    try:
        tmp.write_bytes(text)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive create, then write
            pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> tuple[bytes | None, ClaimHolder | None]:
    """The claim file's bytes (None: it is gone) and its holder (None: unreadable)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return data, ClaimHolder.from_json(data.decode())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return data, None


def _take_over(path: Path, seen: bytes) -> str:
    """
    Remove the stale claim ``path`` if it still holds ``seen``, under a guard file so that one process at a time
    takes over. Returns ``"removed"``, ``"changed"`` (it is gone or holds another claim now: judge again) or
    ``"busy"`` (another process is taking it over).
    """
    guard = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > _GUARD_STALE:  # left by a process that died taking over
                guard.unlink(missing_ok=True)
                return "changed"
        except FileNotFoundError:
            return "changed"
        return "busy"
    try:
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            return "changed"
        if current != seen:
            return "changed"
        path.unlink(missing_ok=True)
        return "removed"
    finally:
        guard.unlink(missing_ok=True)


def _remove_leftovers(path: Path, outputs: Sequence[Path]) -> None:
    """
    Remove the temporary files that a dead process left for a study: its atomic writers' temporary outputs (and
    manifest), and its own claim's temporary file.
    """
    manifest = path.name[: -len(CLAIM_SUFFIX)] + ".restore.json"
    places = [(path.parent, (f"{path.name}.tmp-*", f".tmp-*-{manifest}"))]
    for output in map(Path, outputs):
        places.append((output.parent, (f".tmp-*-{output.name}", f".{output.name}.tmp-*", f".{output.name}.old-*")))
    for folder, patterns in places:
        for pattern in patterns:
            for leftover in folder.glob(pattern):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


def acquire_claim(path: str | os.PathLike, timeout: float = CLAIM_TIMEOUT, outputs: Sequence[Path] = ()) -> Claim:
    """
    Claim a study exclusively (see the module docstring).

    Args:
        path: the claim file (:func:`claim_path`).
        timeout: seconds after which another host's claim is stale.
        outputs: the study's outputs: a stale claim taken over has their temporary leftovers removed.

    Returns:
        the claim (``note`` says which stale claim was taken over, if any); release it when done.

    Raises:
        StudyClaimed: a live process holds the study.
    """
    path = Path(path)
    created = _make_parents(path)
    me = ClaimHolder.me()
    note = ""
    holder: ClaimHolder | None = None
    try:
        for _ in range(_ATTEMPTS):
            if _create(path, me):
                if note:
                    _remove_leftovers(path, outputs)
                return Claim(path, me, created, note)
            seen, holder = _read(path)
            if seen is None:
                continue  # released meanwhile
            if holder is None:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                reason = f"unreadable claim {age:.0f} s old" if age > UNREADABLE_GRACE else None
            else:
                reason = holder.stale_reason(timeout)
            if reason is None:
                break
            outcome = _take_over(path, seen)
            if outcome == "busy":
                break
            if outcome == "removed":
                who = holder.describe() if holder is not None else "an unknown process"
                note = f"stale claim of {who} taken over ({reason})"
    except BaseException:
        _rmdirs(created)
        raise
    _rmdirs(created)
    raise StudyClaimed(path, holder)


def _rmdirs(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break
