"""Refusals before a restore writes anything: wrong disk, busy disk, stale plan.

Each check returns sentences a person can act on; the commands refuse when any
exist. Disk facts come from ``layout.probe``, the judging from ``restore_tui.matching``.
"""

from __future__ import annotations

from collections.abc import Iterable

from archive.manifest import ArchiveManifest
from layout.plan import Plan
from layout.probe import ProbedDisk
from restore_tui.engine import table_differences
from restore_tui.journal import Checkpoint
from restore_tui.matching import identity_differences, judge


def disk_blockers(
    manifest: ArchiveManifest, disk: ProbedDisk, archive_disks: Iterable[str]
) -> list[str]:
    """Holds the archive, in use, read-only, wrong sector size: matching's blockers.

    Matching's "too small" compares with the whole source disk; whether a plan
    fits is the planner's and :func:`plan_refusals`' business, so it is left out.
    """
    return judge(manifest, disk, set(archive_disks), job="one-partition").blockers


def plan_refusals(plan: Plan, disk: ProbedDisk, journal: Checkpoint | None = None) -> list[str]:
    """Why ``plan`` must not be applied to ``disk`` now (empty: it may).

    The table must still be the one the plan was made against, unless the
    journal shows this same plan already wrote its table stage: then the table
    must be the plan's ``after``.
    """
    out = [
        f"this is not the disk the plan was made for: {d}"
        for d in identity_differences(plan.target.identity, disk.identity)
    ]
    extents = plan.write_extents()
    if extents and extents[-1][1] > disk.identity.size_bytes:
        out.append(
            f"too small: the plan writes up to byte {extents[-1][1]} but the disk holds "
            f"{disk.identity.size_bytes} bytes"
        )
    same_plan = journal is not None and journal.plan_digest == plan.digest()
    if same_plan and journal is not None and "table" in journal.completed_stages:
        problems = table_differences(plan.after, disk.table)
        if problems:
            out.append(
                "its partition table changed since restore-tui wrote it ("
                + "; ".join(problems)
                + "); something else wrote to the disk. Make a new plan"
            )
    elif same_plan and journal is not None and journal.started_writing:
        pass  # the table stage was under way: its table may be half written, by us
    elif disk.identity.size_bytes != plan.target.identity.size_bytes:
        pass  # already refused above for its size; the table's recorded size differs too
    elif disk.table_fingerprint != plan.target.table_fingerprint:
        out.append(
            "the plan is stale: the disk's partition table changed since the plan was made. "
            "Make a new plan (`restore-tui plan`) and look at it again"
        )
    return out


def journal_refusals(journal: Checkpoint, disk: ProbedDisk) -> list[str]:
    """Resume only onto the disk the interrupted restore was writing."""
    return [
        f"this is not the disk the interrupted restore was writing to: {d}"
        for d in identity_differences(journal.target_identity, disk.identity)
    ]
