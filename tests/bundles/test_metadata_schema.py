"""
Every bundle's ``configs/metadata.json`` passes MONAI's real ``python -m monai.bundle verify_metadata`` offline,
against this project's schema (``bundles/schema/meta_schema_monai_rwkv.json``, written from the MONAI Bundle
Specification; the official file the metadata's URL names cannot be downloaded here): an existing ``--filepath``
is used as the schema and nothing is downloaded. Broken copies are rejected with a message naming the problem.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from monai_rwkv.bundles import metadata_schema
from tests.bundles.utils import REPO

SCHEMA = REPO / "bundles" / "schema" / "meta_schema_monai_rwkv.json"
METADATA = sorted((REPO / "bundles").glob("*/configs/metadata.json"))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verify_metadata(meta_file: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle verify_metadata``, our schema as ``--filepath`` (its md5 proves it is the one used)."""
    command = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta_file)]
    command += ["--filepath", str(SCHEMA), "--hash_val", _md5(SCHEMA), "--hash_type", "md5"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_schema_is_ours_and_valid() -> None:
    schema = _load(SCHEMA)
    jsonschema.Draft7Validator.check_schema(schema)
    assert "NOT the official MONAI schema" in schema["description"]
    assert "not copied" in schema["$comment"]
    assert metadata_schema() == SCHEMA  # what monai_rwkv.bundles hands out (the installed copy in a wheel)
    assert len(METADATA) >= 2


@pytest.mark.parametrize("meta_file", METADATA, ids=lambda p: p.parent.parent.name)
def test_verify_metadata_cli_passes_offline(meta_file: Path, tmp_path: Path) -> None:
    before = _md5(SCHEMA)
    result = verify_metadata(meta_file, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "metadata is verified with no error" in output
    assert "skipped downloading" in output  # the schema was read from --filepath, not fetched from the URL
    assert _md5(SCHEMA) == before and not any(tmp_path.iterdir())


def _drop_task(meta: dict[str, Any]) -> None:
    del meta["task"]


def _channels_as_text(meta: dict[str, Any]) -> None:
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "1"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [(_drop_task, "'task' is a required property"), (_channels_as_text, "'1' is not of type 'integer'")],
    ids=["missing_key", "wrong_type"],
)
def test_verify_metadata_cli_rejects_broken_copy(
    breakage: Callable[[dict[str, Any]], None], message: str, tmp_path: Path
) -> None:
    meta = _load(METADATA[0])
    breakage(meta)
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta), encoding="utf-8")
    result = verify_metadata(broken, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-3000:]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = meta
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


_DELETE = object()
_IMAGE = "network_data_format/inputs/image"
BROKEN = {
    "no_version": _set("version", _DELETE),
    "version_not_semantic": _set("version", "0.2"),
    "no_required_packages": _set("required_packages_version", _DELETE),
    "package_version_number": _set("required_packages_version/nibabel", 5.4),
    "changelog_key_not_version": _set("changelog/latest", "x"),
    "authors_empty": _set("authors", ""),
    "no_outputs": _set("network_data_format/outputs", _DELETE),
    "no_inputs_named": _set("network_data_format/inputs", {}),
    "no_modality": _set(f"{_IMAGE}/modality", _DELETE),
    "no_channel_def": _set(f"{_IMAGE}/channel_def", _DELETE),
    "zero_channels": _set(f"{_IMAGE}/num_channels", 0),
    "patch_flag_text": _set(f"{_IMAGE}/is_patch_data", "true"),
    "value_range_three": _set(f"{_IMAGE}/value_range", [0, 1, 2]),
    "value_range_text": _set(f"{_IMAGE}/value_range", ["0", "1"]),
    "spatial_shape_zero": _set(f"{_IMAGE}/spatial_shape", [0, 64]),
    "spatial_shape_4d": _set(f"{_IMAGE}/spatial_shape", [8, 8, 8, 8]),
    "dtype_unknown": _set(f"{_IMAGE}/dtype", "float"),
    "channel_def_key": _set(f"{_IMAGE}/channel_def", {"first": "image"}),
}


@pytest.mark.parametrize("breakage", BROKEN.values(), ids=BROKEN.keys())
def test_schema_rejects(breakage: Callable[[dict[str, Any]], None]) -> None:
    """The same schema, in process, on more kinds of breakage (each must be rejected; the originals pass)."""
    schema = _load(SCHEMA)
    for meta_file in METADATA:
        meta = _load(meta_file)
        jsonschema.validate(meta, schema)
        broken = copy.deepcopy(meta)
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_deprecated_optional_packages_name_accepted() -> None:
    meta = _load(METADATA[0])
    meta["optional_packages_version"] = meta.pop("required_packages_version")
    jsonschema.validate(meta, _load(SCHEMA))


@pytest.mark.parametrize("meta_file", METADATA, ids=lambda p: p.parent.parent.name)
def test_metadata_consistent(meta_file: Path) -> None:
    """What a schema cannot say: the version has a changelog entry, channel_def covers num_channels, min < max."""
    meta = _load(meta_file)
    assert meta["version"] in meta["changelog"]
    for group in ("inputs", "outputs"):
        for name, tensor in meta["network_data_format"][group].items():
            assert sorted(tensor["channel_def"], key=int) == [str(c) for c in range(tensor["num_channels"])], name
            if tensor["value_range"]:
                low, high = tensor["value_range"]
                assert low < high, name
