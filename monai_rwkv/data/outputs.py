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
Where an output may go: never onto, into or around an input, and never over something it would not replace.

Paths are compared by real identity, not by spelling: ``sub/../in.nii.gz``, a symlinked folder, a hard link or a
bind mount of the same file all name one input. Two tests are used together: the fully resolved path
(``os.path.realpath``: ``..`` and symbolic links removed, also for a path that does not exist yet) and, where the
file or folder exists, its ``(device, inode)`` (``os.stat``), which also sees hard links, bind mounts and
case-insensitive file systems.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["InputGuard", "OutputConflictError", "check_replaceable", "file_identity", "real_path"]

#: what an output is: a single file (NIfTI, CSV, JSON) or a folder of files (a DICOM series).
OUTPUT_KINDS = ("file", "folder")


class OutputConflictError(ValueError):
    """
    An output that must not be written where it was asked (it would touch an input, or replace something that
    is not an earlier output of the same kind). ``str()`` is one line ``"<output>: <problem>"``.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


def real_path(path: str | os.PathLike) -> Path:
    """``path`` absolute with ``..`` and every symbolic link resolved (the existing part; the rest kept as is)."""
    return Path(os.path.realpath(os.fspath(path)))


def file_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what ``path`` names (links followed), or None when it does not exist."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _chain(path: Path) -> list[Path]:
    """``path`` (resolved) and its ancestors, innermost first."""
    return [path, *path.parents]


class InputGuard:
    """
    Refuses outputs that equal, lie inside or contain an input.

    Built once from every input of a run (files and DICOM series folders); :meth:`check` is then cheap: each
    output is compared with sets of resolved paths and ``(device, inode)`` pairs, not with every input in turn.

    Args:
        inputs: the input files and folders. Inputs that cannot be resolved (a symbolic link loop) are skipped
            here: they fail when they are read.
    """

    def __init__(self, inputs: Iterable[str | os.PathLike]):
        #: resolved path / identity of each input -> the input as given
        self._inputs: dict[object, str] = {}
        #: resolved path / identity of each folder that holds an input -> that input
        self._holders: dict[object, str] = {}
        for given in inputs:
            name = os.fspath(given)
            try:
                resolved = real_path(name)
            except (OSError, RuntimeError, ValueError):
                continue
            for key in (resolved, file_identity(resolved)):
                if key is not None:
                    self._inputs.setdefault(key, name)
            for folder in resolved.parents:
                for key in (folder, file_identity(folder)):
                    if key is not None:
                        self._holders.setdefault(key, name)

    def conflict(self, output: str | os.PathLike, may_contain: bool = False) -> str | None:
        """
        Why ``output`` must not be written (one phrase naming the input), or None when it may.

        Args:
            output: the output path (it need not exist).
            may_contain: accept an output that is a folder above an input (an output folder whose outputs are
                checked one by one).
        """
        try:
            resolved = real_path(output)
        except (OSError, RuntimeError, ValueError) as e:
            return f"cannot resolve the output path ({e})"
        for depth, path in enumerate(_chain(resolved)):
            identity = file_identity(path)
            for key in (path, identity):
                if key is not None and key in self._inputs:
                    source = self._inputs[key]
                    if depth == 0:
                        return f"is the input {source} (another spelling, a link or the same file); choose another name"
                    return f"lies inside the input {source}; write outputs outside the input"
        for key in (resolved, file_identity(resolved)):
            if not may_contain and key is not None and key in self._holders:
                return f"contains the input {self._holders[key]}; choose an output that does not hold the input"
        return None

    def check(self, output: str | os.PathLike, may_contain: bool = False) -> None:
        """
        Raises:
            OutputConflictError: ``output`` equals, lies inside or (unless ``may_contain``) contains an input.
        """
        problem = self.conflict(output, may_contain)
        if problem is not None:
            raise OutputConflictError(output, problem)


def check_replaceable(
    output: str | os.PathLike,
    kind: str,
    overwrite: bool,
    replaceable_folder: Callable[[Path], bool] | None = None,
    what: str = "output",
    option: str = "overwrite=True",
) -> None:
    """
    Check, before any work, that ``output`` may be created: it does not exist, or ``overwrite`` is set and it is
    the same kind of thing this output is. A file replaces a file (or a link); a folder replaces only a folder that
    is empty or accepted by ``replaceable_folder`` (e.g. a DICOM series this program wrote). Anything else is
    refused, whatever ``overwrite`` says.

    Args:
        output: the output path.
        kind: ``"file"`` or ``"folder"``.
        overwrite: whether an existing output may be replaced.
        replaceable_folder: for folders, which existing folders are earlier outputs of this kind.
        what: the output's kind in messages (``"NIfTI file"``, ``"DICOM series folder"``).
        option: how the caller's user asks to overwrite, for the message (``"--overwrite"``).

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        OutputConflictError: ``output`` exists as something an output of this kind never replaces.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be one of {OUTPUT_KINDS}, got {kind!r}.")
    path = Path(output)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(f"{output}: output exists; pass {option} to replace it")
    is_dir = path.is_dir()
    if kind == "file":
        if is_dir:
            raise OutputConflictError(
                output, f"is a folder, not a file; a {what} never replaces a folder: remove it or choose another name"
            )
        if path.exists() and not path.is_file():
            raise OutputConflictError(
                output, f"is not a regular file (a device, pipe or socket); a {what} never replaces it"
            )
        return
    if not is_dir or path.is_symlink():
        found = "a link" if path.is_symlink() else "a file"
        raise OutputConflictError(
            output, f"is {found}, not a folder; a {what} replaces only a folder: remove it or choose another name"
        )
    if not any(path.iterdir()):
        return
    if replaceable_folder is None or not replaceable_folder(path):
        raise OutputConflictError(
            output,
            f"is a folder that this program did not write as a {what} (it holds other files); "
            "it is never replaced: remove it or choose another name",
        )
