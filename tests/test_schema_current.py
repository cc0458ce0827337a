"""The checked-in manifest JSON schema matches the pydantic models.

If this fails, run ``python -m archive.schema`` and commit archive/manifest.schema.json.
"""

from __future__ import annotations

import json

from archive.manifest import SCHEMA_VERSION, manifest_json_schema
from archive.schema import SCHEMA_PATH


def test_checked_in_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text() == manifest_json_schema(), (
        "archive/manifest.schema.json is out of date: run `python -m archive.schema`"
    )


def test_schema_pins_the_version_and_forbids_unknown_fields() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    # Version 2 is written; version 1 (SHA-256 digests) is still read.
    version = schema["properties"]["schema_version"]
    assert version["default"] == SCHEMA_VERSION == 2 and version["enum"] == [1, 2]
    assert schema["additionalProperties"] is False
    chunk = schema["$defs"]["Chunk"]
    assert chunk["additionalProperties"] is False
    assert set(chunk["required"]) >= {"offset", "length", "kind"}
