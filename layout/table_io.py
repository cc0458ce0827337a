"""Reading and writing MBR and GPT partition tables as bytes, with no external tools.

We parse and render the on-disk structures ourselves so a restore reproduces the
source table byte for byte (CHS fields, EBR chain, GPT entries and attributes)
and every byte we write goes through the plan's checked extents; libparted and
sfdisk would re-derive and re-align what we need kept exactly.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from layout.models import Partition, PartitionFlag, PartitionTable

MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_HIDDEN_TYPES = frozenset({0x11, 0x14, 0x16, 0x17, 0x1B, 0x1C, 0x1E})
MBR_LBA_TYPES = frozenset({0x0C, 0x0E, 0x0F})
GPT_PROTECTIVE = 0xEE
GPT_SIGNATURE = b"EFI PART"
GPT_REVISION = 0x00010000
GPT_HEADER_SIZE = 92
MAX_LOGICAL = 128

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
MSR_GUID = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"

ReadAt = Callable[[int, int], bytes]


class TableError(ValueError):
    """A partition table that is damaged or describes something impossible."""


@dataclass(frozen=True)
class ParsedTable:
    table: PartitionTable
    sector0: bytes
    ebrs: tuple[tuple[int, bytes], ...] = ()
    structure_extents: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class GptImage:
    """Every GPT structure for one disk size, ready to write."""

    primary_header: bytes
    entries: bytes
    backup_header: bytes
    primary_entries_lba: int
    backup_entries_lba: int
    backup_header_lba: int


# --- helpers -----------------------------------------------------------------


def guid_from_bytes(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(raw))).upper()


def guid_to_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def gpt_crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _chs(lba: int) -> bytes:
    """CHS bytes for an LBA, with the conventional 255 heads x 63 sectors geometry."""
    heads, sectors = 255, 63
    if lba >= 1024 * heads * sectors:
        return b"\xfe\xff\xff"
    cyl, rem = divmod(lba, heads * sectors)
    head, sec0 = divmod(rem, sectors)
    sector = sec0 + 1
    return bytes((head, (sector & 0x3F) | ((cyl >> 2) & 0xC0), cyl & 0xFF))


def mbr_entry(
    *, bootable: bool, type_byte: int, start_field: int, sectors: int, abs_start: int
) -> bytes:
    """One 16-byte MBR/EBR entry; ``start_field`` is what is stored (relative for EBRs)."""
    if sectors == 0:
        return bytes(16)
    if not (0 <= start_field <= 0xFFFFFFFF and 0 < sectors <= 0xFFFFFFFF):
        raise TableError("an MBR entry cannot describe a partition beyond 2 TiB")
    return (
        bytes((0x80 if bootable else 0x00,))
        + _chs(abs_start)
        + bytes((type_byte,))
        + _chs(abs_start + sectors - 1)
        + struct.pack("<II", start_field, sectors)
    )


def render_mbr_entry(p: Partition | None, sector_size: int = 512) -> bytes:
    """The primary-slot entry for ``p`` (absolute start), or 16 zero bytes."""
    del sector_size  # MBR entries are in logical sectors whatever their size
    if p is None:
        return bytes(16)
    return mbr_entry(
        bootable="boot" in p.flags,
        type_byte=p.mbr_type if p.mbr_type is not None else 0x83,
        start_field=p.start_lba,
        sectors=p.length_lba,
        abs_start=p.start_lba,
    )


def render_ebr(
    logical: Partition,
    ebr_lba: int,
    next_ebr_lba: int | None,
    extended_start: int,
    sector_size: int = 512,
    next_logical_stop: int | None = None,
) -> bytes:
    """An extended boot record: the logical partition's entry and the link to the next EBR."""
    first = mbr_entry(
        bootable="boot" in logical.flags,
        type_byte=logical.mbr_type if logical.mbr_type is not None else 0x83,
        start_field=logical.start_lba - ebr_lba,
        sectors=logical.length_lba,
        abs_start=logical.start_lba,
    )
    link = bytes(16)
    if next_ebr_lba is not None:
        link = mbr_link_entry(next_ebr_lba, extended_start, next_logical_stop)
    sector = bytearray(sector_size)
    sector[446:462] = first
    sector[462:478] = link
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def mbr_link_entry(next_ebr_lba: int, extended_start: int, next_logical_stop: int | None) -> bytes:
    """The second EBR entry: where the next EBR is, relative to the extended partition."""
    stop = next_logical_stop if next_logical_stop is not None else next_ebr_lba + 1
    return mbr_entry(
        bootable=False,
        type_byte=0x05,
        start_field=next_ebr_lba - extended_start,
        sectors=stop - next_ebr_lba,
        abs_start=next_ebr_lba,
    )


# --- reading -----------------------------------------------------------------


def read_table(read: ReadAt, size_bytes: int, sector_size: int = 512) -> ParsedTable | None:
    """Parse the disk's table; None when it has none; TableError when it is damaged."""
    if size_bytes < 2 * sector_size:
        return None
    sector0 = read(0, sector_size)
    if len(sector0) < sector_size or sector0[510:512] != b"\x55\xaa":
        # A GPT disk always has a protective MBR; without a boot signature there is no table.
        return None
    entries = [sector0[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    if any(e[4] == GPT_PROTECTIVE for e in entries):
        return _read_gpt(read, size_bytes, sector_size, sector0)
    if all(e == bytes(16) for e in entries):
        return None  # a boot sector (e.g. a whole-disk FAT) but no partitions
    return _read_mbr(read, size_bytes, sector_size, sector0, entries)


def _mbr_flags(status: int, type_byte: int) -> tuple[PartitionFlag, ...]:
    flags: list[PartitionFlag] = []
    if status == 0x80:
        flags.append("boot")
    if type_byte in MBR_HIDDEN_TYPES:
        flags.append("hidden")
    if type_byte in MBR_LBA_TYPES:
        flags.append("lba")
    if type_byte == 0xEF:
        flags.append("esp")
    return tuple(flags)


def _read_mbr(
    read: ReadAt, size_bytes: int, ss: int, sector0: bytes, entries: list[bytes]
) -> ParsedTable:
    disk_lba = size_bytes // ss
    signature = f"{struct.unpack_from('<I', sector0, 440)[0]:08X}"
    partitions: list[Partition] = []
    ebrs: list[tuple[int, bytes]] = []
    extents: list[tuple[int, int]] = [(0, ss)]
    for slot, raw in enumerate(entries):
        status, type_byte = raw[0], raw[4]
        start, length = struct.unpack_from("<II", raw, 8)
        if type_byte == 0 or length == 0:
            continue
        if status not in (0x00, 0x80):
            raise TableError(f"MBR entry {slot + 1} has an invalid status byte {status:#04x}")
        kind = "extended" if type_byte in MBR_EXTENDED_TYPES else "primary"
        if start + length > disk_lba:
            raise TableError(
                f"partition {slot + 1} ends at sector {start + length - 1}, past the disk's "
                f"last sector {disk_lba - 1}"
            )
        partitions.append(
            Partition(
                number=slot + 1,
                start_lba=start,
                length_lba=length,
                kind=kind,
                mbr_type=type_byte,
                flags=_mbr_flags(status, type_byte),
            )
        )
        if kind == "extended":
            logicals, chain = _read_ebr_chain(read, ss, start, length)
            partitions.extend(logicals)
            ebrs.extend(chain)
            extents.extend((lba * ss, (lba + 1) * ss) for lba, _ in chain)
    table = _make_table(
        scheme="msdos",
        sector_size=ss,
        disk_size_lba=disk_lba,
        mbr_signature=signature,
        partitions=tuple(partitions),
    )
    return ParsedTable(table, sector0, tuple(ebrs), tuple(extents))


def _read_ebr_chain(
    read: ReadAt, ss: int, ext_start: int, ext_length: int
) -> tuple[list[Partition], list[tuple[int, bytes]]]:
    logicals: list[Partition] = []
    chain: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    ebr_lba = ext_start
    number = 5
    while True:
        if ebr_lba in seen or len(chain) >= MAX_LOGICAL:
            raise TableError("the chain of logical partitions loops back on itself")
        if not ext_start <= ebr_lba < ext_start + ext_length:
            raise TableError(
                f"an extended boot record at sector {ebr_lba} lies outside the extended partition"
            )
        seen.add(ebr_lba)
        sector = read(ebr_lba * ss, ss)
        if len(sector) < ss or sector[510:512] != b"\x55\xaa":
            if ebr_lba == ext_start:
                return logicals, chain  # an empty extended partition
            raise TableError(f"the extended boot record at sector {ebr_lba} is damaged")
        chain.append((ebr_lba, sector))
        first, link = sector[446:462], sector[462:478]
        start_rel, length = struct.unpack_from("<II", first, 8)
        if first[4] != 0 and length:
            start = ebr_lba + start_rel
            if start + length > ext_start + ext_length:
                raise TableError(
                    f"logical partition {number} runs past the end of the extended partition"
                )
            logicals.append(
                Partition(
                    number=number,
                    start_lba=start,
                    length_lba=length,
                    kind="logical",
                    mbr_type=first[4],
                    flags=_mbr_flags(first[0], first[4]),
                )
            )
            number += 1
        next_rel, next_len = struct.unpack_from("<II", link, 8)
        if link[4] == 0 or next_len == 0:
            return logicals, chain
        ebr_lba = ext_start + next_rel


@dataclass(frozen=True)
class _GptHeader:
    alt: int
    first: int
    last: int
    guid: bytes
    entries_lba: int
    count: int
    entry_size: int
    entries_crc: int


def _gpt_header(raw: bytes, expected_lba: int) -> _GptHeader | None:
    if raw[:8] != GPT_SIGNATURE:
        return None
    size = struct.unpack_from("<I", raw, 12)[0]
    if not GPT_HEADER_SIZE <= size <= len(raw):
        return None
    stored_crc = struct.unpack_from("<I", raw, 16)[0]
    body = bytearray(raw[:size])
    body[16:20] = b"\0\0\0\0"
    if gpt_crc(bytes(body)) != stored_crc:
        return None
    my_lba, alt_lba, first, last = struct.unpack_from("<QQQQ", raw, 24)
    if my_lba != expected_lba:
        return None
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", raw, 72)
    return _GptHeader(alt_lba, first, last, raw[56:72], entries_lba, count, entry_size, entries_crc)


def _read_gpt(read: ReadAt, size_bytes: int, ss: int, sector0: bytes) -> ParsedTable:
    disk_lba = size_bytes // ss
    header = _gpt_header(read(ss, ss), 1)
    used_backup = False
    if header is None:
        header = _gpt_header(read((disk_lba - 1) * ss, ss), disk_lba - 1)
        used_backup = True
        if header is None:
            raise TableError("the disk has a protective MBR but both GPT headers are damaged")
    count, entry_size = header.count, header.entry_size
    if not (1 <= count <= 4096 and 128 <= entry_size <= 4096 and entry_size % 8 == 0):
        raise TableError(f"the GPT header describes {count} entries of {entry_size} bytes")
    entries_lba = header.entries_lba
    array_bytes = count * entry_size
    array = read(entries_lba * ss, array_bytes)
    if len(array) < array_bytes or gpt_crc(array) != header.entries_crc:
        raise TableError("the GPT partition entries do not match their checksum")
    first_usable, last_usable = header.first, header.last
    if not first_usable <= last_usable < disk_lba:
        raise TableError(
            f"the GPT says the disk's usable area ends at sector {last_usable}, but the disk "
            f"has only {disk_lba} sectors: it was made for a larger disk"
        )
    partitions: list[Partition] = []
    for index in range(count):
        raw = array[index * entry_size : (index + 1) * entry_size]
        if raw[:16] == bytes(16):
            continue
        first, last, attrs = struct.unpack_from("<QQQ", raw, 32)
        if last < first:
            raise TableError(f"GPT entry {index + 1} ends before it starts")
        type_guid = guid_from_bytes(raw[:16])
        name = raw[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        flags: list[PartitionFlag] = []
        if type_guid == ESP_GUID:
            flags.extend(("boot", "esp"))
        elif type_guid == BIOS_BOOT_GUID:
            flags.append("bios_grub")
        elif type_guid == MSR_GUID:
            flags.append("msr")
        if attrs & (1 << 2):
            flags.append("legacy_boot")
        partitions.append(
            Partition(
                number=index + 1,
                start_lba=first,
                length_lba=last - first + 1,
                gpt_type=type_guid,
                gpt_guid=guid_from_bytes(raw[16:32]),
                gpt_name=name,
                gpt_attributes=attrs,
                flags=tuple(flags),
            )
        )
    entry_sectors = -(-array_bytes // ss)
    extents = [(0, ss), (ss, 2 * ss), (entries_lba * ss, (entries_lba + entry_sectors) * ss)]
    alt = header.alt
    if not used_backup and 0 < alt < disk_lba:
        extents.append(((alt - entry_sectors) * ss, (alt + 1) * ss))
    table = _make_table(
        scheme="gpt",
        sector_size=ss,
        disk_size_lba=disk_lba,
        gpt_disk_guid=guid_from_bytes(header.guid),
        gpt_first_usable_lba=first_usable,
        gpt_last_usable_lba=last_usable,
        gpt_entry_count=count,
        gpt_entry_size=entry_size,
        partitions=tuple(partitions),
    )
    return ParsedTable(table, sector0, (), tuple(sorted(extents)))


def _make_table(**fields: object) -> PartitionTable:
    try:
        return PartitionTable(**fields)
    except ValueError as exc:
        raise TableError(f"the partition table is not consistent: {exc}") from exc


# --- rendering ---------------------------------------------------------------


def gpt_entry_bytes(p: Partition, entry_size: int) -> bytes:
    if p.gpt_type is None or p.gpt_guid is None:
        raise TableError(f"partition {p.number} needs a GPT type and GUID")
    name = (p.gpt_name or "")[:36].encode("utf-16-le")
    raw = (
        guid_to_bytes(p.gpt_type)
        + guid_to_bytes(p.gpt_guid)
        + struct.pack("<QQQ", p.start_lba, p.end_lba, p.gpt_attributes)
        + name.ljust(72, b"\0")
    )
    return raw.ljust(entry_size, b"\0")


def render_gpt(table: PartitionTable, disk_size_lba: int) -> GptImage:
    """GPT headers and entry array for a disk of ``disk_size_lba`` sectors.

    The backup lives at that disk's end and the last usable sector follows it,
    so a table restored onto a larger disk leaves the extra space usable.
    """
    if table.scheme != "gpt" or table.gpt_disk_guid is None:
        raise TableError("render_gpt needs a GPT table")
    ss = table.sector_size
    count = table.gpt_entry_count or 128
    entry_size = table.gpt_entry_size or 128
    entry_sectors = -(-(count * entry_size) // ss)
    array = bytearray(count * entry_size)
    for p in table.partitions:
        if not 1 <= p.number <= count:
            raise TableError(f"partition {p.number} has no slot in a {count}-entry GPT")
        offset = (p.number - 1) * entry_size
        array[offset : offset + entry_size] = gpt_entry_bytes(p, entry_size)
    entries = bytes(array)
    primary_entries_lba = 2
    backup_header_lba = disk_size_lba - 1
    backup_entries_lba = backup_header_lba - entry_sectors
    first_usable = table.gpt_first_usable_lba or primary_entries_lba + entry_sectors
    last_usable = backup_entries_lba - 1
    for p in table.partitions:
        if p.start_lba < first_usable or p.end_lba > last_usable:
            raise TableError(
                f"partition {p.number} (sectors {p.start_lba}-{p.end_lba}) does not fit a GPT "
                f"disk of {disk_size_lba} sectors"
            )
    entries_crc = gpt_crc(entries)
    guid = guid_to_bytes(table.gpt_disk_guid)

    def header(my_lba: int, alt_lba: int, entries_lba: int) -> bytes:
        body = bytearray(
            GPT_SIGNATURE
            + struct.pack("<IIII", GPT_REVISION, GPT_HEADER_SIZE, 0, 0)
            + struct.pack("<QQQQ", my_lba, alt_lba, first_usable, last_usable)
            + guid
            + struct.pack("<QIII", entries_lba, count, entry_size, entries_crc)
        )
        struct.pack_into("<I", body, 16, gpt_crc(bytes(body)))
        return bytes(body).ljust(ss, b"\0")

    return GptImage(
        primary_header=header(1, backup_header_lba, primary_entries_lba),
        entries=entries,
        backup_header=header(backup_header_lba, 1, backup_entries_lba),
        primary_entries_lba=primary_entries_lba,
        backup_entries_lba=backup_entries_lba,
        backup_header_lba=backup_header_lba,
    )


def protective_mbr(boot_sector0: bytes, disk_size_lba: int) -> bytes:
    """Sector 0 of a GPT disk of ``disk_size_lba`` sectors, keeping the source's bytes.

    Boot code, disk signature and everything else stay as they were; only the
    protective entry's size (and end CHS) follow the new disk size. On a disk of
    the source's size the result is the source's sector 0 unchanged.
    """
    sector = bytearray(boot_sector0)
    want = min(disk_size_lba - 1, 0xFFFFFFFF)
    slot = next((i for i in range(4) if sector[446 + 16 * i + 4] == GPT_PROTECTIVE), None)
    if slot is None:
        sector[446:510] = bytes(64)
        slot = 0
        sector[446:462] = mbr_entry(
            bootable=False, type_byte=GPT_PROTECTIVE, start_field=1, sectors=want, abs_start=1
        )
    else:
        base = 446 + 16 * slot
        if struct.unpack_from("<I", sector, base + 12)[0] != want:
            struct.pack_into("<I", sector, base + 12, want)
            sector[base + 5 : base + 8] = _chs(min(want, 0xFFFFFFFF))
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def table_fingerprint(parsed: ParsedTable | PartitionTable | None) -> str:
    """SHA-256 naming a table's geometry and identity (filesystem facts left out)."""
    table = parsed.table if isinstance(parsed, ParsedTable) else parsed
    if table is None:
        return hashlib.sha256(b"restore-tui: no partition table").hexdigest()
    stripped = table.model_copy(
        update={
            "partitions": tuple(
                p.model_copy(
                    update={"filesystem": None, "label": None, "fs_uuid": None, "fs_version": None}
                )
                for p in table.partitions
            )
        }
    )
    return hashlib.sha256(stripped.model_dump_json().encode()).hexdigest()
