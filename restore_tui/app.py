"""The restore-tui wizard: a Textual app that walks a person through one restore job.

One worker drives the steps in order with ``push_screen_wait``; every decision is made
by the archive, probe, matching, planner and engine modules — the wizard only asks and shows.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from archive import open_archive
from archive.base import Archive
from archive.errors import ArchiveError
from layout.plan import Plan, PlanChoices
from layout.probe import Probe, ProbedDisk, ProbeError
from restore_tui.errors import UserError
from restore_tui.flow import Flow, Located, is_restore_target
from restore_tui.journal import (
    Checkpoint,
    Journal,
    JournalError,
    JournalSummary,
    find_unfinished,
    summarize,
)
from restore_tui.matching import Job, Match, room_in
from restore_tui.plan_text import held_now
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.choose import (
    BackupChosen,
    ChooseBackupScreen,
    ResumeChosen,
    ResumeOffer,
    media_roots,
)
from restore_tui.screens.common import Step, human_size
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen, FailureScreen
from restore_tui.screens.inside import LookInsideScreen
from restore_tui.screens.job import JobChoice, JobScreen
from restore_tui.screens.partition import PartitionChoice, PartitionScreen
from restore_tui.screens.preview import PreviewScreen
from restore_tui.screens.progress import Outcome, ProgressScreen, RestoreJob
from restore_tui.screens.replace import ReplaceScreen
from restore_tui.screens.target import TargetCandidate, TargetScreen
from restore_tui.screens.unfinished import UnfinishedScreen

# The steps of each job, so the header can say "Step 4 of 8" truthfully. The first
# three steps come before the job is chosen: they count the steps of the usual job (the
# whole disk, or its preview), and the total changes once another job is chosen.
FULL_STEPS = (
    "Choose the backup",
    "The backup",
    "What to do",
    "The target disk",
    "What will change",
    "Confirm",
    "Restoring",
    "Done",
)
ONE_STEPS = (
    "Choose the backup",
    "The backup",
    "What to do",
    "The target disk",
    "Which partition, and where",
    "What will change",
    "Confirm",
    "Restoring",
    "Done",
)
PREVIEW_STEPS = (
    "Choose the backup",
    "The backup",
    "What to do",
    "The target disk",
    "What would change",
)
ONE_PREVIEW_STEPS = (*ONE_STEPS[:5], "What would change")
REPLACE_STEPS = (*ONE_STEPS[:4], "Which partition", *ONE_STEPS[5:])
REPLACE_PREVIEW_STEPS = (*REPLACE_STEPS[:5], "What would change")
# Resuming skips from choosing straight to restoring.
RESUME_STEPS = ("Choose the backup", "Restoring", "Done")
# When the disk's /dev name changed, the person confirms the disk found by identity first.
RESUME_RENAMED_STEPS = ("Choose the backup", "Continue", "Restoring", "Done")


def steps_for(kind: str, dry_run: bool) -> tuple[str, ...]:
    """The steps of one job, in order: what the header counts."""
    if kind == "replace-partition":
        return REPLACE_PREVIEW_STEPS if dry_run else REPLACE_STEPS
    if dry_run:
        return ONE_PREVIEW_STEPS if kind == "one-partition" else PREVIEW_STEPS
    return ONE_STEPS if kind == "one-partition" else FULL_STEPS


def step_of(steps: Sequence[str], title: str) -> Step:
    return Step(steps.index(title) + 1, len(steps), title)


def early_step(title: str, dry_run: bool) -> Step:
    """A step before the job is chosen, counted in the steps of the usual job."""
    return step_of(steps_for("full-disk", dry_run), title)


class ChooseAnotherBackup(Exception):
    """From a failure screen: back to the first step, the backup opened now let go."""


@dataclass
class WizardOptions:
    """How the wizard was started: what to look at, and where."""

    archive_path: str | None = None
    dry_run: bool = False
    #: the disks to offer (system disks, image files, or both)
    probe: Probe | None = None
    #: where to look for backups on the first screen
    backup_roots: Callable[[], list[Path]] = media_roots
    #: where to look for unfinished restores (None: the journal module's default places)
    journal_dirs: list[Path] | None = None
    #: a line under the title, e.g. that this is the demo
    banner: str = ""
    verify_after_write: bool = True
    #: what the end screen says to do next; the demo has no rescue media to remove
    next_steps: tuple[str, ...] | None = None


class RestoreWizard(App[int]):
    """The wizard; its return value is the process exit code (0 only on success)."""

    CSS_PATH = "app.tcss"
    # No command palette: its "^p palette" in the footer is one more word to look up.
    ENABLE_COMMAND_PALETTE = False
    TITLE = "restore-tui"
    SUB_TITLE = "guided restore of a whole-disk backup"
    # Keys named as printed on the keyboard ("Ctrl+Q"), not as "^q".
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True, key_display="Ctrl+Q")
    ]

    def __init__(self, options: WizardOptions | None = None) -> None:
        super().__init__()
        self.options = options or WizardOptions()
        self.archive: Archive | None = None
        self.plan: Plan | None = None
        self.outcome: Outcome | None = None
        #: a preview chosen as the job that became the restore it showed (Restore this now)
        self._job_now: JobChoice | None = None
        self._release: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="busy-box"):
            yield Static("restore-tui", id="busy-title")
            yield Static(self.options.banner, id="banner")
            yield Static("Starting…", id="busy")
        yield Footer()

    def on_mount(self) -> None:
        self.run_flow()

    async def action_quit(self) -> None:
        """Quit — except mid-restore, where it stops safely at a checkpoint instead."""
        screen = self.screen
        if isinstance(screen, ProgressScreen) and screen.running:
            screen.action_stop()
            self.notify("Stopping safely at the next checkpoint; the restore can be resumed.")
            return
        self.exit(1)

    def release_archive(self) -> None:
        """Close the chosen backup and unmount what was mounted to read it (once)."""
        release, self._release = self._release, None
        if release is not None:
            release()
        elif self.archive is not None:
            self.archive.close()
        self.archive = None

    def busy(self, text: str) -> None:
        self.query_one("#busy", Static).update(text)

    # -- the flow ------------------------------------------------------------------------

    @work(exclusive=True, group="flow")
    async def run_flow(self) -> None:
        opts = self.options
        self.busy("Looking for unfinished restores…")
        offers = await asyncio.to_thread(self._resume_offers)
        choose_error: str | None = None
        initial = opts.archive_path
        archive: Archive | None = None
        if initial:
            try:
                archive = await asyncio.to_thread(open_archive, initial)
            except (ArchiveError, OSError) as exc:
                choose_error = str(exc)
        while True:
            if archive is None:
                choice = await self.push_screen_wait(
                    ChooseBackupScreen(
                        early_step("Choose the backup", opts.dry_run),
                        roots=opts.backup_roots,
                        resume_offers=offers,
                        initial_path=initial,
                        error=choose_error,
                        dry_run=opts.dry_run,
                        probe=opts.probe,
                    )
                )
                if isinstance(choice, ResumeChosen):
                    try:
                        code = await self._resume(choice.offer)
                    except ChooseAnotherBackup:
                        code = None
                    if code is None:
                        continue  # could not resume: back to choosing
                    self.exit(code)
                    return
                assert isinstance(choice, BackupChosen)
                archive = choice.archive
                # A backup found on an unmounted partition keeps it mounted (read-only)
                # until released.
                self._release = choice.cleanup
            self.archive = archive
            try:
                code = await self._with_archive(archive)
            except ChooseAnotherBackup:
                code = None
            if code is None:  # the person went back to choosing a backup
                self.release_archive()
                archive = None
                initial = None
                choose_error = None
                # A restore stopped meanwhile is offered for resuming too.
                offers = await asyncio.to_thread(self._resume_offers)
                continue
            self.exit(code)
            return

    def _resume_offers(self) -> list[ResumeOffer]:
        opts = self.options
        archives = [opts.archive_path] if opts.archive_path else []
        try:
            found = find_unfinished(archives, opts.journal_dirs)
        except (OSError, JournalError):
            return []
        return [ResumeOffer(s.describe(), s) for s in found]

    async def _with_archive(self, archive: Archive) -> int | None:
        """Steps 2 onwards; None means "back to choosing the backup"."""
        opts = self.options
        unfinished = await asyncio.to_thread(self._flow(archive).unfinished, opts.journal_dirs)
        if unfinished is not None and not opts.dry_run:
            choice = await self.push_screen_wait(
                UnfinishedScreen(early_step("The backup", opts.dry_run), unfinished.summary())
            )
            if choice == "back":
                return None
            if choice == "resume":
                summary = unfinished.summary()
                code = await self._resume(ResumeOffer(summary.describe(), summary))
                if code is not None:
                    return code
        while True:
            seen = await self.push_screen_wait(
                BackupScreen(early_step("The backup", opts.dry_run), archive, dry_run=opts.dry_run)
            )
            if seen == "back":
                return None
            if seen == "look":
                await self.push_screen_wait(
                    LookInsideScreen(early_step("The backup", opts.dry_run), Path(archive.path))
                )
                continue
            while True:
                job = await self.push_screen_wait(
                    JobScreen(early_step("What to do", opts.dry_run), dry_run=opts.dry_run)
                )
                if job == "back":
                    break
                assert isinstance(job, JobChoice)
                self._job_now = None
                code = await self._job(archive, job)
                if code is not None:
                    return code

    async def _job(self, archive: Archive, job: JobChoice) -> int | None:
        """Target, plan, preview and (unless previewing) restore. None: back to the job."""
        chosen: str | None = None
        while True:
            # A preview turned into the restore it showed stays a restore from then on.
            job = self._job_now or job
            steps = steps_for(job.kind, job.dry_run)
            job_words = target_words(job)
            self.busy("Looking at the disks…")
            try:
                candidates = await asyncio.to_thread(self._candidates, archive, job)
            except ProbeError as exc:
                candidates = []
                self.notify(str(exc), severity="error", timeout=10)
            target = await self.push_screen_wait(
                TargetScreen(
                    step_of(steps, "The target disk"),
                    candidates,
                    job_words=job_words,
                    dry_run=job.dry_run,
                    chosen=chosen,
                )
            )
            if target == "back":
                return None
            assert isinstance(target, TargetCandidate)
            chosen = target.device
            code = await self._plan_and_run(archive, job, steps, target)
            if code is not None:
                return code

    def _candidates(self, archive: Archive, job: JobChoice) -> list[TargetCandidate]:
        flow = self._flow(archive)
        # Looked up each time: a restore stopped a moment ago marks its disk too.
        unfinished = flow.unfinished(self.options.journal_dirs)
        record = unfinished.record if unfinished is not None else None
        return [candidate_for(m, record) for m in flow.candidates(job.kind)]

    def _grow_offer(self, archive: Archive, target: TargetCandidate, plan: Plan) -> int | None:
        return self._flow(archive).grow_offer(target.disk, plan)

    def _flow(self, archive: Archive) -> Flow:
        return Flow(archive, self._probe())

    def _probe(self) -> Probe:
        if self.options.probe is None:
            from layout.probe import probe_for

            self.options.probe = probe_for([])
        return self.options.probe

    async def _plan_and_run(
        self,
        archive: Archive,
        job: JobChoice,
        steps: tuple[str, ...],
        target: TargetCandidate,
    ) -> int | None:
        """From the chosen target to the end; None goes back to choosing the target."""
        while True:
            part: PartitionChoice | int | None = None
            # The jobs of one partition pick it (and, into free space, where) on a step of
            # their own: one screen class and step title per job.
            pickers: dict[str, tuple[Callable[..., Screen[Any]], str]] = {
                "replace-partition": (ReplaceScreen, "Which partition"),
                "one-partition": (PartitionScreen, "Which partition, and where"),
            }
            picker = pickers.get(job.kind)
            if picker is not None:
                kind, title = picker
                picked = await self.push_screen_wait(
                    kind(step_of(steps, title), archive.manifest, target.disk, dry_run=job.dry_run)
                )
                if picked == "back":
                    return None
                assert isinstance(picked, PartitionChoice | int)
                part = picked
            new_ids = replanned = False
            grow: int | None = None
            plan: Plan | None = None
            while True:
                if plan is None:
                    self.busy("Working out the plan…")
                    try:
                        plan = await asyncio.to_thread(
                            self._make_plan, archive, job, target, part, new_ids, grow
                        )
                    except UserError as exc:
                        self.notify(f"This cannot be done: {exc}", severity="error", timeout=15)
                        break
                self.plan = plan
                preview_title = "What would change" if job.dry_run else "What will change"
                go = await self.push_screen_wait(
                    PreviewScreen(
                        step_of(steps, preview_title),
                        plan,
                        dry_run=job.dry_run,
                        source_table=archive.manifest.table,
                        show_ids=replanned,
                        can_restore=not self.options.dry_run,
                        grow_offer=await asyncio.to_thread(
                            self._grow_offer, archive, target, plan
                        ),
                    )
                )
                replanned = False
                if go == "restore-now":
                    # The preview he just read becomes the restore: same plan, real steps.
                    job = self._job_now = JobChoice(job.kind, dry_run=False)
                    steps = steps_for(job.kind, dry_run=False)
                if go in ("grow", "no-grow"):
                    grow = self._grow_offer(archive, target, plan) if go == "grow" else None
                    plan = None
                    continue
                if go in ("new-ids", "same-ids"):
                    # Plan again and show the new plan: what the choice changes is on it.
                    new_ids = go == "new-ids"
                    plan = None
                    replanned = True
                    continue
                if go == "back":
                    break
                if go == "done" and not self.options.dry_run:
                    # A preview chosen as the job: done looking, back to the first step.
                    raise ChooseAnotherBackup
                if go == "done" or job.dry_run:
                    return 0
                confirmed = await self.push_screen_wait(
                    ConfirmScreen(step_of(steps, "Confirm"), plan)
                )
                if confirmed:
                    return await self._run_restore(
                        RestoreJob(
                            plan=plan,
                            flow=self._flow(archive),
                            target_path=target.device,
                            verify=self.options.verify_after_write,
                        ),
                        steps,
                    )
            if part is None:
                return None

    def _make_plan(
        self,
        archive: Archive,
        job: JobChoice,
        target: TargetCandidate,
        part: PartitionChoice | int | None,
        new_ids: bool = False,
        grow: int | None = None,
    ) -> Plan:
        """The plan of the choices made on screen; ``part`` is the one-partition job's
        partition and free space, or the replace job's partition number."""
        if isinstance(part, int):
            choices = PlanChoices(job=job.kind, partition=part)
        else:
            choices = PlanChoices(
                job=job.kind,
                partition=part.number if part else None,
                region=part.region.start_lba if part else None,
                new_ids=new_ids,
                grow=grow,
            )
        return self._flow(archive).plan(target.disk, choices)

    async def _run_restore(self, job: RestoreJob, steps: Sequence[str]) -> int | None:
        # Shown for a moment between the progress screen and the next one.
        self.busy("Saving where the restore got to…")
        outcome = await self.push_screen_wait(ProgressScreen(step_of(steps, "Restoring"), job))
        self.outcome = outcome
        if outcome.ok:
            await self.push_screen_wait(
                DoneScreen(step_of(steps, "Done"), job, outcome, next_steps=self.options.next_steps)
            )
            return 0
        after = await self.push_screen_wait(FailureScreen(job, outcome))
        if after == "other-backup":
            raise ChooseAnotherBackup
        # "Choose the disk again": back to the target step (or, when resuming, to step 1).
        return None if after == "start-over" else 1

    async def _resume(self, offer: ResumeOffer) -> int | None:
        summary = offer.payload
        assert isinstance(summary, JournalSummary)
        self.busy("Opening the unfinished restore…")
        try:
            journal = await asyncio.to_thread(Journal.load, summary.path)
            archive = await asyncio.to_thread(open_archive, journal.record.archive_path)
        except (JournalError, ArchiveError, OSError) as exc:
            self.notify(
                f"Cannot resume: {exc}. Plug in the disk that holds the backup, or choose "
                "the backup below.",
                severity="error",
                timeout=15,
            )
            return None
        self.archive = archive
        flow = self._flow(archive)
        self.busy("Looking for the disk being restored…")
        try:
            # By what the disk is: its /dev name may belong to another disk since the restart.
            located: Located = await asyncio.to_thread(flow.locate, journal.record)
        except (UserError, ProbeError) as exc:
            self.notify(f"Cannot resume yet: {exc}", severity="error", timeout=20)
            return None
        record = journal.record
        steps: tuple[str, ...] = RESUME_STEPS
        if located.renamed is not None:
            steps = RESUME_RENAMED_STEPS
            confirmed = await self.push_screen_wait(
                ConfirmScreen(step_of(steps, "Continue"), record.plan, resuming=located)
            )
            if not confirmed:
                return None
        return await self._run_restore(
            RestoreJob(
                plan=record.plan,
                flow=flow,
                target_path=located.disk.device,
                verify=self.options.verify_after_write,
                journal=journal,
            ),
            steps,
        )


def target_words(job: JobChoice) -> str:
    """What the target step asks, for this job."""
    if job.dry_run:
        return (
            "Which disk should the preview be for? Nothing is written: you only see what "
            "a restore would change."
        )
    return {
        "full-disk": "Which disk should the backup go onto? Everything on it will be replaced.",
        "one-partition": "Which disk should the partition go onto? Only its free space "
        "is used; nothing else on it changes.",
        "replace-partition": "Which disk holds the partition to put back? Only that "
        "partition changes.",
    }[job.kind]


def holds_words(disk: ProbedDisk, job: Job) -> str:
    """What the disk holds now and what the job does to it, in one line of words."""
    table = disk.table
    if table is None:
        return f"Its partition table is damaged: {disk.table_problem}." if disk.table_problem else (
            "Holds now: no partition table (a new disk, or its table was wiped)."
        )
    if not table.data_partitions:
        return "Holds now: no partitions."
    ss = table.sector_size
    parts = []
    for p in table.data_partitions:
        label = f" “{p.label or p.gpt_name}”" if (p.label or p.gpt_name) else ""
        parts.append(f"{held_now(p)}{label} ({human_size(p.length_lba * ss)})")
    fate = {
        "full-disk": "a whole-disk restore erases all of it",
        "one-partition": "these stay as they are; only free space is used",
        "replace-partition": "only the partition that is put back changes",
    }[job]
    return f"Holds now: {', '.join(parts)} — {fate}."


def candidate_for(match: Match, unfinished: Checkpoint | None = None) -> TargetCandidate:
    """A judged disk as the target step lists it (the judging is the flow's); the disk an
    unfinished restore of this backup was writing says so."""
    notes: list[str] = []
    disk = match.disk
    if unfinished is not None and is_restore_target(unfinished, disk):
        summary = summarize(unfinished, Path())
        notes.append(
            f"half restored: a restore of this backup onto it stopped at {summary.percent} % "
            "(to continue it, go back to step 1 and choose “Resume restoring…”; choosing it "
            "here starts over)"
        )
    if match.job == "one-partition" and disk.free and not match.blockers:
        # What a new partition can really use: its start moves to the next MiB.
        largest = max(room_in(r) * r.sector_size for r in disk.free)
        notes.append(f"largest free space: {human_size(largest)}")
    return TargetCandidate(
        disk=disk,
        reasons=tuple(match.reasons),
        blockers=tuple(b.text for b in match.blockers),
        recommended=match.recommended,
        notes=tuple(notes),
        holds=holds_words(disk, match.job),
        good_words="✓ has room" if match.job == "one-partition" else "✓ best match",
    )


def run_wizard(options: WizardOptions) -> int:
    """Run the wizard in this terminal and return the exit code."""
    if not os.isatty(0) or not os.isatty(2):
        raise UserError(
            "the wizard needs a terminal; use `restore-tui inspect`, `plan` and `restore` "
            "in scripts, or `restore-tui demo --no-tui` for the walk-through as text"
        )
    app = RestoreWizard(options)
    try:
        result = app.run()
    finally:
        app.release_archive()
    return int(result if result is not None else 1)
