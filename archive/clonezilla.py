"""Clonezilla saved-disk image directories, read through the same Archive interface.

The directory's text files (sfdisk dump, parted print, blkid, lsblk JSON) become
an :class:`ArchiveManifest`; partition data streams from the partclone (or dd)
images, checked against partclone's checksums before any byte is handed out.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from archive.base import (
    TRACK0,
    Archive,
    Area,
    Damage,
    Piece,
    ProgressCallback,
    Unchecked,
    UncheckedArea,
    UncheckedReason,
    VerifyReport,
    canonical_json,
    manifest_content,
    sha256_hex,
)
from archive.decompress import ImageStream, image_files, split_parts
from archive.errors import (
    ArchiveError,
    ManifestInvalid,
    NotAnArchive,
    TruncatedArchive,
)
from archive.manifest import (
    ArchiveManifest,
    BootArea,
    Chunk,
    PartitionImage,
    RawSector,
    SourceDisk,
)
from archive.partclone import (
    CHUNK_BYTES,
    PartcloneReader,
    append_ntfs_backup,
    image_chunks,
    image_pieces,
    ntfs_backup_chunk,
    ntfs_boot_sector,
    open_reader,
    verify_reader,
)
from archive.roles import BIOS_BOOT_GUID, ESP_GUID, MBR_EXTENDED_TYPES, MSR_GUID, infer_role
from layout.models import DiskIdentity, Partition, PartitionFlag, PartitionTable
from layout.table_io import render_ebr

# Text files are small; anything bigger is not Clonezilla's.
MAX_TEXT_BYTES = 4 * 1024 * 1024
CHECKSUM_FILES = {"MD5SUMS": "md5", "SHA1SUMS": "sha1", "B2SUMS": "blake2b"}

# What Clonezilla writes into an image folder besides the partition images: these
# files make up a backup's identity, with the images' names and sizes. Anything
# else (a note someone put there, restore-tui's journal, dotfiles) is not the backup.
METADATA_NAMES = frozenset(
    {
        "disk",
        "parts",
        "clonezilla-img",
        "blkid.list",
        "blkdev.list",
        "blkdev.json",
        "dev-fs.list",
        "efi-nvram.dat",
        "lvm_vg_dev.list",
        "lvm_logv.list",
        "MD5SUMS",
        "SHA1SUMS",
        "SHA512SUMS",
        "B2SUMS",
        "B3SUMS",
    }
)
_METADATA_PATTERN = re.compile(r"^(?:Info-.+\.txt|swappt-.+\.info|lvm_.+\.conf|.+-ebr)$")
# restore-tui's own files (archive does not import the application that names them).
_OWN_SUFFIXES = (".restore-journal.json", ".tmp", ".partial")


# --------------------------------------------------------------------------- text files


@dataclass(frozen=True)
class SfdiskEntry:
    device: str
    number: int
    start: int
    size: int
    type: str
    uuid: str | None = None
    name: str | None = None
    bootable: bool = False
    attrs: str | None = None


@dataclass(frozen=True)
class SfdiskDump:
    label: Literal["dos", "gpt"]
    label_id: str | None
    device: str | None
    first_lba: int | None
    last_lba: int | None
    sector_size: int | None
    table_length: int | None
    entries: tuple[SfdiskEntry, ...] = field(default=())


_HEADER_LINE = re.compile(r"^([a-z-]+):\s*(.*)$")
_ENTRY_LINE = re.compile(r"^(\S+)\s*:\s*(.*)$")
_FIELD = re.compile(r'\s*([a-z-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)')
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _bad(what: str, detail: str) -> ManifestInvalid:
    return ManifestInvalid(f"{what} is damaged: {detail}")


def _int(text: str, what: str, line: str) -> int:
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise _bad(what, f"{text.strip()!r} is not a number in line {line!r}") from None
    if not 0 <= value < 2**63:
        raise _bad(what, f"{value} is out of range in line {line!r}")
    return value


def partition_number(device: str) -> int | None:
    """``/dev/sda2`` -> 2, ``nvme0n1p3`` -> 3, ``loop0p1`` -> 1 (None without digits)."""
    match = _TRAILING_NUMBER.search(device)
    return int(match.group(1)) if match and len(match.group(1)) <= 4 else None


def parse_sfdisk(text: str, what: str = "the partition table file") -> SfdiskDump:
    """Parse ``sfdisk -d`` output; raise :class:`ManifestInvalid` naming the bad line."""
    headers: dict[str, str] = {}
    entries: list[SfdiskEntry] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        entry = _ENTRY_LINE.match(line)
        if entry and "=" in entry.group(2):
            entries.append(_parse_entry(entry.group(1), entry.group(2), what, line))
            continue
        header = _HEADER_LINE.match(line)
        if header:
            headers[header.group(1)] = header.group(2).strip()
            continue
        raise _bad(what, f"line {line!r} is neither a header nor a partition")
    label = headers.get("label")
    if label not in ("dos", "gpt"):
        raise _bad(what, f"table kind {label!r} is not 'dos' (MBR) or 'gpt'")
    numbers = [e.number for e in entries]
    if len(set(numbers)) != len(numbers):
        raise _bad(what, "two partitions share a number")

    def number(key: str) -> int | None:
        return _int(headers[key], what, f"{key}: {headers[key]}") if key in headers else None

    return SfdiskDump(
        label="dos" if label == "dos" else "gpt",
        label_id=headers.get("label-id"),
        device=headers.get("device"),
        first_lba=number("first-lba"),
        last_lba=number("last-lba"),
        sector_size=number("sector-size"),
        table_length=number("table-length"),
        entries=tuple(entries),
    )


def _parse_entry(device: str, rest: str, what: str, line: str) -> SfdiskEntry:
    fields: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _FIELD.match(rest, position)
        if not match or match.end() == position:
            raise _bad(what, f"cannot read {rest[position:]!r} in line {line!r}")
        value = match.group(2) or ""
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[match.group(1)] = value.strip()
        position = match.end()
    number = partition_number(device)
    if number is None or number == 0:
        raise _bad(what, f"cannot tell the partition number of {device!r}")
    for key in ("start", "size", "type"):
        if key not in fields:
            raise _bad(what, f"partition {device} has no {key}")
    return SfdiskEntry(
        device=device,
        number=number,
        start=_int(fields["start"], what, line),
        size=_int(fields["size"], what, line),
        type=fields["type"],
        uuid=fields.get("uuid") or None,
        name=fields.get("name") or None,
        bootable="bootable" in fields,
        attrs=fields.get("attrs") or None,
    )


_BLKID_PAIR = re.compile(r'([A-Z_]+)="((?:[^"\\]|\\.)*)"')


def parse_blkid(text: str) -> dict[str, dict[str, str]]:
    """``blkid`` output -> {device name without /dev/: {LABEL, UUID, TYPE, ...}}."""
    result: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        device, sep, rest = line.partition(":")
        if not sep or not device.strip():
            continue
        pairs = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _BLKID_PAIR.findall(rest)}
        result[device.strip().removeprefix("/dev/")] = pairs
    return result


def parse_dev_fs(text: str) -> dict[str, str]:
    """``dev-fs.list`` (``<dev> <fs> <size>``, ``#`` comments) -> {device name: fs}."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2:
            result[words[0].removeprefix("/dev/")] = words[1]
    return result


_PARTED_DISK = re.compile(r"^Disk\s+\S+:\s*(\d+)s\s*$", re.MULTILINE)
_PARTED_SECTORS = re.compile(r"^Sector size \(logical/physical\):\s*(\d+)B/(\d+)B", re.MULTILINE)


def parse_parted(text: str) -> tuple[int | None, int | None, int | None]:
    """``parted -s DISK unit s print`` -> (disk sectors, logical, physical sector size)."""
    disk = _PARTED_DISK.search(text)
    sectors = _PARTED_SECTORS.search(text)
    size = int(disk.group(1)) if disk and len(disk.group(1)) < 19 else None
    logical = int(sectors.group(1)) if sectors and len(sectors.group(1)) < 7 else None
    physical = int(sectors.group(2)) if sectors and len(sectors.group(2)) < 7 else None
    return size, logical, physical


def parse_blkdev_json(text: str, disk: str) -> dict[str, Any]:
    """The lsblk JSON entry of ``disk`` with lower-case keys ({} when absent or unreadable)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    devices = data.get("blockdevices") if isinstance(data, dict) else None
    if not isinstance(devices, list):
        return {}
    for device in devices:
        if not isinstance(device, dict):
            continue
        entry = {str(k).lower(): v for k, v in device.items()}
        name = str(entry.get("name") or entry.get("kname") or "").removeprefix("/dev/")
        if name == disk:
            return entry
    return {}


def parse_checksums(text: str) -> list[tuple[str, str]]:
    """``md5sum``-style lines -> [(hex digest, file name)]."""
    result: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = re.match(r"^([0-9a-fA-F]{32,128})\s+\*?(.+)$", line.strip())
        if match:
            result.append((match.group(1).lower(), match.group(2).strip()))
    return result


# --------------------------------------------------------------------------- recorded dates

# `date +%Z` abbreviations whose offset is not in doubt (CST, IST, ... are left out:
# they name several zones). Hours east of UTC.
ZONE_OFFSETS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "UT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1,
    "CET": 1, "CEST": 2, "MET": 1, "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "SAST": 2, "EST": -5, "EDT": -4, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8,
    "PDT": -7, "AKST": -9, "AKDT": -8, "HST": -10, "JST": 9, "KST": 9, "HKT": 8,
    "WIB": 7, "AWST": 8, "ACST": 9.5, "ACDT": 10.5, "AEST": 10, "AEDT": 11,
    "NZST": 12, "NZDT": 13,
}  # fmt: skip
_TIME = r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?: ([A-Za-z]+|[+-]\d{2}(?::?\d{2})?))?"
# clonezilla-img's first line, then the log's first "Starting ocs-sr at ...".
_SAVED_AT = re.compile(r"This image was saved by Clonezilla at " + _TIME)
_STARTED_AT = re.compile(r"^Starting \S+ at " + _TIME, re.MULTILINE)
# The log's last line and the Info-*.txt headers: local time to the minute, no zone.
_CREATED_TIME = re.compile(r"^### Image created time: (\d{4})-(\d{2})(\d{2})-(\d{2})(\d{2})", re.M)
_INFO_AT = re.compile(r"with \S+ info at (\d{4})-(\d{2})(\d{2})-(\d{2})(\d{2}):")


def _zone(text: str | None) -> timezone:
    """A ``date +%Z`` zone as an offset; an unknown name counts as UTC."""
    if not text:
        return UTC
    numeric = re.fullmatch(r"([+-])(\d{2}):?(\d{2})?", text)
    if numeric:
        sign = -1 if numeric.group(1) == "-" else 1
        minutes = int(numeric.group(2)) * 60 + int(numeric.group(3) or 0)
        return timezone(sign * timedelta(minutes=minutes)) if minutes < 24 * 60 else UTC
    hours = ZONE_OFFSETS.get(text.upper(), 0)
    return timezone(timedelta(hours=hours))


def _moment(fields: Iterable[str], zone: timezone) -> datetime | None:
    year, month, day, hour, minute, *rest = (int(f) for f in fields)
    try:
        moment = datetime(year, month, day, hour, minute, rest[0] if rest else 0, tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def recorded_time(log: str, infos: Iterable[str] = ()) -> datetime | None:
    """When Clonezilla saved the image, as it wrote it down (UTC); None if it did not.

    ``log`` is ``clonezilla-img``: its first line ("saved by Clonezilla at
    2024-05-01 12:34:56 UTC") is to the second with a zone; failing that the
    log's "Starting ocs-sr at", then its "Image created time" and the Info-*.txt
    headers, which are local time to the minute without a zone and count as UTC
    (Clonezilla live's clock). A zone abbreviation that names several zones (CST)
    counts as UTC too: the hour may be off, the same for every copy.
    """
    for pattern in (_SAVED_AT, _STARTED_AT):
        match = pattern.search(log)
        if match:
            found = _moment(match.groups()[:6], _zone(match.group(7)))
            if found is not None:
                return found
    for text, pattern in ((log, _CREATED_TIME), *((info, _INFO_AT) for info in infos)):
        match = pattern.search(text)
        if match:
            found = _moment(match.groups(), UTC)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- first sectors


@dataclass(frozen=True)
class MbrEntry:
    """One 16-byte partition entry of an MBR or EBR (CHS fields left out)."""

    boot: int
    type: int
    start: int
    size: int

    @classmethod
    def at(cls, sector: bytes, offset: int) -> MbrEntry:
        boot, ptype, start, size = struct.unpack_from("<B3xB3xII", sector, offset)
        return cls(boot, ptype, start, size)

    @property
    def empty(self) -> bool:
        return self.type == 0 and self.start == 0 and self.size == 0


def _boot_word(flag: int) -> str:
    return "bootable" if flag == 0x80 else "not bootable"


def check_mbr(sector0: bytes, dump: SfdiskDump, name: str, table_name: str) -> None:
    """Sector 0 (``<d>-mbr``) must hold the table ``<d>-pt.sf`` describes.

    Clonezilla keeps no checksum for its first-sector file and restore-tui writes
    that sector as saved: its four entries (start, size, type, boot flag; not the
    CHS fields, which tools fill in from different geometries), the disk signature
    and the 55 AA mark are compared with the table file. For GPT the sector is
    only a protective MBR: one entry of type 0xEE from sector 1.
    """
    suffix = "the first-sector file is damaged or from another disk"
    if len(sector0) < 512 or sector0[510:512] != b"\x55\xaa":
        raise ManifestInvalid(
            f"{name} does not end with the 55 AA mark of a partition table sector: {suffix}"
        )
    entries = [MbrEntry.at(sector0, 446 + 16 * i) for i in range(4)]
    if dump.label == "gpt":
        if not any(e.type == 0xEE and e.start == 1 for e in entries):
            raise ManifestInvalid(
                f"{name} has no protective entry (type 0xEE from sector 1), but {table_name} "
                f"describes a GPT disk: {suffix}"
            )
        return
    if dump.label_id:
        try:
            want_id: int | None = int(dump.label_id, 16)
        except ValueError:
            want_id = None
        have_id = int.from_bytes(sector0[440:444], "little")
        if want_id is not None and want_id != have_id:
            raise ManifestInvalid(
                f"{name}'s disk signature says {have_id:#010x}, {table_name} says "
                f"{want_id:#010x}: {suffix}"
            )
    primaries = {e.number: e for e in dump.entries if e.number <= 4}
    for slot, have in enumerate(entries, start=1):
        want = primaries.get(slot)
        where = f"{name}'s partition entry {slot}"
        if want is None:
            if not have.empty:
                raise ManifestInvalid(
                    f"{where} holds a partition (type {have.type:#04x}, start {have.start}), "
                    f"{table_name} has none there: {suffix}"
                )
            continue
        if have.empty:
            raise ManifestInvalid(
                f"{where} is empty, {table_name} says start {want.start}: {suffix}"
            )
        try:
            want_type = int(want.type, 16)
        except ValueError:
            raise _bad(table_name, f"type {want.type!r} of {want.device}") from None
        differences = (
            ("start", have.start, want.start),
            ("size", have.size, want.size),
            ("type", f"{have.type:#04x}", f"{want_type:#04x}"),
            ("", _boot_word(have.boot), "bootable" if want.bootable else "not bootable"),
        )
        for what, got, expected in differences:
            if got != expected:
                says = f"{what} {got}".strip()
                told = f"{what} {expected}".strip()
                raise ManifestInvalid(f"{where} says {says}, {table_name} says {told}: {suffix}")


def check_saved_ebr(
    raw: bytes,
    extended: Partition,
    logicals: list[Partition],
    name: str,
    table_name: str,
) -> None:
    """The saved first EBR (``<p>-ebr``) must describe the first logical partition of the table.

    restore-tui takes its first 446 bytes and its link to the second EBR as saved;
    the entries are compared with the table file (start, size, type), and the link
    must end where the next logical partition ends.
    """
    suffix = "the extended boot record file is damaged or from another disk"
    if raw[510:512] != b"\x55\xaa":
        raise ManifestInvalid(
            f"{name} does not end with the 55 AA mark of an extended boot record: {suffix}"
        )
    in_order = sorted(logicals, key=lambda p: p.number)
    first = in_order[0]
    entry = MbrEntry.at(raw, 446)
    where = f"{name}'s entry for partition {first.number}"
    for what, got, expected in (
        ("start", extended.start_lba + entry.start, first.start_lba),
        ("size", entry.size, first.length_lba),
        ("type", f"{entry.type:#04x}", f"{first.mbr_type or 0:#04x}"),
    ):
        if got != expected:
            raise ManifestInvalid(
                f"{where} says {what} {got}, {table_name} says {expected}: {suffix}"
            )
    if len(in_order) < 2:
        return
    following = in_order[1]
    link = MbrEntry.at(raw, 462)
    if link.type not in MBR_EXTENDED_TYPES:
        raise ManifestInvalid(
            f"{name}'s link to the next extended boot record is missing (type {link.type:#04x}), "
            f"{table_name} has partition {following.number} after {first.number}: {suffix}"
        )
    link_start = extended.start_lba + link.start
    link_stop = link_start + link.size
    if not (extended.start_lba < link_start < following.start_lba) or (
        link_stop != following.stop_lba
    ):
        raise ManifestInvalid(
            f"{name}'s link to partition {following.number} says sectors {link_start}-"
            f"{link_stop - 1}, {table_name} puts partition {following.number} at "
            f"{following.start_lba}-{following.end_lba}: {suffix}"
        )


def gpt_checked_stop(first: bytes, sector_size: int) -> int:
    """Where the bytes of ``<d>-gpt-1st`` that the GPT's own CRC32s protect end.

    The header (LBA 1) carries a CRC32 of itself and of the partition entries;
    when both match, everything up to the end of the entries is checked. Returns
    ``sector_size`` (nothing past sector 0 checked) when they do not.
    """
    ss = sector_size
    header = first[ss : 2 * ss]
    if len(header) < 92 or header[:8] != b"EFI PART":
        return ss
    size, crc = struct.unpack_from("<II", header, 12)
    if not 92 <= size <= ss:
        return ss
    body = bytearray(header[:size])
    body[16:20] = bytes(4)
    if zlib.crc32(body) != crc:
        return ss
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    start = entries_lba * ss
    stop = start + count * entry_size
    if entries_lba != 2 or not 0 < stop <= len(first):
        return 2 * ss
    if zlib.crc32(first[start:stop]) != entries_crc:
        return 2 * ss
    return -(-stop // ss) * ss


# --------------------------------------------------------------------------- the directory


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    with path.open("rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise NotAnArchive(f"{path.name} is far too big for a Clonezilla text file")
    return data.decode("utf-8", "replace")


def looks_like_clonezilla(path: Path) -> bool:
    """True for a directory that looks like a Clonezilla image (for ``open_archive``)."""
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    return bool(
        ("parts" in names or "disk" in names)
        and ("clonezilla-img" in names or any(n.endswith("-pt.sf") for n in names))
    )


@dataclass(frozen=True)
class _Image:
    """Where one partition's data lives in the directory."""

    kind: Literal["partclone", "dd", "none"]
    base: Path | None
    note: str | None = None


_MBR_FLAGS_BY_TYPE = {0xEF: "esp"}


class ClonezillaArchive(Archive):
    """A Clonezilla (or Rescuezilla) ``savedisk`` image directory."""

    format_name = "Clonezilla image"

    def __init__(self, path: Path, disk: str | None = None) -> None:
        self.path = path
        if not path.is_dir():
            raise NotAnArchive(f"{path} is not a folder, so it is not a Clonezilla image")
        disks = self._disks()
        self.disks = disks
        if disk is not None and disk not in disks:
            raise NotAnArchive(f"{path} holds no disk {disk!r} (it holds {', '.join(disks)})")
        self.disk = disk or disks[0]
        self.parts = self._parts()
        self._images: dict[int, _Image] = {}
        self._part_names: dict[int, str] = {}
        self._ntfs_backup: dict[int, int] = {}  # partition -> offset of its rebuilt last sector
        # partition -> why its data has no checksum (raw copy, image without checksums)
        self._unchecked_data: dict[int, UncheckedReason] = {}
        self._ebr_file: Path | None = None  # the saved first EBR, when the chain uses it
        self._track0_checked_stop = 0  # track 0 bytes below this are under the GPT's CRCs
        self.manifest = self._build_manifest()

    # -- reading the directory ---------------------------------------------------------

    def _file(self, name: str) -> Path:
        return self.path / name

    def _disks(self) -> list[str]:
        text = _read_text(self._file("disk"))
        if text is None:
            # saveparts images have no `disk`; one table dump still names the disk.
            dumps = sorted(p.name[: -len("-pt.sf")] for p in self.path.glob("*-pt.sf"))
            if len(dumps) == 1:
                return dumps
            raise NotAnArchive(
                f"{self.path} has no `disk` file: it is not a Clonezilla saved-disk image "
                "(or it was not copied completely)"
            )
        names = text.split()
        if not names or any("/" in n for n in names):
            raise NotAnArchive(f"{self.path}/disk does not name a disk")
        return names

    def _parts(self) -> list[str]:
        text = _read_text(self._file("parts"))
        if text is None:
            raise NotAnArchive(
                f"{self.path} has no `parts` file, which lists the saved partitions: the "
                "image folder is incomplete; copy it again from where it was saved"
            )
        names = text.split()
        if any("/" in n for n in names):
            raise ManifestInvalid(f"{self.path}/parts names something that is not a partition")
        return names

    def _table_dump(self) -> SfdiskDump:
        name = f"{self.disk}-pt.sf"
        text = _read_text(self._file(name))
        if text is None:
            raise NotAnArchive(
                f"{self.path} has no {name} (the saved partition table): restore-tui "
                "cannot tell where the partitions go"
            )
        return parse_sfdisk(text, name)

    def _sector0(self) -> bytes:
        path = self._file(f"{self.disk}-mbr")
        if not path.is_file():
            raise NotAnArchive(f"{self.path} has no {path.name} (the saved first sector)")
        data = path.read_bytes()[:512]
        if len(data) < 512:
            raise TruncatedArchive(f"{path.name} is {len(data)} bytes; the first sector is 512")
        return data

    def _track0_file(self, scheme: str) -> Path | None:
        hidden = self._file(f"{self.disk}-hidden-data-after-mbr")
        if hidden.is_file():
            return hidden
        first = self._file(f"{self.disk}-gpt-1st")
        if scheme == "gpt" and first.is_file():
            return first
        return None

    def _find_image(self, part: str) -> _Image:
        candidates = sorted({_strip_split(p.name) for p in self.path.glob(f"{part}.*-ptcl-img.*")})
        if candidates:
            return _Image("partclone", self._file(candidates[0]))
        dd = sorted({_strip_split(p.name) for p in self.path.glob(f"{part}.dd-img.*")})
        if dd:
            return _Image("dd", self._file(dd[0]))
        if any(self.path.glob(f"{part}.ntfs-img*")):
            raise NotAnArchive(
                f"{part} was saved with ntfsclone ({part}.ntfs-img), which restore-tui cannot "
                "read yet; save it again with Clonezilla's default (partclone)"
            )
        if self._file(f"swappt-{part}.info").is_file():
            return _Image("none", None, "swap: Clonezilla keeps only its label and UUID")
        raise NotAnArchive(
            f"{self.path} lists {part} in `parts` but has no image file for it "
            f"({part}.<fs>-ptcl-img.*): the folder is incomplete; copy it again"
        )

    def _creator(self) -> str:
        for name in ("Info-packages.txt", "clonezilla-img", "Info-saved-by-cmd.txt"):
            text = _read_text(self._file(name)) or ""
            match = re.search(r"clonezilla[-_ ]v?(\d+\.\d+(?:\.\d+)?(?:-\d+)?)", text, re.I)
            if match:
                return f"Clonezilla {match.group(1)}"
        return "Clonezilla (version not recorded)"

    def _created(self) -> datetime:
        """When the image was saved, as Clonezilla recorded it inside the folder.

        Only a folder that records no date falls back to a file's modification
        time, which a copy changes (identity() leaves ``created`` out for that reason).
        """
        infos = (
            _read_text(self._file(name)) or ""
            for name in ("Info-dmi.txt", "Info-lshw.txt", "Info-hwinfo.txt", "Info-lspci.txt")
        )
        recorded = recorded_time(_read_text(self._file("clonezilla-img")) or "", infos)
        if recorded is not None:
            return recorded
        for name in ("parts", "disk"):
            path = self._file(name)
            if path.is_file():
                return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        return datetime.fromtimestamp(self.path.stat().st_mtime, tz=UTC)

    # -- the manifest ------------------------------------------------------------------

    def _build_manifest(self) -> ArchiveManifest:
        dump = self._table_dump()
        parted = _read_text(self._file(f"{self.disk}-pt.parted")) or ""
        disk_sectors, parted_logical, parted_physical = parse_parted(parted)
        sector_size = dump.sector_size or parted_logical or 512
        if sector_size not in (512, 1024, 2048, 4096):
            raise ManifestInvalid(
                f"{self.disk}-pt.sf gives a sector size of {sector_size} bytes, which no disk has"
            )
        blkdev = parse_blkdev_json(_read_text(self._file("blkdev.json")) or "", self.disk)
        if disk_sectors is None:
            size = blkdev.get("size")
            if isinstance(size, int) or (isinstance(size, str) and size.isdigit()):
                disk_sectors = int(size) // sector_size
        if disk_sectors is None:
            ends = [e.start + e.size for e in dump.entries]
            backup = (dump.last_lba + 34) if dump.last_lba is not None else 0
            disk_sectors = max([*ends, backup, 1])
        blkid = parse_blkid(_read_text(self._file("blkid.list")) or "")
        dev_fs = parse_dev_fs(_read_text(self._file("dev-fs.list")) or "")

        try:
            table = self._table(dump, disk_sectors, sector_size, blkid, dev_fs)
        except ValidationError as exc:
            raise ManifestInvalid(
                f"{self.disk}-pt.sf describes an impossible partition table: {_first_error(exc)}"
            ) from None
        by_number = {p.number: p for p in table.partitions}
        for part in self.parts:
            number = partition_number(part)
            if number is None or number not in by_number:
                raise ManifestInvalid(
                    f"`parts` lists {part}, but {self.disk}-pt.sf has no such partition: the "
                    "table file does not belong to these images"
                )
            self._part_names[number] = part
            self._images[number] = self._find_image(part)

        sector0 = self._sector0()
        images = tuple(self._partition_image(p, table) for p in table.partitions)
        # After the images: a table file that does not fit them says so first.
        check_mbr(sector0, dump, f"{self.disk}-mbr", f"{self.disk}-pt.sf")
        boot = self._boot_area(table, sector0, dump.label)
        try:
            return ArchiveManifest(
                created=self._created(),
                creator=self._creator(),
                source=SourceDisk(
                    identity=DiskIdentity(
                        model=_text_or_none(blkdev.get("model")),
                        serial=_text_or_none(blkdev.get("serial")),
                        wwn=_text_or_none(blkdev.get("wwn")),
                        bus=_text_or_none(blkdev.get("tran")),
                        size_bytes=table.disk_size_lba * sector_size,
                        logical_sector_size=sector_size,
                        physical_sector_size=parted_physical or sector_size,
                    ),
                    device=f"/dev/{self.disk}",
                ),
                table=table,
                boot=boot,
                partitions=images,
            )
        except ValidationError as exc:
            raise ManifestInvalid(
                f"the Clonezilla image in {self.path} does not add up: {_first_error(exc)}"
            ) from None

    def _table(
        self,
        dump: SfdiskDump,
        disk_sectors: int,
        sector_size: int,
        blkid: dict[str, dict[str, str]],
        dev_fs: dict[str, str],
    ) -> PartitionTable:
        partitions: list[Partition] = []
        for e in dump.entries:
            name = e.device.removeprefix("/dev/")
            facts = blkid.get(name, {})
            fs = facts.get("TYPE") or _blkid_type(dev_fs.get(name))
            flags: list[PartitionFlag] = []
            if dump.label == "dos":
                try:
                    mbr_type = int(e.type, 16)
                except ValueError:
                    raise _bad(f"{self.disk}-pt.sf", f"type {e.type!r} of {name}") from None
                if not 0 <= mbr_type <= 255:
                    raise _bad(f"{self.disk}-pt.sf", f"type {e.type!r} of {name}")
                kind: Literal["primary", "extended", "logical"] = (
                    "logical"
                    if e.number > 4
                    else "extended"
                    if mbr_type in MBR_EXTENDED_TYPES
                    else "primary"
                )
                if e.bootable:
                    flags.append("boot")
                if mbr_type in _MBR_FLAGS_BY_TYPE:
                    flags.append("esp")
                partitions.append(
                    Partition(
                        number=e.number,
                        start_lba=e.start,
                        length_lba=e.size,
                        kind=kind,
                        mbr_type=mbr_type,
                        flags=tuple(flags),
                        filesystem=fs if kind != "extended" else None,
                        label=facts.get("LABEL"),
                        fs_uuid=facts.get("UUID"),
                    )
                )
            else:
                gtype = e.type.upper()
                if gtype == ESP_GUID:
                    flags.append("esp")
                elif gtype == BIOS_BOOT_GUID:
                    flags.append("bios_grub")
                elif gtype == MSR_GUID:
                    flags.append("msr")
                if e.attrs and "LegacyBIOSBootable" in e.attrs:
                    flags.append("legacy_boot")
                partitions.append(
                    Partition(
                        number=e.number,
                        start_lba=e.start,
                        length_lba=e.size,
                        gpt_type=gtype,
                        gpt_guid=e.uuid.upper() if e.uuid else None,
                        gpt_name=e.name,
                        flags=tuple(flags),
                        filesystem=fs,
                        label=facts.get("LABEL"),
                        fs_uuid=facts.get("UUID"),
                    )
                )
        label_id = (dump.label_id or "").strip()
        if dump.label == "dos":
            signature = (
                label_id.lower().removeprefix("0x").upper().rjust(8, "0") if label_id else None
            )
            return PartitionTable(
                scheme="msdos",
                sector_size=sector_size,
                disk_size_lba=disk_sectors,
                mbr_signature=signature,
                partitions=tuple(partitions),
            )
        return PartitionTable(
            scheme="gpt",
            sector_size=sector_size,
            disk_size_lba=disk_sectors,
            gpt_disk_guid=label_id.upper() or None,
            gpt_first_usable_lba=dump.first_lba,
            gpt_last_usable_lba=dump.last_lba,
            gpt_entry_count=dump.table_length or 128,
            gpt_entry_size=128,
            partitions=tuple(partitions),
        )

    def _boot_area(self, table: PartitionTable, sector0: bytes, label: str) -> BootArea:
        ss = table.sector_size
        first = table.first_partition_lba
        gap_stop = first * ss if first is not None else None
        source = self._track0_file(table.scheme)
        chunks: list[Chunk] = []
        stop: int = ss
        self._track0_source: tuple[Path | None, int] = (None, ss)
        if source is not None:
            # -hidden-data-after-mbr starts at sector 1; -gpt-1st starts at sector 0.
            shift = 0 if source.name.endswith("-gpt-1st") else ss
            length = max(0, source.stat().st_size - (ss - shift))
            stop = ss + length if gap_stop is None else min(ss + length, gap_stop)
            for offset in range(ss, stop, CHUNK_BYTES):
                chunks.append(
                    Chunk(offset=offset, length=min(CHUNK_BYTES, stop - offset), kind="data")
                )
            self._track0_source = (source, shift)
            if shift == 0:  # -gpt-1st: GPT header and entries, under their own CRC32s
                with source.open("rb") as f:
                    self._track0_checked_stop = gpt_checked_stop(f.read(64 * ss), ss)
        ebrs = self._ebr_chain(table)
        return BootArea(
            boot_code=sector0[:440].hex(),
            sector0=sector0.hex(),
            track0=tuple(chunks),
            track0_stop=gap_stop if gap_stop is not None else stop,
            ebrs=tuple(ebrs),
        )

    def _ebr_chain(self, table: PartitionTable) -> tuple[RawSector, ...]:
        """Every extended boot record, rebuilt from the table as Clonezilla's restore does.

        Clonezilla saves only the first EBR; the rest of the chain is not in the
        image. The first EBR sits at the extended partition's start and its link
        names the second's place; later EBRs go one alignment gap before their
        logical partition, as sfdisk places them.
        """
        extended = next((p for p in table.partitions if p.kind == "extended"), None)
        logicals = sorted(
            (p for p in table.partitions if p.kind == "logical"), key=lambda p: p.start_lba
        )
        if extended is None:
            return ()
        ss = table.sector_size
        saved = self._file(f"{self._device_name(extended.number)}-ebr")
        first_raw = saved.read_bytes()[:ss] if saved.is_file() else b""
        if len(first_raw) == ss:
            self._ebr_file = saved
            if logicals:
                check_saved_ebr(first_raw, extended, logicals, saved.name, f"{self.disk}-pt.sf")
        if not logicals:
            return (
                (RawSector(lba=extended.start_lba, data=first_raw.hex()),)
                if len(first_raw) == ss
                else ()
            )
        places = [extended.start_lba]
        saved_link = None
        if len(first_raw) == ss and first_raw[510:512] == b"\x55\xaa":
            rel = int.from_bytes(first_raw[470:474], "little")
            if first_raw[466] != 0 and rel:
                saved_link = extended.start_lba + rel
        for index, logical in enumerate(logicals[1:], start=1):
            previous_stop = logicals[index - 1].stop_lba
            if (
                index == 1
                and saved_link is not None
                and (previous_stop <= saved_link < logical.start_lba)
            ):
                places.append(saved_link)
            else:
                places.append(max(previous_stop, logical.start_lba - 2048))
        chain: list[RawSector] = []
        for index, (ebr_lba, logical) in enumerate(zip(places, logicals, strict=True)):
            following = index + 1 < len(logicals)
            sector = bytearray(
                render_ebr(
                    logical,
                    ebr_lba,
                    places[index + 1] if following else None,
                    extended.start_lba,
                    ss,
                    logicals[index + 1].stop_lba if following else None,
                )
            )
            if index == 0 and len(first_raw) == ss:
                sector[:446] = first_raw[:446]  # whatever boot code the first EBR carried
            chain.append(RawSector(lba=ebr_lba, data=bytes(sector).hex()))
        return tuple(chain)

    def _device_name(self, number: int) -> str:
        if number in self._part_names:
            return self._part_names[number]
        # Kernel naming: a disk whose name ends in a digit gets a "p" before the number.
        return f"{self.disk}p{number}" if self.disk[-1:].isdigit() else f"{self.disk}{number}"

    def _partition_image(self, p: Partition, table: PartitionTable) -> PartitionImage:
        role, evidence = infer_role(p, table)
        image = self._images.get(p.number)
        start = p.start_lba * table.sector_size
        size = p.length_lba * table.sector_size
        if image is None or image.kind == "none":
            note = (
                image.note
                if image
                else (
                    "an extended partition holds only the logical partitions' records"
                    if p.kind == "extended"
                    else "not saved in this Clonezilla image"
                )
            )
            return PartitionImage(
                number=p.number,
                role=role,
                role_evidence=evidence,
                capture="none",
                capture_note=note,
            )
        assert image.base is not None
        name = self._part_names[p.number]
        if image.kind == "dd":
            files = image_files(image.base)
            chunks = tuple(
                Chunk(offset=start + o, length=min(CHUNK_BYTES, size - o), kind="data")
                for o in range(0, size, CHUNK_BYTES)
            )
            self._unchecked_data[p.number] = "raw-copy"
            return PartitionImage(
                number=p.number,
                role=role,
                role_evidence=evidence,
                used_bytes=None,
                capture="all-sectors",
                capture_note=f"raw copy ({files.compression}), not checksummed by Clonezilla",
                chunks=chunks,
            )
        reader = open_reader(image.base, name=name, partition=p.number, base_offset=start)
        try:
            h = reader.header
            if h.device_size > size or h.total_blocks * h.block_size > size:
                raise ManifestInvalid(
                    f"{name}'s image comes from a {h.device_size}-byte partition but "
                    f"{self.disk}-pt.sf makes partition {p.number} only {size} bytes: the table "
                    "file does not belong to these images"
                )
            chunks = image_chunks(reader, start)
            if p.filesystem == "ntfs":
                chunks, backup = ntfs_backup_chunk(chunks, start + size, table.sector_size)
                if backup is not None:
                    self._ntfs_backup[p.number] = backup
            note = f"partclone {h.partclone_version}, {h.filesystem}, {h.checksum_name} checksums"
            if not reader.checks_data:
                note += " (the data cannot be checked: the image carries no usable checksums)"
                self._unchecked_data[p.number] = "image-has-no-checksums"
            return PartitionImage(
                number=p.number,
                role=role,
                role_evidence=evidence,
                used_bytes=reader.used_bytes,
                capture="used-blocks",
                capture_note=note,
                chunks=chunks,
            )
        finally:
            reader.stream.close()

    # -- what it is --------------------------------------------------------------------

    def _metadata_files(self) -> list[Path]:
        """The files Clonezilla wrote besides the images, sorted by name (see METADATA_NAMES)."""
        found = []
        for entry in self.path.iterdir():
            name = entry.name
            if name.startswith(".") or name.endswith(_OWN_SUFFIXES) or not entry.is_file():
                continue
            if (
                name in METADATA_NAMES
                or _METADATA_PATTERN.match(name)
                or any(name.startswith(f"{d}-") for d in self.disks)
            ):
                found.append(entry)
        return sorted(found, key=lambda e: e.name)

    def _image_parts(self, number: int) -> tuple[Path, ...]:
        found = self._images.get(number)
        if found is None or found.base is None:
            return ()
        return split_parts(found.base)

    def _content_identity(self) -> str:
        """The manifest without ``created``, every metadata file's bytes, every image's size.

        Metadata files (the table dumps, sector 0, track 0, EBRs, blkid and lsblk
        lists, Clonezilla's log and Info-*.txt, checksum files) count by name and
        SHA-256; image files, split parts included, by name and size only: their
        data is what verify checks. No modification time, no directory name.
        """
        metadata = []
        for path in self._metadata_files():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            metadata.append([path.name, path.stat().st_size, digest.hexdigest()])
        images = [
            [part.name, part.stat().st_size]
            for number in sorted(self._images)
            for part in self._image_parts(number)
        ]
        return sha256_hex(
            canonical_json(
                {
                    "format": "clonezilla image",
                    "disk": self.disk,
                    "manifest": manifest_content(self.manifest),
                    "metadata": metadata,
                    "images": images,
                }
            )
        )

    def _checksummed_files(self) -> set[str]:
        """Names listed in the checksum files that verify checks (MD5SUMS, ...)."""
        names: set[str] = set()
        for list_name in CHECKSUM_FILES:
            text = _read_text(self._file(list_name))
            if text is not None:
                names.update(Path(name).name for _, name in parse_checksums(text))
        return names

    def unchecked(self) -> tuple[Unchecked, ...]:
        """Boot code, track 0, EBRs and partitions whose data no checksum protects.

        Clonezilla keeps no checksum for sector 0, the hidden data after it or the
        EBR; the partition entries are compared with the table file on opening, the
        boot code cannot be. A GPT track 0 (-gpt-1st) is checked by the GPT's own
        CRC32s. A file listed in MD5SUMS, SHA1SUMS or B2SUMS is checked by verify,
        so what comes only from such files is covered.
        """
        listed = self._checksummed_files()

        def covered(*files: Path | None) -> bool:
            return all(f is not None and f.name in listed for f in files)

        m = self.manifest
        found: list[Unchecked] = []

        def add(area: UncheckedArea, reason: UncheckedReason, partition: int | None = None) -> None:
            found.append(Unchecked(area=area, reason=reason, partition=partition))

        if not covered(self._file(f"{self.disk}-mbr")):
            add("boot-code", "format-keeps-no-checksum")
        source, _shift = self._track0_source
        stored_stop = max((c.stop for c in m.boot.track0), default=0)
        if stored_stop > self._track0_checked_stop and not covered(source):
            add("track0", "format-keeps-no-checksum")
        # EBRs are rebuilt from the table file and the saved first EBR (when there is one).
        ebr_sources = [self._file(f"{self.disk}-pt.sf"), self._ebr_file]
        if m.boot.ebrs and not covered(*(f for f in ebr_sources if f is not None)):
            add("ebrs", "format-keeps-no-checksum")
        for number, reason in sorted(self._unchecked_data.items()):
            if not covered(*self._image_parts(number)):
                add("partition", reason, number)
        return tuple(found)

    # -- data --------------------------------------------------------------------------

    def pieces(self, area: Area, start: int = 0) -> Iterator[Piece]:
        if area == TRACK0:
            return self._track0_pieces(start)
        image = self.manifest.image(area)  # KeyError for a partition not in the backup
        if image.capture == "none":
            return iter(())
        found = self._images[area]
        assert found.base is not None
        entry = self.manifest.table.partition(area)
        base = entry.start_lba * self.manifest.table.sector_size
        if found.kind == "dd":
            return self._dd_pieces(area, found.base, image.chunks, start)
        reader = open_reader(
            found.base, name=self._part_names[area], partition=area, base_offset=base
        )
        pieces = image_pieces(reader, base, start)
        backup = self._ntfs_backup.get(area)
        if backup is None:
            return pieces
        image_base = found.base
        return append_ntfs_backup(
            pieces,
            number=area,
            base=base,
            backup_offset=backup,
            start=start,
            sector_size=self.manifest.table.sector_size,
            boot_sector=lambda: self._ntfs_boot_sector(area, image_base, base),
        )

    def _ntfs_boot_sector(self, number: int, image_base: Path, base: int) -> bytes:
        """The partition's NTFS boot sector, read (checked) from the image's first block."""
        reader = open_reader(
            image_base, name=self._part_names[number], partition=number, base_offset=base
        )
        return ntfs_boot_sector(reader, base, self.manifest.table.sector_size)

    def _track0_pieces(self, start: int) -> Iterator[Piece]:
        source, shift = self._track0_source
        chunks = self.manifest.boot.track0
        if source is None or not chunks:
            return
        # The file starts at disk byte `shift` (0 for gpt-1st, one sector for hidden data).
        with source.open("rb") as f:
            for c in chunks:
                if c.stop <= start:
                    continue
                f.seek(c.offset - shift)
                data = f.read(c.length)
                if len(data) != c.length:
                    raise TruncatedArchive(f"{source.name} is shorter than when it was opened")
                yield Piece(c.offset, c.length, data)

    def _dd_pieces(
        self, number: int, base: Path, chunks: tuple[Chunk, ...], start: int
    ) -> Iterator[Piece]:
        stream = ImageStream(image_files(base))
        try:
            for c in chunks:
                what = f"partition {number}'s raw image at byte {c.offset}"
                data = stream.read_exact(c.length, what)
                if c.stop > start:
                    yield Piece(c.offset, c.length, data)
            if stream.read(1):
                raise ManifestInvalid(
                    f"{base.name} holds more data than partition {number} in "
                    f"{self.disk}-pt.sf: the table file does not belong to this image"
                )
        finally:
            stream.close()

    def verify(self, progress: ProgressCallback | None = None) -> VerifyReport:
        report = VerifyReport()
        total = self.manifest.stored_bytes()
        try:
            for piece in self._track0_pieces(0):
                report.checked_bytes += piece.length
                report.checked_chunks += 1
        except ArchiveError as exc:
            report.damage.append(Damage(None, self.manifest.table.sector_size, str(exc)))
        for image in self.manifest.partitions:
            if image.capture == "none":
                continue
            self._verify_partition(image.number, report, progress, total)
        self._verify_checksum_files(report)
        return report

    def _verify_partition(
        self, number: int, report: VerifyReport, progress: ProgressCallback | None, total: int
    ) -> None:
        found = self._images[number]
        assert found.base is not None
        base = self.manifest.table.partition(number).start_lba * self.manifest.table.sector_size
        if found.kind == "dd":
            try:
                for piece in self._dd_pieces(
                    number, found.base, self.manifest.image(number).chunks, 0
                ):
                    report.checked_bytes += piece.length
                    report.checked_chunks += 1
                    if progress is not None:
                        progress(report.checked_bytes, total)
            except ArchiveError as exc:
                report.damage.append(Damage(number, base, str(exc)))
            return
        try:
            reader: PartcloneReader = open_reader(
                found.base, name=self._part_names[number], partition=number, base_offset=base
            )
        except ArchiveError as exc:
            report.damage.append(Damage(number, base, str(exc)))
            return
        try:
            damage = verify_reader(reader, report, progress, total)
            report.damage.extend(damage)
        finally:
            reader.stream.close()
        backup = self._ntfs_backup.get(number)
        if backup is not None and not damage:
            # The rebuilt backup boot sector: a copy of the (now verified) boot sector.
            try:
                self._ntfs_boot_sector(number, found.base, base)
                report.checked_bytes += self.manifest.table.sector_size
                report.checked_chunks += 1
            except ArchiveError as exc:
                report.damage.append(Damage(number, backup, str(exc)))
            if progress is not None:
                progress(report.checked_bytes, total)

    def _verify_checksum_files(self, report: VerifyReport) -> None:
        by_file = {part: number for number, part in self._part_names.items()}
        for list_name, algorithm in CHECKSUM_FILES.items():
            text = _read_text(self._file(list_name))
            if text is None:
                continue
            for expected, name in parse_checksums(text):
                path = self._file(Path(name).name)
                number = by_file.get(name.split(".", 1)[0])
                if not path.is_file():
                    report.damage.append(
                        Damage(number, 0, f"{name}, listed in {list_name}, is missing")
                    )
                    continue
                digest = hashlib.new(algorithm)
                with path.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                if digest.hexdigest() != expected:
                    report.damage.append(
                        Damage(
                            number,
                            0,
                            f"{name} does not match its {algorithm.upper()} sum in {list_name}: "
                            "the file was damaged after Clonezilla saved it",
                        )
                    )


def _strip_split(name: str) -> str:
    """``x.zst.aa`` -> ``x.zst``; other names unchanged."""
    head, _, tail = name.rpartition(".")
    if (
        head
        and re.fullmatch(r"[a-z]{2,}", tail)
        and tail
        not in {
            "gz",
            "zst",
            "xz",
            "bz2",
            "lz4",
            "lzo",
            "lzma",
            "lz",
            "lzip",
            "lrz",
            "uncomp",
        }
    ):
        return head
    return name


def _blkid_type(fs: str | None) -> str | None:
    if fs is None:
        return None
    return {"fat12": "vfat", "fat16": "vfat", "fat32": "vfat"}.get(fs.lower(), fs.lower())


def _text_or_none(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    return str(errors[0].get("msg", "invalid value")).removeprefix("Value error, ")


def open_clonezilla(path: Path | str, disk: str | None = None) -> ClonezillaArchive:
    """Open a Clonezilla saved-disk directory (``open_archive`` calls this for folders).

    ``disk`` picks one disk of a multi-disk image (the first by default; all are
    listed in the archive's ``disks``).
    """
    return ClonezillaArchive(Path(path), disk)
