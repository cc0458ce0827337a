"""Clonezilla saved-disk image directories, read through the same Archive interface.

The directory's text files (sfdisk dump, parted print, blkid, lsblk JSON) become
an :class:`ArchiveManifest`; partition data streams from the partclone (or dd)
images, checked against partclone's checksums before any byte is handed out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from archive.base import TRACK0, Archive, Area, Damage, Piece, ProgressCallback, VerifyReport
from archive.decompress import ImageStream, image_files
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
        boot = self._boot_area(table, sector0, dump.label)
        images = tuple(self._partition_image(p, table) for p in table.partitions)
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
