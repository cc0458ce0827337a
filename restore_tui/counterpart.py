"""Which partition of a disk is the counterpart of a backed-up partition, and why.

Replacing one partition with its backed-up version needs the partition on the target
that *is* that partition: found by what it is (its filesystem UUID or NTFS serial, its
GPT partition GUID, its place and size, its label, its type), never by its number or
a /dev name, and said in words. A counterpart needs strong evidence: a filesystem UUID
or partition GUID of the backup, or the same place and size with the same filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass

from layout.models import Partition, PartitionTable
from layout.units import human_size

STRONG = 100  # any one strong fact outweighs the weak ones together
WEAK = 1


@dataclass(frozen=True)
class Counterpart:
    """A partition of the target judged as the counterpart of a backed-up one."""

    partition: Partition
    score: int
    strong: bool
    reasons: tuple[str, ...]


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and str(a).lower() == str(b).lower()


def judge_counterpart(src: Partition, candidate: Partition) -> Counterpart:
    """The evidence that ``candidate`` (on the target) is backed-up partition ``src``."""
    strong: list[str] = []
    weak: list[str] = []
    if _same(src.fs_uuid, candidate.fs_uuid):
        what = "NTFS serial number" if (src.filesystem or "") == "ntfs" else "filesystem UUID"
        strong.append(f"the same {what} ({candidate.fs_uuid})")
    if _same(src.gpt_guid, candidate.gpt_guid):
        strong.append(f"the same partition GUID ({candidate.gpt_guid})")
    same_place = (src.start_lba, src.length_lba) == (candidate.start_lba, candidate.length_lba)
    same_fs = _same(src.filesystem, candidate.filesystem)
    if same_place and same_fs:
        strong.append(f"at the same place with the same size and filesystem ({src.filesystem})")
    elif same_place:
        weak.append("at the same place with the same size")
    elif src.start_lba == candidate.start_lba:
        weak.append("starts at the same place")
    if _same(src.label, candidate.label):
        weak.append(f"the same label “{candidate.label}”")
    same_mbr_type = src.mbr_type is not None and src.mbr_type == candidate.mbr_type
    if same_mbr_type or _same(src.gpt_type, candidate.gpt_type):
        weak.append("the same partition type")
    return Counterpart(
        partition=candidate,
        score=STRONG * len(strong) + WEAK * len(weak),
        strong=bool(strong),
        reasons=tuple(strong + weak),
    )


class CounterpartError(Exception):
    """No partition (or more than one) of the target is clearly the backed-up one."""


def find_counterpart(src: Partition, table: PartitionTable | None, disk_name: str) -> Counterpart:
    """The one partition of ``table`` that is backed-up partition ``src``, with reasons.

    Raises CounterpartError, in words, when none has strong evidence or two are equal.
    """
    if table is None:
        raise CounterpartError(
            f"{disk_name} has no partition table, so it has no partition to replace; "
            "restore the whole disk, or the partition into free space, instead"
        )
    judged = sorted(
        (judge_counterpart(src, p) for p in table.data_partitions),
        key=lambda c: (-c.score, c.partition.number),
    )
    strong = [c for c in judged if c.strong]
    if not strong:
        nearest = judged[0] if judged and judged[0].reasons else None
        near = (
            f" (the nearest, partition {nearest.partition.number}, only has "
            f"{', '.join(nearest.reasons)})"
            if nearest is not None
            else ""
        )
        raise CounterpartError(
            f"no partition of {disk_name} is clearly backed-up partition {src.number}: none "
            f"has its filesystem UUID or partition GUID, or its place, size and filesystem"
            f"{near}. Restore it into free space instead, or choose the disk it came from"
        )
    if len(strong) > 1 and strong[0].score == strong[1].score:
        numbers = " and ".join(str(c.partition.number) for c in strong[:2])
        raise CounterpartError(
            f"partitions {numbers} of {disk_name} are equally like backed-up partition "
            f"{src.number}; restore-tui will not guess which one to replace"
        )
    return strong[0]


def size_words(src: Partition, found: Partition, sector_size: int) -> str | None:
    """Why ``found`` cannot hold ``src`` (None: it can)."""
    if found.length_lba >= src.length_lba:
        return None
    short = (src.length_lba - found.length_lba) * sector_size
    return (
        f"partition {found.number} on the target ({human_size(found.length_lba * sector_size)}) "
        f"is {human_size(short)} smaller than backed-up partition {src.number} "
        f"({human_size(src.length_lba * sector_size)}), so it cannot hold it"
    )
