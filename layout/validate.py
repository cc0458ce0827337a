"""Checks a restore plan before any device is opened: inside the disk, no overlaps, GPT areas kept.

Every rule is a plain-language problem; ``check_plan`` turns any problem into a
:class:`PlanError`, so a plan that reaches the engine has passed all of them.
"""

from __future__ import annotations

import re

from layout.gaps import align_up
from layout.models import Partition, PartitionTable
from layout.plan import Action, Plan


class PlanError(ValueError):
    """A restore that cannot be planned; the message says why in plain words."""


_PARTITION_STAGE = re.compile(r"^partition-(\d+)$")


def _overlaps(a_start: int, a_stop: int, b_start: int, b_stop: int) -> bool:
    return a_start < b_stop and b_start < a_stop


def _inside(a: Action, start: int, stop: int) -> bool:
    return start <= a.offset and a.stop <= stop


def _span(p: Partition, sector_size: int) -> tuple[int, int]:
    return p.start_lba * sector_size, p.stop_lba * sector_size


def _where(stage_name: str, index: int, action: Action) -> str:
    return (
        f"step '{stage_name}' action {index + 1} ({action.kind}, bytes "
        f"{action.offset}-{action.stop - 1})"
    )


def gpt_structure_sectors(table: PartitionTable) -> int:
    """Sectors of one GPT entry array for this table's entry count and size."""
    array = (table.gpt_entry_count or 128) * (table.gpt_entry_size or 128)
    return align_up(array, table.sector_size) // table.sector_size


def validate_plan(plan: Plan, disk_size_bytes: int) -> list[str]:
    """Everything wrong with ``plan`` for a disk of ``disk_size_bytes``; empty when sound."""
    problems: list[str] = []
    after = plan.after
    ss = after.sector_size
    disk_stop = (disk_size_bytes // ss) * ss
    if plan.target.identity.logical_sector_size != ss:
        problems.append(
            f"the plan uses {ss}-byte sectors but the target disk has "
            f"{plan.target.identity.logical_sector_size}-byte sectors"
        )
    if after.disk_size_lba * ss > disk_stop:
        problems.append(
            f"the new partition table describes {after.disk_size_lba} sectors but the disk has "
            f"only {disk_stop // ss}"
        )

    indexed: list[tuple[int, int, str, Action]] = [
        (si, ai, stage.name, action)
        for si, stage in enumerate(plan.stages)
        for ai, action in enumerate(stage.actions)
    ]
    names = [stage.name for stage in plan.stages]
    if len(set(names)) != len(names):
        problems.append("two steps of the plan share a name")

    for _si, ai, name, action in indexed:
        if action.stop > disk_stop:
            problems.append(
                f"{_where(name, ai, action)} runs past the end of the disk (byte {disk_stop})"
            )

    # A write-bytes action wholly inside an earlier restore-area of the same step
    # is a deliberate patch (the boot sector's hidden-sectors field): it must run
    # after the data it corrects, so only that order is allowed.
    patches: set[tuple[int, int]] = set()
    for i, (si, ai, name, action) in enumerate(indexed):
        for sj, aj, other_name, other in indexed[i + 1 :]:
            if not _overlaps(action.offset, action.stop, other.offset, other.stop):
                continue
            if (
                sj == si
                and action.kind == "restore-area"
                and other.kind == "write-bytes"
                and _inside(other, action.offset, action.stop)
            ):
                patches.add((sj, aj))
                continue
            # Growing a filesystem works on what was restored into its partition before.
            if other.kind == "grow-filesystem" and _inside(action, other.offset, other.stop):
                continue
            problems.append(
                f"{_where(name, ai, action)} overlaps {_where(other_name, aj, other)}"
            )

    data_parts = after.data_partitions
    first_partition = min((p.start_lba for p in after.partitions), default=None)
    gpt_primary_stop = 0
    gpt_backup_start = disk_stop
    if after.scheme == "gpt":
        entry_sectors = gpt_structure_sectors(after)
        gpt_primary_stop = (2 + entry_sectors) * ss
        gpt_backup_start = disk_stop - (1 + entry_sectors) * ss
        last_usable = after.gpt_last_usable_lba
        if last_usable is not None and (last_usable + 1) * ss > gpt_backup_start:
            problems.append(
                f"the GPT's last usable sector {last_usable} lies in the backup GPT area at the "
                "disk's end"
            )

    for si, ai, name, action in indexed:
        where = _where(name, ai, action)
        if (si, ai) in patches:
            continue
        if after.scheme == "gpt":
            touches_backup = _overlaps(action.offset, action.stop, gpt_backup_start, disk_stop)
            if touches_backup and not (
                action.kind == "write-bytes" and _inside(action, gpt_backup_start, disk_stop)
            ):
                problems.append(f"{where} touches the backup GPT area at the disk's end")
            touches_primary = _overlaps(action.offset, action.stop, 0, gpt_primary_stop)
            if touches_primary and not (
                action.kind == "write-bytes" and _inside(action, 0, gpt_primary_stop)
            ):
                problems.append(f"{where} touches the primary GPT area at the disk's start")
        if action.kind == "restore-area":
            if action.area == "track0":
                lower = max(ss, gpt_primary_stop)
                upper = first_partition * ss if first_partition is not None else disk_stop
                if not _inside(action, lower, upper):
                    problems.append(
                        f"{where} restores track 0 outside the gap before the first partition"
                    )
                continue
            match = _PARTITION_STAGE.match(name)
            holders = [p for p in data_parts if _inside(action, *_span(p, ss))]
            if not holders:
                problems.append(f"{where} restores partition data outside every partition")
            elif match and all(p.number != int(match.group(1)) for p in holders):
                problems.append(f"{where} lies outside partition {match.group(1)}")
            elif plan.job == "full-disk" and all(p.number != action.area for p in holders):
                problems.append(f"{where} restores partition {action.area} into another one")
        elif action.kind == "grow-filesystem":
            if not any((action.offset, action.stop) == _span(p, ss) for p in data_parts):
                problems.append(f"{where} grows a filesystem that is not exactly one partition")
        else:
            for p in data_parts:
                if _overlaps(action.offset, action.stop, *_span(p, ss)):
                    problems.append(
                        f"{where} writes table data inside partition {p.number}"
                    )

    if plan.job == "replace-partition" and plan.before is not None:
        # Every partition but the one replaced must stay exactly as it is.
        replaced = {int(m.group(1)) for s in plan.stages if (m := _PARTITION_STAGE.match(s.name))}
        for _si, ai, name, action in indexed:
            for p in plan.before.data_partitions:
                if p.number in replaced:
                    continue
                if _overlaps(action.offset, action.stop, *_span(p, plan.before.sector_size)):
                    problems.append(
                        f"{_where(name, ai, action)} would write into partition {p.number}, "
                        "which must stay untouched"
                    )
    if plan.job == "one-partition" and plan.before is not None:
        # Every partition already on the disk must stay exactly as it is.
        for _si, ai, name, action in indexed:
            for p in plan.before.data_partitions:
                if _overlaps(action.offset, action.stop, *_span(p, plan.before.sector_size)):
                    problems.append(
                        f"{_where(name, ai, action)} would write into partition {p.number}, "
                        "which must stay untouched"
                    )
        changed = [p.number for p in plan.before.partitions if p not in after.partitions]
        if changed:
            problems.append(
                "the new table changes or drops existing partitions "
                + ", ".join(str(n) for n in changed)
            )
    return problems


def check_plan(plan: Plan, disk_size_bytes: int) -> Plan:
    """``plan`` itself when it is sound; otherwise :class:`PlanError` naming every problem."""
    problems = validate_plan(plan, disk_size_bytes)
    if problems:
        raise PlanError("the restore plan is not safe: " + "; ".join(problems))
    return plan
