"""Which present disk is the backed-up one: evidence, blockers, and a deterministic ranking.

Disks are judged by what they are (disk signature or GUID, serial, WWN, model,
size, partition identities), never by /dev name, and every judgement is a
sentence a person can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from archive.manifest import ArchiveManifest
from layout.gaps import MiB, align_up
from layout.models import DiskIdentity, FreeRegion, Frozen, PartitionTable
from layout.notices import Notice, joined, notice
from layout.plan import Job
from layout.probe import ProbedDisk, human_size
from restore_tui.counterpart import judge_counterpart

# Scores: any one strong fact outweighs every supporting fact together.
STRONG_POINTS = 1000
MODEL_POINTS = 20
SIZE_POINTS = 20
PARTITION_ID_POINTS = 10  # per partition GUID or filesystem UUID still present
LABEL_POINTS = 3
ARCHIVE_BLOCKER = "holds the backup you are restoring from — cannot be the target"


class Match(Frozen):
    """One present disk judged against the backup's source disk."""

    device: str
    disk: ProbedDisk
    job: Job = "full-disk"
    score: int
    strong: bool
    reasons: list[str]
    blockers: list[Notice]

    @property
    def usable(self) -> bool:
        return not self.blockers

    @property
    def recommended(self) -> bool:
        """The disk to suggest for this job: the backed-up disk for a whole-disk restore; for
        one partition, any disk with room (the backed-up disk is rarely where it goes)."""
        if self.blockers:
            return False
        if self.job == "replace-partition":
            return True  # its blockers say it holds a backed-up partition
        return self.strong if self.job == "full-disk" else bool(self.disk.free)


def normalized_id(value: str | None) -> str | None:
    """Serial and WWN as comparable text: case, spaces and "0x"/"naa." prefixes ignored."""
    if not value:
        return None
    text = value.strip().lower().replace(" ", "")
    for prefix in ("0x", "naa.", "eui.", "t10."):
        text = text.removeprefix(prefix)
    return text or None


def normalized_text(value: str | None) -> str | None:
    if not value:
        return None
    return " ".join(value.replace("_", " ").split()).lower() or None


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f'"{x}"' for x in items)


def required_bytes(manifest: ArchiveManifest) -> int:
    """The smallest disk a full-disk restore of this backup fits on: the source disk's size."""
    return manifest.source.identity.size_bytes


def _strong_reasons(
    source: DiskIdentity, src_table: PartitionTable, disk: ProbedDisk
) -> tuple[list[str], list[str]]:
    """(strong evidence, contrary facts worth saying)."""
    strong: list[str] = []
    contrary: list[str] = []
    table = disk.table
    if table is not None and table.scheme == src_table.scheme:
        if (
            src_table.scheme == "msdos"
            and src_table.mbr_signature
            and src_table.mbr_signature != "00000000"
            and table.mbr_signature == src_table.mbr_signature
        ):
            strong.append(
                f"same disk signature {src_table.mbr_signature} as the backed-up disk"
            )
        if (
            src_table.scheme == "gpt"
            and src_table.gpt_disk_guid
            and table.gpt_disk_guid == src_table.gpt_disk_guid
        ):
            strong.append(f"same GPT disk GUID {src_table.gpt_disk_guid} as the backed-up disk")
    ident = disk.identity
    src_serial, serial = normalized_id(source.serial), normalized_id(ident.serial)
    if src_serial and serial:
        if src_serial == serial:
            strong.append(f"same serial number {ident.serial} as the backed-up disk")
        elif strong:
            contrary.append(
                f"serial number differs ({ident.serial}, backed up from {source.serial}): "
                "a copy of the disk, or the table was restored onto it before"
            )
    src_wwn, wwn = normalized_id(source.wwn), normalized_id(ident.wwn)
    if src_wwn and wwn and src_wwn == wwn:
        strong.append(f"same WWN {ident.wwn} as the backed-up disk")
    return strong, contrary


def _supporting_reasons(
    source: DiskIdentity, src_table: PartitionTable, disk: ProbedDisk, job: Job
) -> tuple[list[str], int]:
    reasons: list[str] = []
    points = 0
    ident = disk.identity
    src_model, model = normalized_text(source.model), normalized_text(ident.model)
    if src_model and model and src_model == model and ident.bus != "image":
        reasons.append(f"same model ({ident.model})")
        points += MODEL_POINTS
    if ident.size_bytes == source.size_bytes:
        reasons.append(f"same size ({human_size(ident.size_bytes)})")
        points += SIZE_POINTS
    elif ident.size_bytes > source.size_bytes and job == "full-disk":
        # Only a whole-disk restore leaves the extra space over; for one partition
        # what counts is the free space, which the planner checks.
        extra = human_size(ident.size_bytes - source.size_bytes)
        reasons.append(f"larger than the backed-up disk by {extra} (that space stays unallocated)")
    table = disk.table
    if table is None:
        return reasons, points
    present_guids = {p.gpt_guid for p in table.partitions if p.gpt_guid}
    want_guids = [p.gpt_guid for p in src_table.partitions if p.gpt_guid]
    found_guids = [g for g in want_guids if g in present_guids]
    if found_guids:
        reasons.append(
            f"partition GUIDs from the backup found on this disk: {len(found_guids)} of "
            f"{len(want_guids)}"
        )
        points += PARTITION_ID_POINTS * len(found_guids)
    present_uuids = {p.fs_uuid.lower() for p in table.partitions if p.fs_uuid}
    want_uuids = [p.fs_uuid for p in src_table.partitions if p.fs_uuid]
    found_uuids = [u for u in want_uuids if u.lower() in present_uuids]
    if found_uuids:
        reasons.append(
            f"filesystem UUIDs from the backup found on this disk: {len(found_uuids)} of "
            f"{len(want_uuids)}"
        )
        points += PARTITION_ID_POINTS * len(found_uuids)
    present_labels = {p.label for p in table.partitions if p.label}
    found_labels = sorted({p.label for p in src_table.partitions if p.label} & present_labels)
    if found_labels:
        reasons.append(f"partition labels from the backup are here: {_quoted(found_labels)}")
        points += LABEL_POINTS * len(found_labels)
    return reasons, points


def room_in(region: FreeRegion) -> int:
    """Sectors a new partition can use in ``region`` once its start is 1 MiB aligned."""
    align = max(1, MiB // region.sector_size)
    start = align_up(region.start_lba, align)
    return max(0, region.start_lba + region.length_lba - start)


def _room_blockers(manifest: ArchiveManifest, disk: ProbedDisk) -> list[Notice]:
    """One partition needs free space on a disk with a table, room for at least one."""
    if disk.table is None and disk.table_problem:
        return [
            notice(
                "table-damaged",
                f"its partition table is damaged ({disk.table_problem}); a partition cannot "
                "be added to it safely (a whole-disk restore replaces the table)",
            )
        ]
    if not disk.free:
        return [
            notice(
                "no-free-space", "has no free space (every part of it belongs to a partition)"
            )
        ]
    largest = max(room_in(r) * r.sector_size for r in disk.free)
    sizes = [p.length_lba * manifest.table.sector_size for p in manifest.table.data_partitions]
    if sizes and min(sizes) > largest:
        return [
            notice(
                "no-room",
                f"its largest free space ({human_size(largest)}) is too small for any "
                f"partition in this backup (the smallest needs {human_size(min(sizes))})",
                largest=largest,
                smallest=min(sizes),
            )
        ]
    return []


def _blockers(
    manifest: ArchiveManifest,
    disk: ProbedDisk,
    archive_disks: set[str],
    job: Job,
    in_place: Sequence[int] = (),
) -> list[Notice]:
    """Everything that stops ``disk`` from being the target of ``job``: the one judge."""
    blockers: list[Notice] = []
    if disk.device in archive_disks:
        blockers.append(notice("holds-backup", ARCHIVE_BLOCKER))
    need = required_bytes(manifest)
    have = disk.identity.size_bytes
    if job == "full-disk" and have < need:
        blockers.append(
            notice(
                "too-small",
                f"too small: {human_size(need - have)} smaller than the backed-up disk "
                f"({human_size(have)} here, {human_size(need)} needed)",
                have=have,
                need=need,
            )
        )
    blockers.extend(
        notice(
            "in-use",
            f"in use: {note} — close what uses it (or unmount it) and try again",
            what=note,
        )
        for note in disk.in_use
    )
    if disk.read_only:
        blockers.append(
            notice(
                "read-only",
                "read-only: nothing can be written to it (check its write-protect switch)",
            )
        )
    want_ss = manifest.table.sector_size
    if disk.identity.logical_sector_size != want_ss:
        blockers.append(
            notice(
                "sector-size",
                f"uses {disk.identity.logical_sector_size}-byte sectors, but the backup was "
                f"made from a disk with {want_ss}-byte sectors",
                have=disk.identity.logical_sector_size,
                need=want_ss,
            )
        )
    if job == "one-partition" and in_place:
        blockers.append(
            notice(
                "backup-still-there",
                "its partition table is gone but the backed-up partitions are still on it: "
                "restore the whole disk instead (that puts the table back as it was)",
            )
        )
    elif job == "one-partition":
        blockers.extend(_room_blockers(manifest, disk))
    elif job == "replace-partition":
        blockers.extend(_counterpart_blockers(manifest, disk))
    return blockers


def _counterpart_blockers(manifest: ArchiveManifest, disk: ProbedDisk) -> list[Notice]:
    """A disk to replace a partition on must hold one of the backed-up partitions."""
    if disk.table is None:
        return [
            notice(
                "no-partition-to-replace",
                "it has no partition table, so no partition to replace: restore the whole "
                "disk, or the partition into free space, instead",
            )
        ]
    table = disk.table
    if any(
        judge_counterpart(src, p).strong
        for src in manifest.table.data_partitions
        for p in table.data_partitions
    ):
        return []
    return [
        notice(
            "no-counterpart",
            "none of the backed-up partitions is on it (no partition with their filesystem "
            "UUID, partition GUID, or place, size and filesystem): restore into free space "
            "instead",
        )
    ]


def _in_place_reason(disk: ProbedDisk, in_place: Sequence[int]) -> str:
    """Why filesystems found at the backed-up partitions' places are strong evidence."""
    numbers = sorted(in_place)
    if len(numbers) == 1:
        said = f"backed-up partition {numbers[0]} is still on this disk at its old place"
    else:
        listed = ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"
        said = f"backed-up partitions {listed} are still on this disk at their old places"
    gone = "; only the partition table is gone" if disk.table is None else ""
    return f"{said} (same filesystem UUID){gone}"


def judge(
    manifest: ArchiveManifest,
    disk: ProbedDisk,
    archive_disks: set[str],
    job: Job = "full-disk",
    in_place: Sequence[int] = (),
) -> Match:
    """One disk's evidence and blockers for ``job`` (size matters only for a full disk).

    ``in_place``: backed-up partitions whose filesystem (same UUID) was found on the disk
    at exactly its backed-up offset — what a disk whose table was wiped still shows.
    """
    source = manifest.source.identity
    strong, contrary = _strong_reasons(source, manifest.table, disk)
    if in_place:
        strong.append(_in_place_reason(disk, in_place))
    supporting, points = _supporting_reasons(source, manifest.table, disk, job)
    reasons = [*strong, *supporting, *contrary]
    if not reasons:
        reasons.append("nothing links this disk to the backup")
    elif not strong:
        reasons.append("no strong evidence that this is the backed-up disk")
    return Match(
        device=disk.device,
        disk=disk,
        job=job,
        score=STRONG_POINTS * len(strong) + points,
        strong=bool(strong),
        reasons=reasons,
        blockers=_blockers(manifest, disk, archive_disks, job, in_place),
    )


def _identity_key(disk: ProbedDisk) -> tuple[str, ...]:
    """A tie-break from what the disk is, so /dev names and enumeration order do not matter."""
    ident = disk.identity
    return (
        normalized_id(ident.serial) or "",
        normalized_id(ident.wwn) or "",
        normalized_text(ident.model) or "",
        f"{ident.size_bytes:020d}",
        disk.table_fingerprint,
        disk.backing_file or "",
    )


def rank_key(match: Match) -> tuple[object, ...]:
    # A whole disk goes back onto the backed-up disk: strong evidence first, then disks
    # that can be targets before blocked ones. One partition goes wherever there is
    # room, so usable disks come first there. Then more evidence; then identity. The
    # /dev name only separates disks identical in every other respect.
    usable_first = match.job in ("one-partition", "replace-partition")
    return (
        bool(match.blockers) if usable_first else not match.strong,
        not match.strong if usable_first else bool(match.blockers),
        -match.score,
        _identity_key(match.disk),
        match.device,
    )


def match_disks(
    manifest: ArchiveManifest,
    disks: Sequence[ProbedDisk],
    archive_disk: str | Iterable[str] | None,
    job: Job = "full-disk",
    in_place: Mapping[str, Sequence[int]] | None = None,
) -> list[Match]:
    """Every disk judged against the backup's source disk, best first.

    ``archive_disk`` is the disk holding the archive (or every disk it depends on,
    e.g. a loop device and the disk under its backing file): never a target.
    """
    if archive_disk is None:
        archive_disks: set[str] = set()
    elif isinstance(archive_disk, str):
        archive_disks = {archive_disk}
    else:
        archive_disks = set(archive_disk)
    found = in_place or {}
    matches = [judge(manifest, d, archive_disks, job, found.get(d.device, ())) for d in disks]
    return sorted(matches, key=rank_key)


def choose_target(matches: Sequence[Match]) -> Match | None:
    """The disk to restore onto without asking: the one strong, unblocked match, else None."""
    candidates = [m for m in matches if m.strong and not m.blockers]
    return candidates[0] if len(candidates) == 1 else None


def choice_explanation(matches: Sequence[Match]) -> str:
    """Why ``choose_target`` picked what it picked, or why it picked nothing."""
    ranked = sorted(matches, key=rank_key)
    chosen = choose_target(ranked)
    if chosen is not None:
        return (
            f"Chose {chosen.disk.headline} ({chosen.device}): {'; '.join(chosen.reasons)}."
        )
    if not ranked:
        return "No disks were found. Attach the disk to restore onto and try again."
    candidates = [m for m in ranked if m.strong and not m.blockers]
    lines: list[str] = []
    if len(candidates) > 1:
        lines.append(
            "More than one disk carries the backed-up disk's identity; choose one with "
            "--target:"
        )
        lines.extend(f"  {m.disk.headline} ({m.device})" for m in candidates)
        return "\n".join(lines)
    strong = [m for m in ranked if m.strong]
    if strong:
        lines.append("The backed-up disk is attached but cannot be restored onto now:")
        for m in strong:
            lines.append(f"  {m.disk.headline} ({m.device}): {joined(m.blockers)}")
    else:
        lines.append(
            "None of the attached disks is clearly the backed-up disk, so none was chosen. "
            "Choose the target yourself with --target. Disks considered:"
        )
        for m in ranked:
            why = joined(m.blockers) if m.blockers else "; ".join(m.reasons)
            lines.append(f"  {m.disk.headline} ({m.device}): {why}")
    return "\n".join(lines)


def identity_differences(expected: DiskIdentity, actual: DiskIdentity) -> list[str]:
    """Where the disk present now differs from the one a plan or journal names.

    A fact unknown on either side (no udev in a rescue system) is not held
    against the disk; a fact known on both sides must agree.
    """
    out: list[str] = []
    for field, what in (("serial", "serial number"), ("wwn", "WWN")):
        want, have = normalized_id(getattr(expected, field)), normalized_id(getattr(actual, field))
        if want and have and want != have:
            out.append(
                f"its {what} is {getattr(actual, field)}, the plan is for "
                f"{getattr(expected, field)}"
            )
    want_model = normalized_text(expected.model)
    have_model = normalized_text(actual.model)
    if want_model and have_model and want_model != have_model:
        out.append(f"it is a {actual.model}, the plan is for a {expected.model}")
    if expected.size_bytes != actual.size_bytes:
        out.append(
            f"it holds {human_size(actual.size_bytes)} ({actual.size_bytes} bytes), the plan is "
            f"for {human_size(expected.size_bytes)} ({expected.size_bytes} bytes)"
        )
    if expected.logical_sector_size != actual.logical_sector_size:
        out.append(
            f"it uses {actual.logical_sector_size}-byte sectors, the plan "
            f"{expected.logical_sector_size}-byte sectors"
        )
    return out
