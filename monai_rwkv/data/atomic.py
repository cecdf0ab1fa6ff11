# Copyright (c) MONAI Consortium and the monai_rwkv authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Atomic output helpers: write under a hidden temporary name in the destination folder, rename on success.

Nothing partial is ever left under the final name: on any error (or Ctrl-C) the temporary output is removed,
folders created for the output are removed again, and a replaced output (``overwrite=True``) is restored.
``overwrite`` replaces a file by a file and a folder by a folder, and only a folder that is empty or that the
caller recognises as its own earlier output (see :func:`~monai_rwkv.data.outputs.check_replaceable`).
A failed write (full disk, no permission, ...) is raised as :class:`OutputWriteError`, one line naming the output.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from monai_rwkv.data.outputs import check_replaceable

__all__ = ["OutputWriteError", "atomic_output_dir", "atomic_output_file"]


class OutputWriteError(OSError):
    """
    An output could not be written (disk full, permission denied, ...). ``str()`` is one line
    ``"<output>: cannot write the output (<reason>)"`` naming the final output, not the temporary file.

    Args:
        path: the final output path.
        error: the underlying ``OSError`` (its ``errno`` and ``strerror`` are kept).
    """

    def __init__(self, path: str | os.PathLike, error: OSError):
        super().__init__(error.errno, error.strerror or " ".join(str(error).split()))
        self.path = os.fspath(path)

    def __str__(self) -> str:
        return f"{self.path}: cannot write the output ({self.strerror})"


def _check_destination(
    final: Path, overwrite: bool, kind: str = "file", replaceable: Callable[[Path], bool] | None = None
) -> None:
    """Raise ``FileExistsError`` if ``final`` exists and ``overwrite`` is False, or if it is not replaceable."""
    check_replaceable(final, kind, overwrite, replaceable, what=f"output {kind}")


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _publish_exclusive(tmp: Path, final: Path) -> bool:
    """
    Move ``tmp`` to ``final`` only if ``final`` does not exist, without a check-then-rename race:
    a hard link for files, ``os.rename`` for folders (it refuses a non-empty destination folder).
    Returns False when the file system cannot link, so the caller falls back to a plain rename.
    """
    if tmp.is_dir():
        if final.exists():
            raise FileExistsError(f"{final}: output exists; pass overwrite=True to replace it")
        os.rename(tmp, final)
        return True
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise FileExistsError(f"{final}: output exists; pass overwrite=True to replace it") from None
    except OSError:
        return False
    tmp.unlink()
    return True


def _publish(
    tmp: Path, final: Path, overwrite: bool, kind: str = "file", replaceable: Callable[[Path], bool] | None = None
) -> None:
    """
    Move ``tmp`` to ``final``. An existing ``final`` is moved aside first (``overwrite=True``) and put back
    if the move fails; without ``overwrite`` an output that appeared meanwhile is an error.
    """
    _check_destination(final, overwrite, kind, replaceable)
    if not overwrite and _publish_exclusive(tmp, final):
        return
    backup = None
    if final.exists() or final.is_symlink():
        backup = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
        os.replace(final, backup)
    try:
        os.replace(tmp, final)
    except BaseException:
        if backup is not None:
            os.replace(backup, final)
        raise
    if backup is not None:
        _remove(backup)


def _prepare_destination(
    final: str | os.PathLike, overwrite: bool, kind: str = "file", replaceable: Callable[[Path], bool] | None = None
) -> tuple[Path, list[Path]]:
    """
    ``final`` as an absolute path, refused if it exists (unless ``overwrite`` and it is replaceable), with its
    parent created.

    Returns:
        ``final`` and the folders created for it (outermost first), to remove if the output fails.
    """
    final = Path(final).absolute()
    _check_destination(final, overwrite, kind, replaceable)
    missing = []
    parent = final.parent
    while not parent.exists() and parent != parent.parent:
        missing.insert(0, parent)
        parent = parent.parent
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_folders(missing)
        raise OutputWriteError(final, e) from None
    return final, missing


def _remove_folders(created: list[Path]) -> None:
    """Remove the (empty) folders created for a failed output, innermost first."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def _cleanup(final: Path, tmp: Path, created: list[Path]) -> Iterator[None]:
    """Remove ``tmp`` in any case and the ``created`` folders on failure; wrap write errors as OutputWriteError."""
    ok = False
    try:
        yield
        ok = True
    except FileExistsError:
        raise
    except OutputWriteError:
        raise
    except OSError as e:
        raise OutputWriteError(final, e) from e
    finally:
        try:
            _remove(tmp)
        except OSError:
            pass
        if not ok:
            _remove_folders(created)


@contextmanager
def atomic_output_dir(
    final: str | os.PathLike, overwrite: bool = False, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """
    Yield an empty temporary folder beside ``final``; rename it to ``final`` when the block succeeds.

    Args:
        final: the folder the caller wants to create.
        overwrite: replace an existing ``final`` folder that is empty or accepted by ``replaceable``; otherwise
            an error is raised before any work.
        replaceable: which existing, non-empty folders are earlier outputs that ``overwrite`` may replace
            (default: none).

    Raises:
        FileExistsError: ``final`` exists and ``overwrite`` is False.
        OutputConflictError: ``final`` exists and is a file, a link or a folder that ``replaceable`` refuses.
        OutputWriteError: the output could not be written (e.g. no space left on the device).
    """
    final, created = _prepare_destination(final, overwrite, "folder", replaceable)
    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(6)}")
    with _cleanup(final, tmp, created):
        tmp.mkdir(mode=0o777)  # honours the umask, unlike tempfile.mkdtemp
        yield tmp
        _publish(tmp, final, overwrite, "folder", replaceable)


@contextmanager
def atomic_output_file(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """
    Yield a temporary file path beside ``final`` (same suffixes, the file is not created);
    rename it to ``final`` when the block succeeds.

    Args:
        final: the file the caller wants to create.
        overwrite: replace an existing file (or link) ``final``; otherwise ``FileExistsError`` is raised before
            any work. A folder is never replaced by a file.

    Raises:
        FileExistsError: ``final`` exists and ``overwrite`` is False.
        OutputConflictError: ``final`` is a folder.
        OutputWriteError: the output could not be written (e.g. no space left on the device).
    """
    final, created = _prepare_destination(final, overwrite)
    tmp = final.with_name(f".tmp-{secrets.token_hex(6)}-{final.name}")
    with _cleanup(final, tmp, created):
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written")
        _publish(tmp, final, overwrite)
