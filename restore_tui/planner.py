"""Pure restore planning: from an archive manifest and a probed target disk to a validated Plan.

Nothing here opens a device. Full-disk plans keep the source's exact geometry;
one-partition plans put a partition of the backup into free space, 1 MiB aligned.
"""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from archive.manifest import ArchiveManifest, PartitionImage, Role
from archive.roles import (
    BASIC_DATA_GUID,
    ESP_GUID,
    LINUX_DATA_GUID,
    LINUX_FILESYSTEMS,
    LINUX_SWAP_GUID,
    RESERVED_ROLES,
    WINDOWS_RECOVERY_GUID,
    infer_role,
    plain_name,
)
from layout.gaps import MiB, align_up, free_regions, gpt_reserved_sectors, region_containing
from layout.models import DiskIdentity, FreeRegion, Partition, PartitionTable
from layout.notices import Notice, notice
from layout.plan import (
    Action,
    ArchiveRef,
    GrowFilesystem,
    Plan,
    PlanChoices,
    RestoreArea,
    Stage,
    TargetRef,
    WriteBytes,
    ZeroRange,
)
from layout.probe import disk_words
from layout.table_io import (
    TableError,
    mbr_link_entry,
    protective_mbr,
    render_ebr,
    render_gpt,
    render_mbr_entry,
)
from layout.units import human_size
from layout.validate import PlanError, check_plan
from restore_tui.counterpart import CounterpartError, find_counterpart, size_words

__all__ = [
    "PlanError",
    "TargetDisk",
    "human_size",
    "partition_title",
    "plan_full_disk",
    "plan_one_partition",
]

# Filesystems whose boot sector records the partition's start ("hidden sectors").
HIDDEN_SECTORS_FILESYSTEMS = frozenset({"ntfs", "vfat", "fat", "fat12", "fat16", "fat32", "msdos"})
FAT32_BACKUP_BOOT_SECTOR = 6
HIDDEN_SECTORS_OFFSET = 0x1C
MBR_MAX_SECTORS = 0xFFFFFFFF

TABLE_TITLE = "Partition table, boot code and track 0"
TABLE_EXPLANATION = (
    "MBR and track 0: the start of the disk that tells the computer how to boot and where "
    "the partitions are."
)


class TargetDisk(Protocol):
    """What planning needs to know about a target (``layout.probe.ProbedDisk`` has it)."""

    @property
    def device(self) -> str: ...

    @property
    def identity(self) -> DiskIdentity: ...

    @property
    def table(self) -> PartitionTable | None: ...

    @property
    def table_fingerprint(self) -> str: ...


def disk_summary(disk: TargetDisk) -> str:
    """The disk's one name ("model · size · serial"), as every screen says it."""
    return disk_words(disk.identity, getattr(disk, "backing_file", None))


def partition_title(p: Partition, role: Role, sector_size: int, number: int | None = None) -> str:
    """'Partition 3: Data — your files (label 'data', 20 GiB)'."""
    label = p.label or p.gpt_name
    size = human_size(p.length_lba * sector_size)
    detail = f"label '{label}', {size}" if label else size
    shown = number if number is not None else p.number
    return f"Partition {shown}: {plain_name(role, p.filesystem)} ({detail})"


def role_of(manifest: ArchiveManifest, number: int) -> Role:
    try:
        return manifest.image(number).role
    except KeyError:
        return infer_role(manifest.table.partition(number), manifest.table)[0]


# --- identifiers -------------------------------------------------------------


class IdSource:
    """Fresh disk signatures and GUIDs; seeded for tests, random otherwise."""

    def __init__(self, seed: int | None) -> None:
        self._rng: random.Random = (
            random.Random(seed) if seed is not None else random.SystemRandom()
        )

    def guid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4)).upper()

    def mbr_signature(self) -> str:
        # Zero means "no signature" to Windows; never hand that out.
        return f"{self._rng.randrange(1, 2**32):08X}"


# The order a full-disk restore writes partitions in: boot pieces first, so a
# restore that stops early has at least a disk that starts.
STAGE_ORDER: dict[Role, int] = {
    Role.EFI_SYSTEM: 0,
    Role.BIOS_BOOT: 0,
    Role.SYSTEM_RESERVED: 0,
    Role.MSR: 0,
    Role.SYSTEM: 1,
    Role.RECOVERY: 2,
    Role.DATA: 2,
    Role.SWAP: 2,
    Role.EXTENDED: 3,
}


# --- shared checks -----------------------------------------------------------


def _check_sector_size(manifest: ArchiveManifest, target: TargetDisk) -> int:
    ss = manifest.table.sector_size
    target_ss = target.identity.logical_sector_size
    if ss != target_ss:
        raise PlanError(
            f"the backup was made from a disk with {ss}-byte sectors, but "
            f"{disk_summary(target)} uses {target_ss}-byte sectors: its partition "
            "table and file systems would not line up. Restore onto a disk with "
            f"{ss}-byte sectors"
        )
    return ss


def _hex(data: bytes) -> str:
    return data.hex()


def _write(offset: int, data: bytes, description: str) -> WriteBytes:
    return WriteBytes(offset=offset, length=len(data), data=_hex(data), description=description)


def _identity_warnings(
    manifest: ArchiveManifest, target: TargetDisk, other_disks: Iterable[TargetDisk]
) -> list[Notice]:
    """Warn when another attached disk already carries the backed-up disk's identity."""
    source = manifest.table
    warnings: list[Notice] = []
    for disk in other_disks:
        if disk.device == target.device or disk.table is None:
            continue
        what = None
        if source.mbr_signature and disk.table.mbr_signature == source.mbr_signature:
            what = f"disk signature {source.mbr_signature}"
        elif source.gpt_disk_guid and disk.table.gpt_disk_guid == source.gpt_disk_guid:
            what = f"GPT disk GUID {source.gpt_disk_guid}"
        if what:
            other = f"{disk_summary(disk)} ({disk.device})"
            warnings.append(
                notice(
                    "shared-disk-identity",
                    f"Two disks would share an identity: {other} still carries the backed-up "
                    f"disk's {what}. Windows takes one of them offline and boot loaders may pick "
                    "the wrong one. Unplug that disk before starting the computer, or plan "
                    "again with --new-ids to give the restored disk fresh identifiers",
                    other=other,
                    identifier=what,
                )
            )
    return warnings


def _new_ids_warnings(scheme: str) -> list[Notice]:
    if scheme == "gpt":
        return [
            notice(
                "new-disk-ids",
                "Fresh identifiers (--new-ids): the restored disk gets a new GPT disk GUID and new "
            "partition GUIDs. Boot entries in the computer's firmware and boot-loader or "
            "/etc/fstab lines that name a partition GUID (PARTUUID) will no longer find their "
            "partition until they are updated; file system UUIDs and labels stay the same",
                scheme="gpt",
            )
        ]
    return [
        notice(
            "new-disk-ids",
            "Fresh identifiers (--new-ids): the restored disk gets a new disk signature. Windows "
            "ties drive letters to the disk signature, so partitions may get different letters, "
            "and an older Windows may not start until its boot configuration is repaired "
            "(bcdboot); file system UUIDs and labels stay the same",
            scheme="msdos",
        )
    ]


# --- full-disk plans ---------------------------------------------------------


def required_sectors(table: PartitionTable, track0_stop: int) -> int:
    """The smallest target, in sectors, that holds the backed-up layout exactly."""
    ss = table.sector_size
    stop = max((p.stop_lba for p in table.partitions), default=0)
    stop = max(stop, align_up(track0_stop, ss) // ss, 1)
    if table.scheme == "gpt":
        # The backup GPT (header and entry array) must fit after the last partition.
        entries = (table.gpt_entry_count or 128) * (table.gpt_entry_size or 128)
        stop = max(stop, 2 + align_up(entries, ss) // ss) + 1 + align_up(entries, ss) // ss
    return stop


def _table_for_target(
    source: PartitionTable, size_lba: int, ids: IdSource | None
) -> PartitionTable:
    fields: dict[str, Any] = source.model_dump()
    fields["disk_size_lba"] = size_lba
    if source.scheme == "gpt":
        entries = (source.gpt_entry_count or 128) * (source.gpt_entry_size or 128)
        # Last usable follows the target's end, so extra space is usable, not hidden.
        fields["gpt_last_usable_lba"] = size_lba - 2 - align_up(entries, source.sector_size) // (
            source.sector_size
        )
        if ids is not None:
            fields["gpt_disk_guid"] = ids.guid()
            fields["partitions"] = [
                {**p, "gpt_guid": ids.guid()} for p in fields["partitions"]
            ]
    elif ids is not None:
        fields["mbr_signature"] = ids.mbr_signature()
    try:
        return PartitionTable.model_validate(fields)
    except ValueError as exc:
        raise PlanError(f"the backed-up partition table does not fit this disk: {exc}") from exc


def _sector0(manifest: ArchiveManifest) -> bytes:
    ss = manifest.table.sector_size
    sector0 = manifest.sector0
    if len(sector0) < ss:
        raise PlanError(
            f"the backup's copy of sector 0 is {len(sector0)} bytes, shorter than one "
            f"{ss}-byte sector: the archive is damaged"
        )
    return sector0[:ss]


def _table_stage_full(
    manifest: ArchiveManifest,
    after: PartitionTable,
    size_lba: int,
    ids: IdSource | None,
    grown: Partition | None = None,
) -> Stage:
    ss = after.sector_size
    boot = manifest.boot
    sector0 = _sector0(manifest)
    if grown is not None and after.scheme == "msdos":
        # The grown partition's entry in the backed-up sector 0: its sector count.
        patched = bytearray(sector0)
        struct.pack_into("<I", patched, 446 + 16 * (grown.number - 1) + 12, grown.length_lba)
        sector0 = bytes(patched)
    disk_stop = size_lba * ss
    actions: list[Action] = []
    if after.scheme == "gpt":
        actions.append(
            _write(
                0,
                protective_mbr(sector0, size_lba),
                "Sector 0: the backed-up boot code with a protective MBR sized for this disk",
            )
        )
        try:
            gpt = render_gpt(after, size_lba)
        except TableError as exc:
            raise PlanError(str(exc)) from exc
        actions.append(_write(ss, gpt.primary_header, "Primary GPT header"))
        entries_at = gpt.primary_entries_lba * ss
        actions.append(_write(entries_at, gpt.entries, "Primary GPT partition entries"))
        remainder = align_up(entries_at + len(gpt.entries), ss)
        if boot.track0_stop > remainder:
            actions.append(
                RestoreArea(
                    area="track0", offset=remainder,
                    source_offset=remainder, length=boot.track0_stop - remainder,
                    description="Track 0: the rest of the gap before the first partition "
                    "(boot loader code lives here)",
                )
            )
        actions.append(
            _write(
                gpt.backup_entries_lba * ss, gpt.entries,
                "Backup GPT partition entries at the end of this disk",
            )
        )
        actions.append(
            _write(gpt.backup_header_lba * ss, gpt.backup_header, "Backup GPT header (last sector)")
        )
        return Stage(name="table", title=TABLE_TITLE, explanation=TABLE_EXPLANATION,
                     actions=tuple(actions))

    if ids is not None and after.mbr_signature is not None:
        patched = bytearray(sector0)
        struct.pack_into("<I", patched, 440, int(after.mbr_signature, 16))
        sector0 = bytes(patched)
        what = "Sector 0: the backed-up boot code and partition table, with a fresh disk signature"
    else:
        what = "Sector 0: the backed-up boot code, disk signature and partition table"
    actions.append(_write(0, sector0, what))
    if boot.track0_stop > ss:
        actions.append(
            RestoreArea(
                area="track0", offset=ss, source_offset=ss,
                length=boot.track0_stop - ss,
                description="Track 0: the gap between sector 0 and the first partition "
                "(boot loader code lives here)",
            )
        )
    for raw in boot.ebrs:
        data = bytes.fromhex(raw.data)
        if len(data) != ss:
            raise PlanError(
                f"the backup's extended boot record at sector {raw.lba} is {len(data)} bytes, "
                f"not one {ss}-byte sector: the archive is damaged"
            )
        actions.append(
            _write(raw.lba * ss, data,
                   f"Extended boot record at sector {raw.lba} (links the logical partitions)")
        )
    # A stale GPT backup at the end of a reused disk makes tools see a damaged GPT;
    # wipe it when the end lies outside every partition of the restored layout.
    tail = gpt_reserved_sectors(ss)
    tail_start = size_lba - tail
    last_used = max((p.stop_lba for p in after.partitions), default=0)
    if tail_start >= max(last_used, 1):
        actions.append(
            ZeroRange(
                offset=tail_start * ss, length=disk_stop - tail_start * ss,
                description="Clear the last sectors of the disk, where an old GPT backup "
                "could confuse other tools (unallocated space)",
            )
        )
    return Stage(name="table", title=TABLE_TITLE, explanation=TABLE_EXPLANATION,
                 actions=tuple(actions))


def _partition_action(p: Partition, ss: int, description: str) -> RestoreArea:
    return RestoreArea(
        area=p.number, offset=p.start_lba * ss,
        source_offset=p.start_lba * ss, length=p.length_lba * ss, description=description,
    )


def _image_note(image: PartitionImage) -> str:
    if image.capture == "none":
        return image.capture_note or "Nothing of this partition was stored in the backup."
    if image.capture == "used-blocks":
        return "Only the blocks the file system uses were stored; they are written back."
    return "Every sector was stored and is written back."


def _partition_stages(manifest: ArchiveManifest, after: PartitionTable) -> list[Stage]:
    ss = after.sector_size
    stored = {image.number: image for image in manifest.partitions}
    entries = [p for p in after.data_partitions if p.number in stored]
    roles = {p.number: role_of(manifest, p.number) for p in entries}
    order = sorted(entries, key=lambda p: (STAGE_ORDER.get(roles[p.number], 2), p.number))
    stages: list[Stage] = []
    reserved = [p for p in order if roles[p.number] in RESERVED_ROLES]
    if reserved:
        stages.append(
            Stage(
                name="reserved",
                title="Boot and reserved partitions: "
                + "; ".join(partition_title(p, roles[p.number], ss) for p in reserved),
                explanation="Small partitions the computer needs to start. They are written "
                "before the system so that a restore that stops early still leaves a disk "
                "that can boot.",
                actions=tuple(
                    _partition_action(p, ss, partition_title(p, roles[p.number], ss))
                    for p in reserved
                ),
            )
        )
    system = [p for p in order if roles[p.number] == Role.SYSTEM]
    if system:
        stages.append(
            Stage(
                name="system",
                title="; ".join(partition_title(p, Role.SYSTEM, ss) for p in system),
                explanation=" ".join(_image_note(stored[p.number]) for p in system),
                actions=tuple(
                    _partition_action(p, ss, partition_title(p, Role.SYSTEM, ss)) for p in system
                ),
            )
        )
    for p in order:
        role = roles[p.number]
        if role in RESERVED_ROLES or role == Role.SYSTEM or role == Role.EXTENDED:
            continue
        title = partition_title(p, role, ss)
        stages.append(
            Stage(
                name=f"partition-{p.number}", title=title,
                explanation=_image_note(stored[p.number]),
                actions=(_partition_action(p, ss, title),),
            )
        )
    return stages


def _table_summary(table: PartitionTable) -> str:
    ss = table.sector_size
    described = []
    for p in table.data_partitions:
        bits = [p.filesystem or "unknown contents"]
        if p.label or p.gpt_name:
            bits.append(f"'{p.label or p.gpt_name}'")
        bits.append(human_size(p.length_lba * ss))
        described.append(f"{p.number}: {' '.join(bits)}")
    count = len(described)
    noun = "partition" if count == 1 else "partitions"
    return f"its {count} {noun} ({'; '.join(described)})"


def plan_full_disk(
    manifest: ArchiveManifest,
    backup_identity: str,
    archive_path: str,
    target: TargetDisk,
    *,
    new_ids: bool = False,
    other_disks: Sequence[TargetDisk] = (),
    id_seed: int | None = None,
    grow: int | None = None,
) -> Plan:
    """Restore the whole backed-up disk onto ``target``, geometry kept exactly; with
    ``grow``, that partition then fills the free space after it (a larger disk)."""
    ss = _check_sector_size(manifest, target)
    size_lba = target.identity.size_bytes // ss
    need = required_sectors(manifest.table, manifest.boot.track0_stop)
    if size_lba < need:
        short = (need - size_lba) * ss
        raise PlanError(
            f"{disk_summary(target)} is too small for this backup: its partitions "
            f"need at least {human_size(need * ss)} ({need * ss} bytes) and the disk holds "
            f"{human_size(size_lba * ss)}, {human_size(short)} too little. Choose a disk of at "
            f"least {human_size(need * ss)}"
        )
    ids = IdSource(id_seed) if new_ids else None
    after = _table_for_target(manifest.table, size_lba, ids)
    # The data goes where it was; a grown partition only gets a longer table entry and,
    # last, its filesystem grown into the new room.
    restored = _partition_stages(manifest, after)
    growth = _growth(manifest, after, size_lba, grow) if grow is not None else None
    if growth is not None:
        after = growth.after
    stages = [
        _table_stage_full(manifest, after, size_lba, ids, growth.partition if growth else None),
        *restored,
        *([growth.stage] if growth else []),
    ]

    warnings: list[Notice] = [growth.note] if growth else []
    source_bytes = manifest.source.identity.size_bytes
    if size_lba * ss < source_bytes:
        warnings.append(
            notice(
                "target-smaller",
                f"The target is {human_size(source_bytes - size_lba * ss)} smaller than the "
                "backed-up disk; every partition still fits at its original place",
                bytes=source_bytes - size_lba * ss,
            )
        )
    elif size_lba * ss > source_bytes and growth is None:
        # What stays free after the last partition (the backed-up disk may have had
        # free space at its end too), as the tables show it.
        tail = max(0, _room_after_all(after, size_lba) - max(p.stop_lba for p in after.partitions))
        warnings.append(
            notice(
                "target-larger",
                f"The target is {human_size(size_lba * ss - source_bytes)} larger than the "
                f"backed-up disk; the {human_size(tail * ss)} after the last partition stays "
                "unallocated (a partition can be grown into it later)",
                bytes=size_lba * ss - source_bytes,
            )
        )
    missing = [
        p.number
        for p in manifest.table.data_partitions
        if p.number not in {image.number for image in manifest.partitions}
    ]
    for number in missing:
        warnings.append(
            notice(
                "partition-not-stored",
                f"Partition {number} was not in the backup: its table entry is restored but "
                "its contents are not, so it will hold whatever the target disk had there",
                partition=number,
            )
        )
    if new_ids:
        warnings.extend(_new_ids_warnings(after.scheme))
    else:
        warnings.extend(_identity_warnings(manifest, target, other_disks))

    erases = f"Everything on {disk_summary(target)} (now {target.device}): " + (
        f"{_table_summary(target.table)} are replaced by the backed-up disk's layout"
        if target.table is not None and target.table.data_partitions
        else "it has no partitions now; whatever data it holds is overwritten"
    )
    plan = Plan(
        choices=PlanChoices(job="full-disk", new_ids=new_ids, id_seed=id_seed, grow=grow),
        archive=ArchiveRef(path=archive_path, identity=backup_identity),
        target=TargetRef(
            device=target.device, name=disk_summary(target), identity=target.identity,
            table_fingerprint=target.table_fingerprint,
        ),
        before=target.table,
        after=after,
        stages=tuple(stages),
        warnings=tuple(warnings),
        erases=erases,
    )
    return check_plan(plan, target.identity.size_bytes)


# --- one-partition plans -----------------------------------------------------

MBR_TYPE_FOR_FS = {
    "ntfs": 0x07, "exfat": 0x07, "vfat": 0x0C, "fat": 0x0C, "fat32": 0x0C, "fat16": 0x0E,
    "msdos": 0x0C, "swap": 0x82,
}
GPT_TYPE_FOR_MBR = {
    0x07: BASIC_DATA_GUID, 0x06: BASIC_DATA_GUID, 0x0B: BASIC_DATA_GUID,
    0x0C: BASIC_DATA_GUID, 0x0E: BASIC_DATA_GUID, 0x83: LINUX_DATA_GUID,
    0x82: LINUX_SWAP_GUID, 0xEF: ESP_GUID, 0x27: WINDOWS_RECOVERY_GUID,
}
MBR_TYPE_FOR_GPT = {
    ESP_GUID: 0xEF, LINUX_SWAP_GUID: 0x82, WINDOWS_RECOVERY_GUID: 0x27, LINUX_DATA_GUID: 0x83,
}


def _mbr_type(src: Partition) -> int:
    if src.mbr_type is not None:
        return src.mbr_type
    if src.gpt_type in MBR_TYPE_FOR_GPT:
        return MBR_TYPE_FOR_GPT[src.gpt_type]
    return MBR_TYPE_FOR_FS.get(src.filesystem or "", 0x83)


def _gpt_type(src: Partition) -> str:
    if src.gpt_type is not None:
        return src.gpt_type
    if src.mbr_type in GPT_TYPE_FOR_MBR:
        return GPT_TYPE_FOR_MBR[src.mbr_type]
    return BASIC_DATA_GUID if src.filesystem in MBR_TYPE_FOR_FS else LINUX_DATA_GUID


@dataclass(frozen=True)
class _Placement:
    partition: Partition
    table_actions: tuple[Action, ...]
    after: PartitionTable
    notes: tuple[Notice, ...] = ()


def _ebr_lbas(target: TargetDisk, given: Sequence[int] | None) -> tuple[int, ...] | None:
    """The target's EBR chain (chain order): given by the caller or read by the probe."""
    value = given if given is not None else getattr(target, "ebr_lbas", None)
    if value is None:
        parsed = getattr(target, "parsed", None)
        if parsed is not None:
            value = tuple(lba for lba, _ in parsed.ebrs)
    return tuple(value) if value is not None else None


def _with_partition(table: PartitionTable, new: Partition, **updates: Any) -> PartitionTable:
    fields: dict[str, Any] = table.model_dump()
    fields["partitions"] = [*fields["partitions"], new.model_dump()]
    fields.update(updates)
    try:
        return PartitionTable.model_validate(fields)
    except ValueError as exc:
        raise PlanError(f"the new partition does not fit this disk's table: {exc}") from exc


_UNKNOWN_CHAIN = (
    "cannot add a logical partition: the chain of extended boot records on this disk was not "
    "read, so the new one could not be linked safely. Probe the disk again"
)


def _logical_start(
    table: PartitionTable, start: int, align_lba: int, ebr_lbas: tuple[int, ...] | None
) -> tuple[int, int]:
    """Where a new logical partition starts and where its EBR goes, inside the container.

    fdisk's convention puts the EBR 1 MiB before its partition; when the free run
    before the partition is shorter, the EBR takes the run's first sector, and when
    there is no free sector at all the partition moves on by one alignment step.
    """
    extended = next((p for p in table.partitions if p.kind == "extended"), None)
    if extended is None:
        raise PlanError(
            "this free space is marked as inside an extended partition, but the disk has none"
        )
    logicals = [p for p in table.partitions if p.kind == "logical"]
    if not logicals:
        return max(start, align_up(extended.start_lba + 1, align_lba)), extended.start_lba
    if not ebr_lbas:
        raise PlanError(_UNKNOWN_CHAIN)

    def run_start(stop: int) -> int:
        lowest = extended.start_lba + 1
        for p in table.data_partitions:
            if p.stop_lba <= stop:
                lowest = max(lowest, p.stop_lba)
        for lba in ebr_lbas:
            if lba < stop:
                lowest = max(lowest, lba + 1)
        return lowest

    ebr_lba = max(run_start(start), start - align_lba)
    if ebr_lba >= start:
        start += align_lba
        ebr_lba = max(run_start(start), start - align_lba)
    return start, ebr_lba


def _place_mbr(
    table: PartitionTable,
    src: Partition,
    region: FreeRegion,
    start: int,
    ebr_lba: int,
    ebr_lbas: tuple[int, ...] | None,
) -> _Placement:
    ss = table.sector_size
    length = src.length_lba
    base: dict[str, Any] = {
        "start_lba": start, "length_lba": length, "mbr_type": _mbr_type(src),
        "flags": tuple(f for f in src.flags if f in ("hidden", "lba")),
        "filesystem": src.filesystem, "label": src.label, "fs_uuid": src.fs_uuid,
    }
    if start + length > MBR_MAX_SECTORS:
        raise PlanError(
            "an MBR partition table cannot address space beyond 2 TiB; this free region lies "
            "too far into the disk for the partition to be described"
        )
    if not region.inside_extended:
        used = {p.number for p in table.partitions if p.kind != "logical"}
        free_slots = [n for n in range(1, 5) if n not in used]
        if not free_slots:
            raise PlanError(
                "no free MBR slot: all four primary partition slots of this disk are used "
                "(an MBR disk holds at most four, one of which may be an extended container). "
                "Choose free space inside the extended partition, or a disk with a free slot"
            )
        slot = free_slots[0]
        new = Partition(number=slot, kind="primary", **base)
        entry = render_mbr_entry(new, ss)
        action = _write(
            446 + 16 * (slot - 1), entry,
            f"Partition table entry {slot} in sector 0 for the new partition",
        )
        return _Placement(new, (action,), _with_partition(table, new))

    extended = next((p for p in table.partitions if p.kind == "extended"), None)
    if extended is None:
        raise PlanError("this free space is marked as inside an extended partition, but the "
                        "disk has none")
    logicals = [p for p in table.partitions if p.kind == "logical"]
    number = max((p.number for p in logicals), default=4) + 1
    new = Partition(number=number, kind="logical", **base)
    if new.stop_lba > extended.stop_lba:
        raise PlanError(
            f"the partition would run past the end of the extended partition {extended.number} "
            f"(sector {extended.end_lba})"
        )
    if not logicals:
        # An empty container: the first EBR sits at its first sector and describes the new
        # logical directly. It holds nothing else, so the whole sector is written.
        ebr = render_ebr(new, extended.start_lba, None, extended.start_lba, ss)
        action = _write(
            extended.start_lba * ss, ebr,
            f"Extended boot record at sector {extended.start_lba} for the new logical partition",
        )
        return _Placement(new, (action,), _with_partition(table, new))

    if not ebr_lbas:
        raise PlanError(_UNKNOWN_CHAIN)
    if not extended.start_lba < ebr_lba < start or any(
        p.start_lba <= ebr_lba < p.stop_lba for p in table.data_partitions
    ):
        raise PlanError(
            "there is no free sector before the new logical partition for its extended boot "
            "record; choose a larger free region inside the extended partition"
        )
    previous = ebr_lbas[-1]
    ebr = render_ebr(new, ebr_lba, None, extended.start_lba, ss)
    link = mbr_link_entry(ebr_lba, extended.start_lba, new.stop_lba)
    actions = (
        _write(ebr_lba * ss, ebr, f"New extended boot record at sector {ebr_lba}"),
        _write(
            previous * ss + 462, link,
            f"Link from the extended boot record at sector {previous} to the new one "
            "(16 bytes; the rest of that sector is untouched)",
        ),
    )
    return _Placement(new, actions, _with_partition(table, new))


def _place_gpt(
    table: PartitionTable,
    src: Partition,
    start: int,
    size_lba: int,
    ids: IdSource,
    new_ids: bool,
    taken_guids: set[str],
) -> _Placement:
    ss = table.sector_size
    count = table.gpt_entry_count or 128
    entry_size = table.gpt_entry_size or 128
    used = {p.number for p in table.partitions}
    slot = next((n for n in range(1, count + 1) if n not in used), None)
    if slot is None:
        raise PlanError(
            f"no free GPT entry: all {count} partition entries of this disk are used"
        )
    notes: list[Notice] = []
    guid = src.gpt_guid
    if new_ids or guid is None or guid in taken_guids:
        if guid is not None and guid in taken_guids and not new_ids:
            notes.append(
                notice(
                    "partition-guid-taken",
                    f"The backed-up partition's GUID {guid} is already used by a partition on "
                    "this disk, so the new partition gets a fresh one",
                    guid=guid,
                )
            )
        guid = ids.guid()
    new = Partition(
        number=slot, start_lba=start, length_lba=src.length_lba, gpt_type=_gpt_type(src),
        gpt_guid=guid, gpt_name=src.gpt_name or src.label or "",
        gpt_attributes=src.gpt_attributes if src.gpt_type else 0,
        flags=tuple(f for f in src.flags if f in ("esp", "bios_grub", "msr", "legacy_boot")),
        filesystem=src.filesystem, label=src.label, fs_uuid=src.fs_uuid,
    )
    entries_bytes = count * entry_size
    entry_sectors = align_up(entries_bytes, ss) // ss
    last_usable = size_lba - 2 - entry_sectors
    after = _with_partition(table, new, gpt_last_usable_lba=last_usable,
                            disk_size_lba=size_lba)
    try:
        gpt = render_gpt(after, size_lba)
    except TableError as exc:
        raise PlanError(str(exc)) from exc
    at = (slot - 1) * entry_size
    entry = gpt.entries[at : at + entry_size]
    actions: list[Action] = [
        _write(gpt.primary_entries_lba * ss + at, entry,
               f"Primary GPT entry {slot} for the new partition"),
        _write(ss, gpt.primary_header, "Primary GPT header (new entry checksum)"),
    ]
    if table.gpt_last_usable_lba == last_usable:
        actions.append(
            _write(gpt.backup_entries_lba * ss + at, entry,
                   f"Backup GPT entry {slot} for the new partition")
        )
    else:
        # The disk grew (or the table was made for another size): the backup moves to the
        # disk's real end, so the whole backup array is written there.
        actions.append(
            _write(gpt.backup_entries_lba * ss, gpt.entries,
                   "Backup GPT partition entries, moved to the end of this disk")
        )
        notes.append(
            notice(
                "backup-gpt-moved",
                "The backup GPT was not at the disk's end; it is rewritten there",
            )
        )
    actions.append(_write(gpt.backup_header_lba * ss, gpt.backup_header, "Backup GPT header"))
    return _Placement(new, tuple(actions), after, tuple(notes))


def _resolve_region(
    target: TargetDisk, regions: Sequence[FreeRegion], region: FreeRegion | int
) -> tuple[FreeRegion, int]:
    """The free region to use and the lowest sector the partition may start at."""
    def listing() -> str:
        if not regions:
            return "this disk has no free space of 1 MiB or more"
        return "free space on this disk starts at sector " + ", ".join(
            f"{r.start_lba} ({human_size(r.size_bytes)})" for r in regions
        )

    if isinstance(region, FreeRegion):
        for r in regions:
            if (
                r.start_lba <= region.start_lba
                and region.end_lba <= r.end_lba
                and r.inside_extended == region.inside_extended
            ):
                return region, region.start_lba
        raise PlanError(
            f"sectors {region.start_lba}-{region.end_lba} are not free space on "
            f"{disk_summary(target)}: {listing()}"
        )
    found = region_containing(regions, region)
    if found is None:
        raise PlanError(
            f"sector {region} is not in free space on {disk_summary(target)}: "
            f"{listing()}"
        )
    return found, region


def _first_fitting_region(
    regions: Sequence[FreeRegion], length_lba: int, align_lba: int
) -> FreeRegion | None:
    for r in regions:
        # A logical partition also needs its EBR before it: _logical_start checks
        # that precisely; this only picks the candidate.
        if align_up(r.start_lba, align_lba) + length_lba <= r.start_lba + r.length_lba:
            return r
    return max(regions, key=lambda r: r.length_lba, default=None)


def _hidden_sectors_patches(
    new: Partition, src: Partition, ss: int
) -> tuple[list[Action], Notice | None]:
    """Boot-sector fixes for a moved NTFS/FAT partition, and a note for the user."""
    if (src.filesystem or "").lower() not in HIDDEN_SECTORS_FILESYSTEMS:
        return [], None
    if new.start_lba == src.start_lba:
        return [], None
    if new.start_lba > 0xFFFFFFFF:
        return [], notice(
            "hidden-sectors-overflow",
            "The partition starts beyond what its boot sector's 'hidden sectors' field can "
            "hold; Windows may not start from it",
        )
    value = struct.pack("<I", new.start_lba)
    actions: list[Action] = [
        _write(
            new.start_lba * ss + HIDDEN_SECTORS_OFFSET, value,
            f"Boot sector 'hidden sectors' field: the partition now starts at sector "
            f"{new.start_lba} (was {src.start_lba})",
        )
    ]
    if (src.fs_version or "").upper() == "FAT32" and new.length_lba > FAT32_BACKUP_BOOT_SECTOR:
        # FAT32 keeps a copy of its boot sector at sector 6 of the volume (the value
        # mkfs and Windows use); fsck.fat reports the two differing otherwise.
        actions.append(
            _write(
                (new.start_lba + FAT32_BACKUP_BOOT_SECTOR) * ss + HIDDEN_SECTORS_OFFSET, value,
                "Backup FAT32 boot sector 'hidden sectors' field (sector 6 of the partition)",
            )
        )
    if (src.filesystem or "").lower() == "ntfs" and new.length_lba > 1:
        actions.append(
            _write(
                new.end_lba * ss + HIDDEN_SECTORS_OFFSET, value,
                "Backup NTFS boot sector 'hidden sectors' field (last sector of the partition)",
            )
        )
    note = notice(
        "hidden-sectors-updated",
        f"The partition moves from sector {src.start_lba} to sector {new.start_lba}; the "
        "'hidden sectors' field of its boot sector is updated so Windows still finds it",
        old_start=src.start_lba,
        new_start=new.start_lba,
    )
    return actions, note


def _holders_of(
    disks: Iterable[TargetDisk], has_it: Callable[[Partition], bool]
) -> Iterator[tuple[TargetDisk, Partition]]:
    """Every (disk, partition) whose partition ``has_it``."""
    for disk in disks:
        for p in disk.table.partitions if disk.table is not None else ():
            if has_it(p):
                yield disk, p


def _uuid_advice(filesystem: str | None) -> str:
    """What a shared filesystem UUID means for this filesystem, and how to change one."""
    if filesystem == "ntfs":
        return (
            "Windows does not mind; Linux may mount the wrong one. To give one a new "
            "number, run `ntfslabel --new-serial` on it from a Linux system"
        )
    if filesystem in ("ext2", "ext3", "ext4"):
        return (
            "Linux may mount the wrong one; after the restore give one a new UUID with "
            "`tune2fs -U random` on that partition (with it not mounted)"
        )
    return "Linux may mount the wrong one if both disks stay attached"


def _shared_id_warnings(
    src: Partition,
    new: Partition,
    disks: Sequence[TargetDisk],
    others: Sequence[TargetDisk],
    new_ids: bool,
) -> list[Notice]:
    """A filesystem UUID or partition GUID the new partition would share with another."""
    out: list[Notice] = []
    if src.fs_uuid:
        same_uuid = _holders_of(disks, lambda p: p.kind != "extended" and p.fs_uuid == src.fs_uuid)
        for disk, p in same_uuid:
            other = f"{disk_summary(disk)} ({disk.device})"
            out.append(
                notice(
                    "shared-fs-uuid",
                    f"Two partitions would share file system UUID {src.fs_uuid}: partition "
                    f"{p.number} of {other} has it too. {_uuid_advice(src.filesystem)}",
                    uuid=src.fs_uuid,
                    partition=p.number,
                    other=other,
                )
            )
    if new.gpt_guid and not new_ids:
        for disk, p in _holders_of(others, lambda p: p.gpt_guid == new.gpt_guid):
            other = f"{disk_summary(disk)} ({disk.device})"
            out.append(
                notice(
                    "shared-partition-guid",
                    f"Two partitions would share partition GUID {new.gpt_guid}: partition "
                    f"{p.number} of {other} has it. Boot entries naming that GUID may pick the "
                    "wrong one; plan again with --new-ids for a fresh GUID",
                    guid=new.gpt_guid,
                    partition=p.number,
                    other=other,
                )
            )
    return out


def _empty_table(source: PartitionTable, size_lba: int, ids: IdSource) -> PartitionTable:
    """A new, empty table of the backup's kind for a disk that has none, new identifiers."""
    ss = source.sector_size
    if source.scheme == "msdos":
        return PartitionTable(
            scheme="msdos", sector_size=ss, disk_size_lba=size_lba,
            mbr_signature=ids.mbr_signature(),
        )  # fmt: skip
    entries = (source.gpt_entry_count or 128) * (source.gpt_entry_size or 128)
    entry_sectors = align_up(entries, ss) // ss
    return PartitionTable(
        scheme="gpt", sector_size=ss, disk_size_lba=size_lba, gpt_disk_guid=ids.guid(),
        gpt_first_usable_lba=2 + entry_sectors,
        gpt_last_usable_lba=size_lba - 2 - entry_sectors,
        gpt_entry_count=source.gpt_entry_count or 128,
        gpt_entry_size=source.gpt_entry_size or 128,
    )  # fmt: skip


def _on_a_fresh_table(placement: _Placement, size_lba: int) -> _Placement:
    """The table actions for a disk that had no table: all of sector 0 (the new MBR, or
    GPT's protective MBR), the whole GPT at both ends, and stale GPT copies at the end
    cleared, instead of single entries patched into a table that is not there."""
    after = placement.after
    ss = after.sector_size
    if after.scheme == "msdos":
        sector0 = bytearray(ss)
        assert after.mbr_signature is not None
        struct.pack_into("<I", sector0, 440, int(after.mbr_signature, 16))
        for p in after.partitions:
            sector0[446 + 16 * (p.number - 1) : 462 + 16 * (p.number - 1)] = render_mbr_entry(
                p, ss
            )
        sector0[510:512] = b"\x55\xaa"
        actions: list[Action] = [
            _write(0, bytes(sector0), "Sector 0: a new partition table (MBR) with the new "
                   "partition, and a new disk signature"),
        ]
        tail = gpt_reserved_sectors(ss)
        if size_lba - tail >= after.partitions[0].stop_lba:
            actions.append(
                ZeroRange(
                    offset=(size_lba - tail) * ss, length=tail * ss,
                    description="Clear the last sectors of the disk, where an old GPT backup "
                    "could confuse other tools (unallocated space)",
                )
            )
    else:
        try:
            gpt = render_gpt(after, size_lba)
        except TableError as exc:
            raise PlanError(str(exc)) from exc
        actions = [
            _write(0, protective_mbr(bytes(ss), size_lba), "Protective MBR in sector 0 (GPT)"),
            _write(ss, gpt.primary_header, "Primary GPT header (new table)"),
            _write(gpt.primary_entries_lba * ss, gpt.entries, "Primary GPT partition entries"),
            _write(gpt.backup_entries_lba * ss, gpt.entries, "Backup GPT partition entries"),
            _write(gpt.backup_header_lba * ss, gpt.backup_header, "Backup GPT header"),
        ]
    note = notice(
        "new-table",
        f"This disk has no partition table: a new one ({'GPT' if after.scheme == 'gpt' else 'MBR'}"
        ", like the backed-up disk's) is created on it, holding only the restored partition",
        scheme=after.scheme,
    )
    return _Placement(placement.partition, tuple(actions), after, (*placement.notes, note))


def _back_in_its_place(
    source: PartitionTable, target: PartitionTable, src: Partition, new: Partition
) -> bool:
    """The partition goes back to exactly its sectors on the disk it was backed up from
    (same disk signature or GPT GUID): whatever pointed to it before still does."""
    same_disk = (
        source.scheme == target.scheme
        and (source.mbr_signature or source.gpt_disk_guid) is not None
        and (source.mbr_signature, source.gpt_disk_guid)
        == (target.mbr_signature, target.gpt_disk_guid)
    )
    return same_disk and (new.start_lba, new.length_lba) == (src.start_lba, src.length_lba)


def _boot_repair_notice(src: Partition) -> Notice:
    """A system partition somewhere new: what to do if the computer does not start."""
    if (src.filesystem or "") in LINUX_FILESYSTEMS:
        steps = (
            "If the computer does not start from it, start a Linux live system, and from "
            "the restored system (chroot) run `grub-install` for the disk and `update-grub`"
        )
    else:
        steps = (
            "If Windows does not start, start from a Windows installation or repair disc "
            "(or USB stick), choose Repair your computer, then Startup Repair; if that does "
            "not help, open its Command Prompt there and run: bcdboot C:\\Windows"
        )
    return notice(
        "system-partition-alone",
        "This is a system partition restored on its own, at a new place: the computer's boot "
        "files (System Reserved or EFI partition) may still point to its old place, so it "
        f"may not start until its boot configuration is repaired. {steps}",
        steps=steps,
    )


def _backed_up_partition(manifest: ArchiveManifest, number: int) -> Partition:
    """Backed-up partition ``number``, refused in words when it is not one to restore."""
    try:
        src = manifest.table.partition(number)
    except KeyError:
        numbers = ", ".join(str(p.number) for p in manifest.table.data_partitions)
        raise PlanError(f"the backup has no partition {number}; it has {numbers}") from None
    if src.kind == "extended":
        raise PlanError(
            f"partition {number} is the extended container, which holds no data of "
            "its own; choose one of the partitions inside it"
        )
    try:
        manifest.image(number)
    except KeyError:
        raise PlanError(f"partition {number} was not stored in the backup") from None
    return src


def plan_one_partition(
    manifest: ArchiveManifest,
    backup_identity: str,
    archive_path: str,
    target: TargetDisk,
    partition_number: int,
    region: FreeRegion | int | None,
    *,
    new_ids: bool = False,
    other_disks: Sequence[TargetDisk] = (),
    id_seed: int | None = None,
    ebr_lbas: Sequence[int] | None = None,
) -> Plan:
    """Put backed-up partition ``partition_number`` into free space of ``target``.

    ``region`` is a free region, a sector inside one, or None for the first free
    region the partition fits in (the largest when none does, so the refusal
    says by how much).

    ``ebr_lbas`` is the target's chain of extended boot records in chain order
    (``ParsedTable.ebrs``); it is needed only to add a logical partition behind
    existing ones.
    """
    ss = _check_sector_size(manifest, target)
    size_lba = target.identity.size_bytes // ss
    region_given = region
    src = _backed_up_partition(manifest, partition_number)
    image = manifest.image(partition_number)
    ids = IdSource(id_seed)
    # An empty disk gets a new table of the backup's kind, holding only this partition.
    table = target.table or _empty_table(manifest.table, size_lba, ids)
    fresh_table = target.table is None
    if table.sector_size != ss:
        raise PlanError("the target's partition table uses a different sector size than the disk")
    align_lba = max(1, MiB // ss)
    chain = _ebr_lbas(target, ebr_lbas)
    known_free = () if fresh_table else tuple(getattr(target, "free", ()) or ())
    regions = known_free or free_regions(table, size_lba, ss, ebr_lbas=chain)
    if region is None:
        region = _first_fitting_region(regions, src.length_lba, align_lba)
        if region is None:
            raise PlanError(f"{disk_summary(target)} has no free space for a partition")
    chosen, lowest = _resolve_region(target, regions, region)
    if chosen.sector_size != ss:
        raise PlanError("the free region was measured in a different sector size than the disk")
    start = align_up(max(lowest, chosen.start_lba), align_lba)
    ebr_lba = 0
    if table.scheme == "msdos" and chosen.inside_extended:
        start, ebr_lba = _logical_start(table, start, align_lba, chain)
    need = src.length_lba
    room = chosen.start_lba + chosen.length_lba - start
    if need > room:
        raise PlanError(
            f"partition {partition_number} ({human_size(need * ss)}) does not fit: the free "
            f"space from sector {start} holds {human_size(max(room, 0) * ss)}, "
            f"{human_size((need - max(room, 0)) * ss)} too little. Choose a larger free region"
        )
    taken_guids = {p.gpt_guid for p in table.partitions if p.gpt_guid}
    if table.scheme == "gpt":
        placement = _place_gpt(table, src, start, size_lba, ids, new_ids, taken_guids)
    else:
        placement = _place_mbr(table, src, chosen, start, ebr_lba, chain)
    if fresh_table:
        placement = _on_a_fresh_table(placement, size_lba)
    new = placement.partition
    role = image.role
    title = partition_title(new, role, ss)
    data_action = RestoreArea(
        area=partition_number, offset=new.start_lba * ss,
        source_offset=src.start_lba * ss, length=new.length_lba * ss,
        description=f"Backed-up partition {partition_number} written into the new partition "
        f"{new.number}",
    )
    patches, patch_note = _hidden_sectors_patches(new, src, ss)
    stages = (
        Stage(
            name="table",
            title="A new partition table, with the new partition"
            if fresh_table
            else "Partition table entry for the new partition",
            explanation="The disk had no partition table; the new one lists only this "
            "partition."
            if fresh_table
            else "Only the entry for the new partition is added; every other partition "
            "and the boot code stay exactly as they are.",
            actions=placement.table_actions,
        ),
        Stage(
            name=f"partition-{new.number}",
            title=f"{title}, from backed-up partition {partition_number}",
            explanation=_image_note(image),
            actions=(data_action, *patches),
        ),
    )
    warnings: list[Notice] = list(placement.notes)
    if patch_note:
        warnings.append(patch_note)
    if role == Role.SYSTEM and not _back_in_its_place(manifest.table, table, src, new):
        warnings.append(_boot_repair_notice(src))
    others = [d for d in other_disks if d.device != target.device]
    warnings += _shared_id_warnings(src, new, [target, *others], others, new_ids)
    if new_ids and table.scheme == "gpt":
        warnings.append(
            notice(
                "new-partition-guid",
                "Fresh identifiers (--new-ids): the new partition gets a new partition GUID; "
                "boot entries or /etc/fstab lines naming the old PARTUUID will not find it",
            )
        )

    region_end = chosen.start_lba + chosen.length_lba - 1
    erases = (
        f"Nothing: the new partition goes into unallocated space (sectors {new.start_lba}-"
        f"{new.end_lba}, {human_size(new.length_lba * ss)}, of the "
        f"{human_size(chosen.size_bytes)} free at sectors {chosen.start_lba}-{region_end} on "
        f"{disk_summary(target)}). Whatever old data lies in that space is "
        "overwritten; every other partition stays as it is"
    )
    # A free region chosen on screen is recorded by its first sector: planning again
    # with that sector finds the same region.
    hint = region_given.start_lba if isinstance(region_given, FreeRegion) else region_given
    plan = Plan(
        choices=PlanChoices(
            job="one-partition",
            partition=partition_number,
            region=hint,
            new_ids=new_ids,
            id_seed=id_seed,
        ),
        archive=ArchiveRef(path=archive_path, identity=backup_identity),
        target=TargetRef(
            device=target.device, name=disk_summary(target), identity=target.identity,
            table_fingerprint=target.table_fingerprint,
        ),
        before=target.table,
        after=placement.after,
        stages=stages,
        warnings=tuple(warnings),
        erases=erases,
    )
    return check_plan(plan, target.identity.size_bytes)


# -- replacing one partition with its backed-up version ----------------------------------


def _with_type(table: PartitionTable, number: int, **types: Any) -> PartitionTable:
    fields: dict[str, Any] = table.model_dump()
    for p in fields["partitions"]:
        if p["number"] == number:
            p.update(types)
    return PartitionTable.model_validate(fields)


def _type_change(
    table: PartitionTable, found: Partition, src: Partition, size_lba: int
) -> tuple[tuple[Action, ...], PartitionTable, str | None]:
    """The table writes that give ``found`` the backed-up partition's type (none when it
    has it already), the table after them, and the change in words."""
    ss = table.sector_size
    if table.scheme == "msdos":
        want = _mbr_type(src)
        if found.mbr_type == want:
            return (), table, None
        if found.kind != "primary":
            raise PlanError(
                f"partition {found.number} is a logical partition of type 0x{found.mbr_type:02x}"
                f", the backed-up one is 0x{want:02x}; restore-tui changes the type of primary "
                "partitions only. Restore it into free space instead"
            )
        type_byte_at = 446 + 16 * (found.number - 1) + 4
        after = _with_type(table, found.number, mbr_type=want)
        action = _write(type_byte_at, bytes([want]), f"Partition {found.number}'s type byte")
        return (action,), after, f"its type changes from 0x{found.mbr_type:02x} to 0x{want:02x}"
    want_guid = _gpt_type(src)
    if (found.gpt_type or "").lower() == want_guid.lower():
        return (), table, None
    after = _with_type(table, found.number, gpt_type=want_guid)
    try:
        gpt = render_gpt(after, size_lba)
    except TableError as exc:
        raise PlanError(str(exc)) from exc
    if gpt.backup_header_lba != size_lba - 1:
        raise PlanError("the backup GPT is not at the disk's end; restore the whole disk instead")
    entry_size = table.gpt_entry_size or 128
    at = (found.number - 1) * entry_size
    entry = gpt.entries[at : at + entry_size]
    actions: tuple[Action, ...] = (
        _write(gpt.primary_entries_lba * ss + at, entry, f"Primary GPT entry {found.number}"),
        _write(ss, gpt.primary_header, "Primary GPT header (entry checksum)"),
        _write(gpt.backup_entries_lba * ss + at, entry, f"Backup GPT entry {found.number}"),
        _write(gpt.backup_header_lba * ss, gpt.backup_header, "Backup GPT header"),
    )
    return actions, after, "its partition type changes to the backed-up one's"


def plan_replace_partition(
    manifest: ArchiveManifest,
    backup_identity: str,
    archive_path: str,
    target: TargetDisk,
    partition_number: int,
) -> Plan:
    """Replace the target's counterpart of backed-up partition ``partition_number`` (found
    by what it is: restore_tui.counterpart) with the backed-up version, in place.

    Only the counterpart's extent is written (plus its boot sector's place fields when it
    starts elsewhere than the backed-up one); the table is written only when the
    partition's type must change. A counterpart smaller than the backed-up partition is
    refused, saying by how much.
    """
    ss = _check_sector_size(manifest, target)
    size_lba = target.identity.size_bytes // ss
    src = _backed_up_partition(manifest, partition_number)
    image = manifest.image(partition_number)
    name = disk_summary(target)
    try:
        found = find_counterpart(src, target.table, name)
    except CounterpartError as exc:
        raise PlanError(str(exc)) from None
    table = target.table
    assert table is not None  # find_counterpart refuses a disk without one
    cp = found.partition
    too_small = size_words(src, cp, ss)
    if too_small:
        raise PlanError(too_small)
    type_actions, after, type_words = _type_change(table, cp, src, size_lba)
    # The restored extent: the backed-up partition's size, at the counterpart's start.
    extent = cp.model_copy(update={"length_lba": src.length_lba})
    data = RestoreArea(
        area=partition_number, offset=cp.start_lba * ss, source_offset=src.start_lba * ss,
        length=src.length_lba * ss,
        description=f"Backed-up partition {partition_number} written over partition {cp.number}",
    )
    patches, patch_note = _hidden_sectors_patches(extent, src, ss)
    label = cp.label or cp.gpt_name
    held = " ".join(x for x in (cp.filesystem or "unknown contents", label and f"“{label}”") if x)
    now = f"{held}, {human_size(cp.length_lba * ss)}"
    stages: list[Stage] = []
    if type_actions:
        stages.append(
            Stage(
                name="table",
                title=f"Partition {cp.number}'s type in the partition table",
                explanation=f"Only partition {cp.number}'s entry changes: {type_words}.",
                actions=type_actions,
            )
        )
    stages.append(
        Stage(
            name=f"partition-{cp.number}",
            title=f"{partition_title(extent, image.role, ss)}, replaced by backed-up partition "
            f"{partition_number}",
            explanation=_image_note(image),
            actions=(data, *patches),
        )
    )
    warnings: list[Notice] = [
        notice(
            "counterpart-found",
            f"Partition {cp.number} of this disk is backed-up partition {partition_number}: "
            + ", ".join(found.reasons),
            partition=cp.number,
        )
    ]
    if patch_note:
        warnings.append(patch_note)
    fs = (src.filesystem or "").lower()
    if cp.length_lba > src.length_lba and fs in GROW_TOOLS:
        # A larger counterpart: the restored filesystem is grown to fill it, last.
        stages.append(_grow_stage(cp, src.length_lba, image.role, fs, ss))
        warnings.append(
            _grow_notice(cp.number, src.length_lba, cp.length_lba, fs, ss, in_place=True)
        )
    elif cp.length_lba > src.length_lba:
        spare = (cp.length_lba - src.length_lba) * ss
        warnings.append(
            notice(
                "counterpart-larger",
                f"Partition {cp.number} is {human_size(spare)} larger than the backed-up one: "
                "the restored filesystem fills only its first "
                f"{human_size(src.length_lba * ss)}; restore-tui cannot grow "
                f"{src.filesystem or 'this filesystem'}, so the rest stays unused",
                spare=spare,
            )
        )
    erases = (
        f"Everything now in partition {cp.number} ({now}) on {name}: it is replaced by the "
        f"backed-up version of {manifest.created:%d %B %Y}. Every other partition and the "
        "boot code stay exactly as they are"
        + (f"; in the partition table {type_words}" if type_words else "")
    )
    plan = Plan(
        choices=PlanChoices(job="replace-partition", partition=partition_number),
        archive=ArchiveRef(path=archive_path, identity=backup_identity),
        target=TargetRef(
            device=target.device, name=name, identity=target.identity,
            table_fingerprint=target.table_fingerprint,
        ),
        before=table,
        after=after,
        stages=tuple(stages),
        warnings=tuple(warnings),
        erases=erases,
    )
    return check_plan(plan, target.identity.size_bytes)


# -- growing a partition into a larger disk ---------------------------------------------

#: filesystems restore-tui grows, with the tool that does it
GROW_TOOLS = {"ext2": "resize2fs", "ext3": "resize2fs", "ext4": "resize2fs", "ntfs": "ntfsresize"}


@dataclass(frozen=True)
class _Growth:
    partition: Partition  # as grown
    after: PartitionTable
    stage: Stage
    note: Notice


def grow_choice(manifest: ArchiveManifest, word: str) -> int:
    """`--grow N|last|system` as a partition number of the backup."""
    data = manifest.table.data_partitions
    if word.isdigit():
        return int(word)
    if word == "last":
        if not data:
            raise PlanError("the backup has no partition to grow")
        return max(data, key=lambda p: p.start_lba).number
    if word == "system":
        systems = [i.number for i in manifest.partitions if i.role == Role.SYSTEM]
        if not systems:
            raise PlanError("the backup has no system partition; name the partition by number")
        return systems[0]
    raise PlanError(f"--grow takes a partition number, 'last' or 'system', not {word!r}")


def _room_after_all(table: PartitionTable, size_lba: int) -> int:
    """The first sector no partition may use: the disk's end, or the backup GPT."""
    gpt_end = (table.gpt_last_usable_lba or size_lba - 34) + 1
    return gpt_end if table.scheme == "gpt" else size_lba


def _room_after(table: PartitionTable, p: Partition, size_lba: int) -> int:
    """The first sector after ``p`` that it may not grow into."""
    later = [
        q.start_lba for q in table.partitions if q.start_lba > p.start_lba and q.kind != "logical"
    ]
    return min([*later, _room_after_all(table, size_lba)])


def _growth(
    manifest: ArchiveManifest, after: PartitionTable, size_lba: int, number: int
) -> _Growth:
    ss = after.sector_size
    try:
        p = after.partition(number)
    except KeyError:
        raise PlanError(f"the backup has no partition {number} to grow") from None
    fs = (p.filesystem or "").lower()
    if fs not in GROW_TOOLS:
        raise PlanError(
            f"partition {number} holds {p.filesystem or 'no filesystem restore-tui knows'}; "
            "restore-tui grows ext2/3/4 (resize2fs) and NTFS (ntfsresize) only"
        )
    if p.kind != "primary":
        raise PlanError(
            f"partition {number} is a logical partition; restore-tui grows primary and GPT "
            "partitions only"
        )
    align = max(1, MiB // ss)
    stop = (_room_after(after, p, size_lba) // align) * align
    if stop - p.stop_lba < align:
        raise PlanError(
            f"there is no free space after partition {number} on this disk to grow it into"
        )
    grown = p.model_copy(update={"length_lba": stop - p.start_lba})
    fields = after.model_dump()
    fields["partitions"] = [
        grown.model_dump() if q["number"] == number else q for q in fields["partitions"]
    ]
    new_after = PartitionTable.model_validate(fields)
    stored = {i.number: i.role for i in manifest.partitions}
    stage = _grow_stage(grown, p.length_lba, stored.get(number, Role.DATA), fs, ss)
    note = _grow_notice(number, p.length_lba, grown.length_lba, fs, ss)
    return _Growth(grown, new_after, stage, note)


def _grow_stage(grown: Partition, from_lba: int, role: Role, fs: str, ss: int) -> Stage:
    """The last stage: the filesystem of ``grown`` (now ``from_lba`` sectors) fills it."""
    was, now = human_size(from_lba * ss), human_size(grown.length_lba * ss)
    tool = GROW_TOOLS[fs]
    action = GrowFilesystem(
        offset=grown.start_lba * ss, length=grown.length_lba * ss, filesystem=fs,
        from_length=from_lba * ss,
        description=f"Grow partition {grown.number}'s filesystem from {was} to {now} ({tool})",
    )
    return Stage(
        name=f"grow-{grown.number}",
        title=f"{partition_title(grown, role, ss)}: its filesystem grown to fill it",
        explanation=f"{tool} grows the filesystem from {was} to {now}; it works only inside "
        "the partition.",
        actions=(action,),
    )


def _grow_notice(
    number: int, from_lba: int, to_lba: int, fs: str, ss: int, *, in_place: bool = False
) -> Notice:
    """What growing does, and what happens if the computer stops meanwhile — said in the
    preview, before anything is written."""
    was, now = human_size(from_lba * ss), human_size(to_lba * ss)
    tool = GROW_TOOLS[fs]
    if tool == "resize2fs":
        crash = (
            "If the computer stops during this stage, the restore continues: e2fsck checks "
            "the filesystem and resize2fs grows it again"
        )
    else:
        crash = (
            "Windows checks the grown volume once at its next start (ntfsresize asks it to). "
            "ntfsresize cannot continue a resize that was cut off: if the computer stops "
            "during this stage, the restore runs ntfsresize again, and if that fails, start "
            "Windows and let it check the disk (or run `ntfsfix` on the partition)"
        )
    what = (
        f"Partition {number} is larger than the backed-up one: the restored filesystem is "
        f"grown from {was} to {now} to fill it ({tool}), as the last stage."
        if in_place
        else f"Partition {number} is grown from {was} to {now} to use the whole disk, and "
        f"its filesystem with it ({tool}), as the last stage."
    )
    return notice("grow-partition", f"{what} {crash}", partition=number)
