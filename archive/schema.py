"""The manifest's JSON schema file, checked into the repository, and its regeneration.

Run ``python -m archive.schema`` after changing ``archive/manifest.py``;
a test fails while the checked-in file is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from archive.manifest import manifest_json_schema

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


def write_schema(path: Path = SCHEMA_PATH) -> bool:
    """Write the current schema; True when the file changed."""
    text = manifest_json_schema()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


if __name__ == "__main__":
    changed = write_schema()
    print(f"{SCHEMA_PATH}: {'updated' if changed else 'already current'}", file=sys.stderr)
