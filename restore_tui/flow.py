"""The one restore flow: from "a backup was chosen" to "the engine finished or stopped".

The command line, the wizard and the demo all come through here: find the disks that
hold the backup, judge candidates for a job, plan, check every refusal against a freshly
probed disk, decide what a person types to confirm, find the disk of an interrupted
restore by what it is, and build the engine. Front-ends collect choices and word results.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from archive.base import Archive
from layout.fsinfo import probe_filesystems
from layout.models import DiskIdentity
from layout.notices import Notice, joined, notice
from layout.plan import Plan, PlanChoices, RestoreArea, canonical_json
from layout.probe import ImageProbe, Probe, ProbedDisk, ProbeError, archive_disks
from layout.validate import PlanError
from restore_tui.coverage import unchecked_notices
from restore_tui.engine import (
    ProgressCallback,
    RestoreEngine,
    table_differences,
    table_state_refusals,
)
from restore_tui.errors import UserError
from restore_tui.journal import (
    Checkpoint,
    Journal,
    JournalError,
    candidate_paths,
    describe_disk,
    find_unfinished,
)
from restore_tui.matching import Job, Match, identity_differences, judge, match_disks
from restore_tui.planner import (
    grow_choice,
    plan_full_disk,
    plan_one_partition,
    plan_replace_partition,
)

SERIAL_DIGITS = 4
# Blockers about free space concern planning a one-partition restore; once its table
# stage ran, the new partition fills that space and resuming must not be refused for it.
# Likewise a half-replaced partition may no longer look like its counterpart.
ROOM_CODES = frozenset(
    {"table-damaged", "no-free-space", "no-room", "no-counterpart", "no-partition-to-replace"}
)


#: ``--target serial:S``: the disk by its serial number instead of its /dev name
SERIAL_PREFIX = "serial:"


class Refused(UserError):
    """The target must not be written now; ``reasons`` say why, as typed notices."""

    def __init__(self, disk: ProbedDisk, reasons: Sequence[Notice]) -> None:
        self.disk = disk
        self.reasons = tuple(reasons)
        super().__init__(
            f"{disk.headline} ({disk.device}) cannot be the target now, so nothing is "
            f"written to it: {joined(self.reasons)}"
        )


class PlanMismatch(UserError):
    """A saved plan that is not what planning gives now; nothing was written."""


class TargetNotFound(UserError):
    """The disk of an interrupted restore is not attached, or more than one disk could be it."""


@dataclass(frozen=True)
class Confirmation:
    """What a person types before anything is written, and how to ask for it."""

    word: str
    kind: Literal["serial", "word"]

    def matches(self, typed: str) -> bool:
        return typed.strip().upper() == self.word.upper()


def confirmation_for(identity: DiskIdentity, job: Job) -> Confirmation:
    """The end of the disk's serial number (on its label, so the right disk is in hand),
    or a word that says what happens when the disk has no serial to read."""
    serial = (identity.serial or "").strip()
    if len(serial) >= SERIAL_DIGITS:
        return Confirmation(serial[-SERIAL_DIGITS:], "serial")
    # Adding a partition into free space erases nothing; the other jobs erase.
    return Confirmation("WRITE" if job == "one-partition" else "ERASE", "word")


@dataclass(frozen=True)
class Located:
    """The disk an interrupted restore was writing, found again by what it is."""

    disk: ProbedDisk
    #: set when the disk's /dev name changed since: the words for it
    renamed: Notice | None = None


def first_difference(saved: Any, fresh: Any, where: str = "") -> str | None:
    """Where two JSON values first differ, as "path: the file has X, planning now gives Y"."""
    if isinstance(saved, dict) and isinstance(fresh, dict):
        for key in sorted(set(saved) | set(fresh)):
            found = first_difference(
                saved.get(key), fresh.get(key), f"{where}.{key}" if where else key
            )
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(fresh, list):
        for i in range(max(len(saved), len(fresh))):
            a = saved[i] if i < len(saved) else None
            b = fresh[i] if i < len(fresh) else None
            found = first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if saved != fresh:
        return f"{where}: the file has {_short(saved)}, planning now gives {_short(fresh)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "…"


def load_plan_file(path: str) -> Plan:
    """A saved plan, or a UserError saying why it cannot be one (nothing is written)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the plan {path}: {exc.strerror}") from exc
    again = "make it again with `restore-tui plan ... --out PLAN.json`"
    try:
        data = json.loads(text)
    except ValueError:
        raise UserError(
            f"{path} is not a complete restore-tui plan (cut short or damaged); {again}"
        ) from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version != Plan.model_fields["schema_version"].default:
        raise UserError(
            f"{path} was made by another version of restore-tui (plan version {version}); {again}"
        )
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise UserError(
            f"{path} is not a restore-tui plan or it is damaged ({exc.error_count()} problems); "
            f"{again}"
        ) from exc


class Flow:
    """One backup, the disks of this machine, and every decision between them."""

    def __init__(self, archive: Archive, probe: Probe) -> None:
        self.archive = archive
        self.probe = probe
        # The last in_place answer, for the same disk snapshot: planning and the
        # refusals before the preview judge one snapshot twice (blkid runs for each).
        self._in_place_last: tuple[ProbedDisk, frozenset[str], tuple[int, ...]] | None = None

    # -- disks -------------------------------------------------------------------------

    def disks(self) -> list[ProbedDisk]:
        """Every disk as it is now (probed again on each call)."""
        try:
            return self.probe.disks()
        except ProbeError as exc:
            raise UserError(str(exc)) from exc

    def disk(self, device: str) -> ProbedDisk:
        """One disk as it is now: a /dev path, a disk image file, or ``serial:S`` — the
        attached disk with serial number S (for scripts: /dev names change at each boot)."""
        try:
            if device.startswith(SERIAL_PREFIX):
                return self._by_serial(device.removeprefix(SERIAL_PREFIX))
            if os.path.isfile(device) and not isinstance(self.probe, ImageProbe):
                return ImageProbe([device]).disk(device)
            return self.probe.disk(device)
        except ProbeError as exc:
            raise UserError(str(exc)) from exc

    def _by_serial(self, serial: str) -> ProbedDisk:
        disks = self.probe.disks()
        found = [d for d in disks if d.identity.serial == serial]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(d.device for d in found)
            raise UserError(f"more than one attached disk has serial number {serial} ({names})")
        known = ", ".join(f"{d.identity.serial} ({d.device})" for d in disks if d.identity.serial)
        raise UserError(
            f"no attached disk has serial number {serial}; "
            + (f"the serial numbers attached now are {known}" if known else "no attached disk "
               "reports a serial number")
            + ". Check the number (`restore-tui disks` lists them) and that the disk is plugged in."
        )

    def holders(self, disks: Sequence[ProbedDisk] = ()) -> set[str]:
        """Every disk the backup lives on: never a target. The backup file itself offered
        as a disk image, and a loop device over it, hold it too."""
        try:
            found = set(archive_disks(self.probe, str(self.archive.path)))
        except ProbeError:
            found = set()
        backup = os.path.realpath(self.archive.path)
        for d in disks:
            if backup in (os.path.realpath(d.device), os.path.realpath(d.backing_file or "")):
                found.add(d.device)
        return found

    def judge(self, disk: ProbedDisk, job: Job) -> Match:
        holders = self.holders([disk])
        return judge(self.archive.manifest, disk, holders, job, self.in_place(disk, holders))

    def grow_offer(self, disk: ProbedDisk, plan: Plan) -> int | None:
        """The partition a whole-disk restore onto a larger ``disk`` can grow into the
        extra space (the last one), when planning that works; None: nothing to offer."""
        if plan.job != "full-disk":
            return None
        if plan.choices.grow is not None:
            return plan.choices.grow
        if not any(w.code == "target-larger" for w in plan.warnings):
            return None
        try:
            number = grow_choice(self.archive.manifest, "last")
            self.plan(disk, plan.choices.model_copy(update={"grow": number}))
        except (PlanError, UserError):
            return None
        return number

    def candidates(self, job: Job) -> list[Match]:
        """Every disk judged for ``job``, best first."""
        disks = self.disks()
        holders = self.holders(disks)
        found = {d.device: self.in_place(d, holders) for d in disks}
        return match_disks(self.archive.manifest, disks, holders, job, found)

    def in_place(self, disk: ProbedDisk, holders: set[str]) -> tuple[int, ...]:
        """Backed-up partitions whose filesystem is still at its old offset on a disk whose
        partition table is gone or damaged (read-only, by signature and UUID).

        Asked again about the same snapshot of a disk (the same object: a new probe
        gives a new one), the first answer stands, as every other fact of a snapshot.
        """
        if disk.table is not None or disk.device in holders:
            return ()
        last = self._in_place_last
        if last is not None and last[0] is disk and last[1] == holders:
            return last[2]
        found = self._filesystems_in_place(disk)
        self._in_place_last = (disk, frozenset(holders), found)
        return found

    def _filesystems_in_place(self, disk: ProbedDisk) -> tuple[int, ...]:
        table = self.archive.manifest.table
        ss = table.sector_size
        backed_up = [
            p
            for p in table.data_partitions
            if p.fs_uuid and p.stop_lba * ss <= disk.identity.size_bytes
        ]
        there = probe_filesystems(
            disk.device, [(p.start_lba * ss, p.length_lba * ss) for p in backed_up]
        )
        return tuple(
            p.number
            for p, info in zip(backed_up, there, strict=True)
            if info.uuid and p.fs_uuid and info.uuid.lower() == p.fs_uuid.lower()
        )

    # -- plans -------------------------------------------------------------------------

    def plan(self, disk: ProbedDisk, choices: PlanChoices) -> Plan:
        """The plan for ``choices`` on ``disk`` as it is now; UserError when it cannot be."""
        refused = self.judge(disk, choices.job).blockers
        if refused:
            raise Refused(disk, refused)
        if choices.id_seed is None:
            # New identifiers come from this seed, recorded in the plan: planning again
            # (apply) gives the same ones.
            choices = choices.model_copy(update={"id_seed": secrets.randbits(63)})
        plan = self._planned(disk, choices)
        # Said in the plan itself, so the preview and `plan` show it before anything is written.
        unchecked = unchecked_notices(self.archive, choices.partition)
        if not unchecked:
            return plan
        return plan.model_copy(update={"warnings": (*plan.warnings, *unchecked)})

    def _planned(self, disk: ProbedDisk, choices: PlanChoices) -> Plan:
        others = self._others(disk)
        path = str(Path(self.archive.path).absolute())
        try:
            if choices.job == "full-disk":
                if choices.partition is not None or choices.region is not None:
                    raise UserError(
                        "--partition and --region do not go with a whole-disk restore"
                    )
                return plan_full_disk(
                    self.archive.manifest,
                    self.archive.identity(),
                    path,
                    disk,
                    new_ids=choices.new_ids,
                    other_disks=others,
                    id_seed=choices.id_seed,
                    grow=choices.grow,
                )
            if choices.grow is not None:
                raise UserError("--grow goes with a whole-disk restore only")
            if choices.partition is None:
                raise UserError("a one-partition restore needs the partition's number")
            if choices.job == "replace-partition":
                if choices.region is not None:
                    raise UserError("--region does not go with --replace: the partition's "
                                    "place is its counterpart's")  # fmt: skip
                return plan_replace_partition(
                    self.archive.manifest, self.archive.identity(), path, disk,
                    choices.partition,
                )  # fmt: skip
            return plan_one_partition(
                self.archive.manifest,
                self.archive.identity(),
                path,
                disk,
                choices.partition,
                choices.region,
                new_ids=choices.new_ids,
                other_disks=others,
                id_seed=choices.id_seed,
            )
        except PlanError as exc:
            raise UserError(f"cannot plan this restore: {exc}") from exc

    def _others(self, disk: ProbedDisk) -> list[ProbedDisk]:
        try:
            disks = self.probe.disks()
        except ProbeError:
            return []
        here = os.path.realpath(disk.device)
        return [d for d in disks if os.path.realpath(d.device) != here]

    def rederive(self, saved: Plan, disk: ProbedDisk) -> Plan:
        """``saved`` when planning its choices again on ``disk`` now gives exactly it.

        A saved plan is a record for review, not instructions: what runs is always
        what planning gives now, and only when that is what the person reviewed.
        """
        moved = identity_differences(saved.target.identity, disk.identity)
        if moved:
            raise PlanMismatch(
                f"{disk.headline} ({disk.device}) is not the disk the plan was made for: "
                + "; ".join(moved)
                + ". Nothing was written; make a new plan for the disk attached now"
            )
        if saved.archive.identity != self.archive.identity():
            raise PlanMismatch(
                f"the plan was made from another backup than {self.archive.path} (its "
                "contents differ); use the backup the plan names, or make a new plan"
            )
        if disk.table_fingerprint != saved.target.table_fingerprint:
            raise PlanMismatch(
                f"the partition table of {disk.headline} ({disk.device}) changed since the plan "
                "was made; nothing was written. Make a new plan and look at it again"
            )
        fresh = self.plan(disk, saved.choices)
        # Another copy of the same backup may lie elsewhere: its place is not the plan.
        fresh = fresh.model_copy(update={"archive": saved.archive})
        if canonical_json(fresh) != canonical_json(saved):
            where = first_difference(saved.model_dump(mode="json"), fresh.model_dump(mode="json"))
            raise PlanMismatch(
                "the plan file is not what planning its choices gives now, so it was edited "
                f"or the disks changed ({where}); nothing was written. Make a new plan"
            )
        return saved

    # -- refusals ----------------------------------------------------------------------

    def refusals(
        self, plan: Plan, disk: ProbedDisk, journal: Checkpoint | None = None
    ) -> list[Notice]:
        """Why ``plan`` must not be written to ``disk`` now (empty: it may).

        ``journal``: the record of this plan's interrupted run, when resuming.
        """
        resuming = journal is not None and journal.plan_digest == plan.digest()
        passed = ROOM_CODES if resuming and journal and journal.started_writing else frozenset()
        out = [b for b in self.judge(disk, plan.job).blockers if b.code not in passed]
        # One sentence for all the facts that differ, not one per fact.
        differ = identity_differences(plan.target.identity, disk.identity)
        if journal is not None:
            differ += [
                d
                for d in identity_differences(journal.target_identity, disk.identity)
                if d not in differ
            ]
        if differ:
            whose = "the interrupted restore was writing to" if journal else "the plan was made for"
            out.append(
                notice(
                    "other-disk",
                    f"this is not the disk {whose}: {'; '.join(differ)}",
                    detail="; ".join(differ),
                )
            )
        extents = plan.write_extents()
        if extents and extents[-1][1] > disk.identity.size_bytes:
            out.append(
                notice(
                    "plan-too-big",
                    f"too small: the plan writes up to byte {extents[-1][1]} but the disk holds "
                    f"{disk.identity.size_bytes} bytes",
                )
            )
        if disk.identity.size_bytes == plan.target.identity.size_bytes:
            out += table_state_refusals(
                plan, disk.table, disk.table_fingerprint, journal if resuming else None
            )
        return out

    # -- resuming ----------------------------------------------------------------------

    def unfinished(self, search_dirs: Sequence[Path] | None = None) -> Journal | None:
        """The newest unfinished restore of this backup, by content: recorded beside this
        copy of it, in the state folder, or in ``search_dirs`` (default: the usual places)."""
        identity = self.archive.identity()
        places = [*candidate_paths(self.archive.path)]
        places += [s.path for s in find_unfinished([], search_dirs)]
        found: list[Journal] = []
        for path in dict.fromkeys(places):
            try:
                journal = Journal.load(path)
            except JournalError:
                continue
            record = journal.record
            if not record.finished and record.plan.archive.identity == identity:
                found.append(journal)
        return max(found, key=lambda j: j.record.updated, default=None)

    def locate(self, record: Checkpoint) -> Located:
        """The disk the interrupted restore was writing, by identity, never by /dev name."""
        disks = self.disks()
        recorded = record.target_path
        if os.path.isfile(recorded) and all(
            os.path.realpath(d.device) != os.path.realpath(recorded) for d in disks
        ):
            disks.append(self.disk(recorded))
        found = [d for d in disks if is_restore_target(record, d)]
        wanted = describe_disk(record)
        if not found:
            impostor = self._at_name(disks, recorded)
            instead = (
                f"; {impostor.device} is another disk now: {why_not(record, impostor)}"
                if impostor
                else ""
            )
            raise TargetNotFound(
                f"the disk being restored ({wanted}) is not attached{instead}. Attach it and "
                "run this again; nothing was written to any disk"
            )
        if len(found) > 1:
            listing = ", ".join(f"{d.headline} ({d.device})" for d in found)
            raise TargetNotFound(
                f"more than one disk could be the one being restored ({listing}); nothing "
                "was written. Detach the ones that are not it, or name it with --target"
            )
        disk = found[0]
        if os.path.realpath(disk.device) == os.path.realpath(recorded):
            return Located(disk)
        now_there = self._at_name(disks, recorded)
        if now_there is None:
            there = f"{recorded} is gone"
        else:
            holds = now_there.device in self.holders(disks)
            there = f"{recorded} is now {now_there.headline}" + (
                " (the disk that holds the backup)" if holds else ""
            )
        return Located(
            disk,
            notice(
                "target-renamed",
                f"{there}; the disk being restored, {disk.headline}, is now "
                f"{disk.device}. The restore continues there",
                old=recorded,
                new=disk.device,
            ),
        )

    @staticmethod
    def _at_name(disks: Sequence[ProbedDisk], device: str) -> ProbedDisk | None:
        """The disk that has the name ``device`` now, if any."""
        return next(
            (d for d in disks if os.path.realpath(d.device) == os.path.realpath(device)), None
        )

    # -- running -----------------------------------------------------------------------

    def engine(
        self,
        plan: Plan,
        device: str,
        *,
        journal: Journal | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        verify: bool = True,
        plan_path: str | None = None,
        checkpoint_seconds: float | None = None,
    ) -> RestoreEngine:
        """The engine for ``plan`` on ``device``, after every refusal was checked on the
        disk as it is this moment (it may have changed while the person read the preview)."""
        disk = self.disk(device)
        reasons = self.refusals(plan, disk, journal.record if journal else None)
        if reasons:
            raise Refused(disk, reasons)
        extra: dict[str, Any] = {}
        if checkpoint_seconds is not None:
            extra["checkpoint_seconds"] = checkpoint_seconds
        return RestoreEngine(
            plan,
            self.archive,
            disk.device,
            verify=verify,
            journal=journal,
            plan_path=plan_path,
            target_identity=disk.identity,
            progress=progress,
            cancel=cancel,
            **extra,
        )


def is_restore_target(record: Checkpoint, disk: ProbedDisk) -> bool:
    """Is ``disk`` the one ``record``'s restore was writing? By serial or WWN where both
    sides know one; otherwise by the table the restore wrote (or found, before it wrote
    its own) and the filesystems it already restored."""
    if identity_differences(record.target_identity, disk.identity):
        return False
    want, have = record.target_identity, disk.identity
    if (want.serial and have.serial) or (want.wwn and have.wwn):
        return True  # known on both sides, so equal: identity_differences compared them
    plan = record.plan
    wrote_table = not table_differences(plan.after, disk.table)
    if "table" in record.completed_stages:
        return wrote_table and _restored_filesystems_agree(record, disk)
    found_as_planned = disk.table_fingerprint == plan.target.table_fingerprint
    if record.started_writing:  # the table stage was under way: either table may be there
        return found_as_planned or wrote_table
    return found_as_planned


def why_not(record: Checkpoint, disk: ProbedDisk) -> str:
    """Why ``disk`` is not the one ``record``'s restore was writing, in words."""
    differences = identity_differences(record.target_identity, disk.identity)
    if differences:
        return "; ".join(differences)
    if "table" in record.completed_stages:
        return "its partition table is not the one the restore wrote"
    return "its partition table is not the one the restore found there"


def _restored_filesystems_agree(record: Checkpoint, disk: ProbedDisk) -> bool:
    """Filesystem UUIDs of the partitions already restored, where both sides know them."""
    ss = record.plan.after.sector_size
    have = {p.start_lba * ss: p.fs_uuid for p in disk.table.partitions} if disk.table else {}
    wanted = {p.start_lba * ss: p.fs_uuid for p in record.plan.after.partitions}
    for stage in record.plan.stages:
        if stage.name not in record.completed_stages:
            continue
        for action in stage.actions:
            if not isinstance(action, RestoreArea):
                continue
            want, found = wanted.get(action.offset), have.get(action.offset)
            if want and found and want.lower() != found.lower():
                return False
    return True
