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
"""Exceptions of the medical image I/O layer."""

from __future__ import annotations

import os

__all__ = ["ImageReadError", "MultipleSeriesError", "one_line"]


def one_line(text: object, max_length: int = 300) -> str:
    """
    Collapse ``text`` (for example a multi-line ITK exception) into one short line.

    Args:
        text: any object; its ``str`` is used.
        max_length: the result is cut to this many characters (an ellipsis marks the cut).
    """
    line = " ".join(str(text).split())
    return line if len(line) <= max_length else line[: max_length - 3] + "..."


class ImageReadError(RuntimeError):
    """
    An input image could not be read; the message is one line: ``"<path>: <problem>"``.

    Args:
        path: the file or folder that failed.
        problem: what is wrong with it, in words (newlines are collapsed).
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = one_line(problem, max_length=2000)
        super().__init__(f"{self.path}: {self.problem}")


class MultipleSeriesError(ImageReadError):
    """
    A folder holds several DICOM series and none (or an unknown one) was chosen; slices are never mixed.

    Args:
        path: the folder.
        problem: the one-line message (it lists the series).
        series: ``{SeriesInstanceUID: description}`` of every series found.
    """

    def __init__(self, path: str | os.PathLike, problem: str, series: dict[str, str]):
        super().__init__(path, problem)
        self.series = dict(series)
