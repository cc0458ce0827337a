"""Property tests of the manifest parser: hostile or malformed manifests are refused
with a clear ManifestInvalid, never a crash, and whatever is accepted is sound."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archive.manifest as manifest_module
from archive.errors import ManifestInvalid, UnsupportedVersion
from archive.manifest import (
    ArchiveManifest,
    BootArea,
    Chunk,
    PartitionImage,
    Role,
    SourceDisk,
)
from archive.native import HEADER, parse_manifest
from layout.models import DiskIdentity, Partition, PartitionTable

MiB = 1024 * 1024
DISK_LBA = 64 * 2048
DATA_STOP = 10 * MiB  # the manifest starts here in the pretend archive file


def _chunks(start: int, count: int, frame_base: int) -> tuple[Chunk, ...]:
    out = []
    for i in range(count):
        if i % 3 == 2:
            out.append(Chunk(offset=start + i * MiB, length=MiB, kind="zero"))
        else:
            out.append(
                Chunk(
                    offset=start + i * MiB,
                    length=MiB,
                    kind="data",
                    sha256=f"{i:064x}",
                    frame_offset=frame_base + i * 1000,
                    frame_length=1000,
                )
            )
    return tuple(out)


def base_manifest() -> dict[str, Any]:
    table = PartitionTable(
        scheme="msdos",
        disk_size_lba=DISK_LBA,
        mbr_signature="0BADF00D",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=8 * 2048, mbr_type=0x07),
            Partition(number=2, start_lba=10 * 2048, length_lba=40 * 2048, kind="extended",
                      mbr_type=0x05),
            Partition(number=5, start_lba=11 * 2048, length_lba=20 * 2048, kind="logical",
                      mbr_type=0x83),
        ),
    )  # fmt: skip
    sector0 = bytes(range(256)) * 2
    m = ArchiveManifest(
        created=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        creator="restore-tui test",
        source=SourceDisk(identity=DiskIdentity(size_bytes=DISK_LBA * 512), device="/dev/sdz"),
        table=table,
        boot=BootArea(
            boot_code=sector0[:440].hex(),
            sector0=sector0.hex(),
            track0=(Chunk(offset=512, length=MiB - 512, kind="zero"),),
            track0_stop=MiB,
        ),
        partitions=(
            PartitionImage(number=1, role=Role.SYSTEM, chunks=_chunks(MiB, 6, HEADER.size)),
            PartitionImage(number=2, role=Role.EXTENDED, capture="none"),
            PartitionImage(number=5, role=Role.DATA, chunks=_chunks(11 * MiB, 5, 100_000)),
        ),
    )
    return json.loads(m.model_dump_json())  # type: ignore[no-any-return]


BASE = base_manifest()


def parse(obj: Any) -> ArchiveManifest:
    return parse_manifest(json.dumps(obj).encode(), data_stop=DATA_STOP)


def test_base_manifest_is_accepted() -> None:
    m = parse(BASE)
    assert json.loads(m.model_dump_json()) == BASE


def _assert_sound(m: ArchiveManifest) -> None:
    """What any accepted manifest guarantees to the engine."""
    ss = m.table.sector_size
    disk = m.source.identity.size_bytes
    for p in m.table.partitions:
        assert (p.start_lba + p.length_lba) * ss <= disk
    assert m.boot.track0_stop <= disk
    frames = []
    for image in m.partitions:
        entry = m.table.partition(image.number)
        lo, hi = entry.start_lba * ss, (entry.start_lba + entry.length_lba) * ss
        prev = lo
        for c in image.chunks:
            assert prev <= c.offset and c.stop <= hi
            prev = c.stop
            if c.kind == "data":
                assert c.frame_offset is not None and c.frame_length is not None
                frames.append((c.frame_offset, c.frame_offset + c.frame_length))
    frames.sort()
    for (_, a_stop), (b_start, _) in itertools.pairwise(frames):
        assert a_stop <= b_start
    assert all(HEADER.size <= a and b <= DATA_STOP for a, b in frames)


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


ALL_PATHS = [p for p in _paths(BASE) if p]


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(ALL_PATHS), value=json_value)
def test_any_replaced_value_is_refused_clearly_or_sound(path: tuple[Any, ...], value: Any) -> None:
    obj = copy.deepcopy(BASE)
    _set(obj, path, value)
    try:
        m = parse(obj)
    except UnsupportedVersion as exc:
        assert path == ("schema_version",) and "update restore-tui" in str(exc)
    except ManifestInvalid as exc:
        assert str(exc)
    else:
        _assert_sound(m)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(data)


@settings(max_examples=100, deadline=None)
@given(start=st.integers(min_value=DISK_LBA - 2000, max_value=2**40), length=st.integers(1, 2**33))
def test_partition_outside_the_disk(start: int, length: int) -> None:
    obj = copy.deepcopy(BASE)
    obj["table"]["partitions"][0].update(start_lba=start, length_lba=length)
    with pytest.raises(ManifestInvalid, match=r"outside the usable area|past|overlap"):
        parse(obj)


@settings(max_examples=100, deadline=None)
@given(shift=st.integers(min_value=1, max_value=MiB), index=st.integers(1, 4))
def test_overlapping_chunks(shift: int, index: int) -> None:
    obj = copy.deepcopy(BASE)
    obj["partitions"][0]["chunks"][index]["offset"] -= shift
    with pytest.raises(ManifestInvalid, match="overlaps"):
        parse(obj)


@settings(max_examples=50, deadline=None)
@given(shift=st.integers(min_value=1, max_value=4 * MiB))
def test_chunk_past_its_partition(shift: int) -> None:
    obj = copy.deepcopy(BASE)
    last = obj["partitions"][2]["chunks"][-1]
    last["offset"] = (11 + 20) * MiB - MiB + shift
    with pytest.raises(ManifestInvalid, match="runs past the area's end"):
        parse(obj)


def test_overlapping_partitions() -> None:
    obj = copy.deepcopy(BASE)
    obj["table"]["partitions"][0]["length_lba"] = 30 * 2048
    with pytest.raises(ManifestInvalid, match="overlap"):
        parse(obj)


@settings(max_examples=50, deadline=None)
@given(frame_offset=st.integers(0, 2**40), length=st.integers(1, 2**31))
def test_frames_outside_the_data_area_or_overlapping(frame_offset: int, length: int) -> None:
    obj = copy.deepcopy(BASE)
    chunk = obj["partitions"][0]["chunks"][0]
    chunk.update(frame_offset=frame_offset, frame_length=length)
    others = [
        (c["frame_offset"], c["frame_offset"] + c["frame_length"])
        for p in obj["partitions"]
        for c in p["chunks"]
        if c["kind"] == "data" and c is not chunk
    ]
    stop = frame_offset + length
    fits = HEADER.size <= frame_offset and stop <= DATA_STOP
    clash = any(a < stop and frame_offset < b for a, b in others)
    if fits and not clash:
        _assert_sound(parse(obj))
    else:
        with pytest.raises(ManifestInvalid, match="outside the data area or over other data"):
            parse(obj)


def test_absurd_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = copy.deepcopy(BASE)
    obj["partitions"] = [obj["partitions"][0]] * 300
    with pytest.raises(ManifestInvalid, match="partitions"):
        parse(obj)
    # the per-area chunk bound (millions in production) applies to every area
    monkeypatch.setattr(manifest_module, "MAX_CHUNKS_PER_AREA", 3)
    with pytest.raises(ManifestInvalid, match="more than any real disk needs"):
        parse(copy.deepcopy(BASE))


def test_deep_nesting_and_huge_numbers() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(b"[" * 100_000 + b"]" * 100_000)
    obj = copy.deepcopy(BASE)
    obj["source"]["identity"]["size_bytes"] = 10**400
    with pytest.raises(ManifestInvalid):
        parse(obj)


def test_lies_about_the_disk() -> None:
    obj = copy.deepcopy(BASE)
    obj["boot"]["track0_stop"] = DISK_LBA * 512 + 512
    obj["table"]["partitions"] = []
    obj["partitions"] = []
    with pytest.raises(ManifestInvalid, match="past the end"):
        parse(obj)
    obj = copy.deepcopy(BASE)
    obj["source"]["identity"]["size_bytes"] = 1000
    with pytest.raises(ManifestInvalid, match="larger than the source disk"):
        parse(obj)
    obj = copy.deepcopy(BASE)
    obj["boot"]["boot_code"] = "00" * 440
    with pytest.raises(ManifestInvalid, match="boot code"):
        parse(obj)
    obj = copy.deepcopy(BASE)
    obj["partitions"][0]["chunks"][0]["sha256"] = None
    with pytest.raises(ManifestInvalid, match="no checksum"):
        parse(obj)


@pytest.mark.parametrize("version", [3, 99, 2**40])
def test_newer_schema_version(version: int) -> None:
    obj = copy.deepcopy(BASE)
    obj["schema_version"] = version
    with pytest.raises(UnsupportedVersion, match="newer restore-tui"):
        parse(obj)


@pytest.mark.parametrize("version", [0, -1, "1", None, 1.5])
def test_impossible_schema_version(version: object) -> None:
    obj = copy.deepcopy(BASE)
    obj["schema_version"] = version
    with pytest.raises(ManifestInvalid):
        parse(obj)
