"""New backups carry BLAKE3 chunk digests (manifest version 2); version 1 backups, with
SHA-256 digests, are still read, verified and restored byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from test_native_format import rewrite_manifest

from archive import open_archive
from archive.digest import chunk_matches, digest_hex
from archive.manifest import ArchiveManifest
from restore_tui.cli import main

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk")


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """A 24 MiB disk with one partition of random data, and its (version 2) backup."""
    source = tmp_path / "src.img"
    with open(source, "wb") as f:
        f.truncate(24 * MIB)
    subprocess.run(["sfdisk", "-q", str(source)], input="label: dos\nstart=2048, type=83\n",
                   text=True, check=True)  # fmt: skip
    with open(source, "r+b") as f:
        f.seek(MIB)
        f.write(random.Random(3).randbytes(20 * MIB))
    archive = tmp_path / "src.rtui"
    assert main(["backup", str(source), str(archive)]) == 0
    return source, archive


def as_version_1(archive: Path, out: Path) -> Path:
    """The same backup as restore-tui 0.1 wrote it: SHA-256 digests, schema version 1."""
    shutil.copyfile(archive, out)
    with open_archive(archive) as arc:
        obj = json.loads(arc.manifest.model_dump_json(exclude_none=True))
        data = {
            (p, c.offset): arc.chunk_data(p, c)  # type: ignore[attr-defined]
            for p, chunks in [(None, arc.manifest.boot.track0)]
            + [(i.number, i.chunks) for i in arc.manifest.partitions]
            for c in chunks
            if c.kind == "data"
        }
    obj["schema_version"] = 1
    areas = [(None, obj["boot"]["track0"])]
    areas += [(p["number"], p["chunks"]) for p in obj["partitions"]]
    for number, chunks in areas:
        for c in chunks:
            if c.get("kind") == "data":
                c.pop("blake3")
                c["sha256"] = hashlib.sha256(data[(number, c["offset"])]).hexdigest()
    rewrite_manifest(out, json.dumps(obj).encode())
    return out


def test_new_backups_carry_blake3(backed_up: tuple[Path, Path]) -> None:
    _source, archive = backed_up
    with open_archive(archive) as arc:
        assert arc.manifest.schema_version == 2
        chunks = [c for p in arc.manifest.partitions for c in p.chunks if c.kind == "data"]
        assert chunks and all(c.digest is not None and c.digest[0] == "blake3" for c in chunks)
        first = chunks[0]
        raw = arc.chunk_data(arc.manifest.partitions[0].number, first)  # type: ignore[attr-defined]
        assert first.blake3 == digest_hex("blake3", raw) and chunk_matches(first, raw)
        assert not chunk_matches(first, bytes(len(raw)))


def test_a_version_1_backup_verifies_and_restores(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    source, archive = backed_up
    old = as_version_1(archive, tmp_path / "old.rtui")
    with open_archive(old) as arc:
        assert arc.manifest.schema_version == 1
        data = [c for p in arc.manifest.partitions for c in p.chunks if c.kind == "data"]
        assert all(c.digest and c.digest[0] == "sha256" for c in data)
    assert main(["verify", str(old)]) == 0
    target = tmp_path / "t.img"
    with open(target, "wb") as f:
        f.truncate(os.path.getsize(source))
    assert main(["restore", str(old), "--target", str(target), "--yes"]) == 0
    assert target.read_bytes()[: 21 * MIB] == source.read_bytes()[: 21 * MIB]


def test_a_version_1_manifest_with_blake3_is_refused(backed_up: tuple[Path, Path]) -> None:
    _source, archive = backed_up
    with open_archive(archive) as arc:
        obj = json.loads(arc.manifest.model_dump_json())
    obj["schema_version"] = 1
    with pytest.raises(ValueError, match="version 1 manifest carries SHA-256"):
        ArchiveManifest.model_validate(obj)
