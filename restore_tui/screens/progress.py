"""Step "Restoring": the engine runs in a worker thread; this screen shows how far it is.

Stages are listed done / now / waiting, with bars for the stage and the whole job,
throughput, time left, and each checkpoint as it is saved. "Stop safely" asks the
engine to stop at the next slice, which leaves a checkpoint to resume from. When no
byte moves for a while the screen says so, and which disk is not answering.

A resumed restore shows the stages an earlier run finished as done from the start, and
the percent the journal recorded, which is the one the resume offer showed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, ProgressBar, Static

from archive.base import Archive
from archive.errors import ArchiveError
from layout.notices import Notice
from layout.plan import Plan
from restore_tui.engine import EngineError, ProgressEvent, RestoreCancelled
from restore_tui.errors import UserError
from restore_tui.flow import Flow
from restore_tui.journal import Journal
from restore_tui.progress import percent, stall_words
from restore_tui.screens.common import (
    TERMS,
    Item,
    ItemList,
    Step,
    StepHeader,
    human_duration,
    human_rate,
    human_size,
)

# Byte-progress events arrive per slice; the screen needs ten a second at most.
REFRESH_SECONDS = 0.1
MAX_CHECKPOINT_LINES = 4
#: what one can do while nothing moves, in the wizard's words
STALL_WHAT_NOW = (
    "You can wait, or press Stop safely — the restore continues later from the last checkpoint."
)


@dataclass
class RestoreJob:
    """What was chosen in the earlier steps (or read from a journal); the flow builds the
    engine from it, after checking the disk once more."""

    plan: Plan
    flow: Flow
    target_path: str
    verify: bool = True
    journal: Journal | None = None

    @property
    def archive(self) -> Archive:
        return self.flow.archive


@dataclass
class Outcome:
    ok: bool
    cancelled: bool = False
    message: str = ""
    journal_path: str | None = None
    stages_done: list[str] = field(default_factory=list)
    notes: list[Notice] = field(default_factory=list)
    #: stopped before the first byte reached the disk: it is as it was
    wrote_nothing: bool = False


class ProgressScreen(Screen[Outcome]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "stop", "Stop safely")]

    DEFAULT_CSS = """
    ProgressScreen #stall {
        display: none;
        height: auto;
        margin-top: 1;
        padding: 0 1;
        border-left: thick $warning;
        color: $warning;
    }
    ProgressScreen #stall.stalled {
        display: block;
    }
    """

    class Event(Message):
        def __init__(self, event: ProgressEvent) -> None:
            super().__init__()
            self.event = event

    class Finished(Message):
        def __init__(self, outcome: Outcome) -> None:
            super().__init__()
            self.outcome = outcome

    def __init__(self, step: Step, job: RestoreJob) -> None:
        super().__init__()
        self.step = step
        self.job = job
        self.cancel = threading.Event()
        self.running = False
        self.current = -1
        self.done_stages: list[str] = []
        self.checkpoints: list[str] = []
        self.journal_path: str | None = str(job.journal.path) if job.journal else None
        self.stalled: ProgressEvent | None = None  # the last "stalled", until bytes move
        # Where the last checkpoint left it (a resume): (done, total) in the engine's units.
        self.overall: tuple[int, int] | None = None
        if job.journal is not None:
            record = job.journal.record
            self.done_stages = list(record.completed_stages)
            names = [stage.name for stage in job.plan.stages]
            going_on = [n for n in names if n not in self.done_stages]
            if record.current_stage in names:
                self.current = names.index(record.current_stage)
            elif going_on:
                self.current = names.index(going_on[0])
            if record.done_units is not None and record.total_units:
                self.overall = (record.done_units, record.total_units)

    def compose(self) -> ComposeResult:
        plan = self.job.plan
        resumed = " (continuing from the last checkpoint)" if self.job.journal else ""
        yield StepHeader(
            self.step,
            f"Restoring onto {plan.target.name}{resumed}. "
            "Leave the computer on; if it stops, the restore can continue.",
        )
        with VerticalScroll(id="body"):
            yield ItemList(self._stage_items(), id="stages")
            # The percents are the labels' (the one way of rounding, as the resume offer
            # and the command line have it), not the bars' own.
            yield Label("This stage:", id="stage-label", classes="section")
            yield ProgressBar(id="stage-bar", show_eta=False, show_percentage=False)
            yield Label(self._overall_words(), id="overall-label", classes="section")
            yield ProgressBar(id="overall-bar", show_eta=False, show_percentage=False)
            yield Static("Starting…", id="rate")
            yield Static("", id="stall")
            yield Static("", id="checkpoints")
        with Horizontal(classes="buttons"):
            yield Button("Stop safely", id="stop")
        yield Footer()

    def on_mount(self) -> None:
        self.running = True
        self.query_one("#stop", Button).focus()
        if self.overall is not None:
            done, total = self.overall
            self.query_one("#overall-bar", ProgressBar).update(total=total, progress=done)
        self.run_engine()

    def _overall_words(self) -> str:
        if self.overall is None:
            return "Overall:"
        return f"Overall: {percent(*self.overall)} %"

    def _stage_items(self) -> list[Item]:
        items = []
        for i, stage in enumerate(self.job.plan.stages):
            if stage.name in self.done_stages:
                mark, state = "✓", "done" + (", checked" if self.job.verify else "")
            elif i == self.current:
                mark, state = "▶", "now"
            else:
                mark, state = "·", "waiting"
            items.append((f" {mark} {i + 1}.", f"{stage.title} — {state}"))
        return items

    # -- the engine, in a thread ---------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="restore", exclusive=True)
    def run_engine(self) -> None:
        last = [0.0]

        def progress(event: ProgressEvent) -> None:
            now = time.monotonic()
            if event.kind in ("write", "verify") and now - last[0] < REFRESH_SECONDS:
                return
            last[0] = now
            self.post_message(self.Event(event))

        job = self.job
        outcome: Outcome
        try:
            engine = job.flow.engine(
                job.plan,
                job.target_path,
                journal=job.journal,
                progress=progress,
                cancel=self.cancel,
                verify=job.verify,
            )
        except UserError as exc:  # refused on the disk as it is now: nothing was written
            self.post_message(self.Finished(Outcome(ok=False, message=str(exc))))
            return
        try:
            engine.run()
        except RestoreCancelled as exc:
            outcome = Outcome(ok=False, cancelled=True, message=exc.text)
        except EngineError as exc:
            # The engine's own words, without the command line's "run restore-tui resume":
            # the failure screen says how to continue here.
            outcome = Outcome(ok=False, message=exc.text)
        except (ArchiveError, OSError) as exc:
            outcome = Outcome(ok=False, message=str(exc))
        except Exception as exc:  # shown on the failure screen, never a crash
            outcome = Outcome(ok=False, message=f"an unexpected error stopped the restore: {exc!r}")
        else:
            outcome = Outcome(ok=True)
        outcome.notes = list(engine.notes)
        if engine.journal is not None:
            record = engine.journal.record
            outcome.journal_path = str(engine.journal.path)
            outcome.stages_done = list(record.completed_stages)
            outcome.wrote_nothing = not record.completed_stages and record.bytes_done() == 0
        self.post_message(self.Finished(outcome))

    # -- showing progress ----------------------------------------------------------------

    @on(Event)
    def _event(self, message: Event) -> None:
        e = message.event
        if e.journal_path:
            self.journal_path = e.journal_path
        if e.stage_index >= 0:
            self.current = e.stage_index
        if (
            e.kind in ("stage-done", "stage-already-done")
            and e.stage_name
            and e.stage_name not in self.done_stages
        ):
            self.done_stages.append(e.stage_name)
        if e.kind == "stalled":
            self.stalled = e
        elif self.stalled is not None and e.kind in ("moving", "write", "verify"):
            self.stalled = None
        self._show_stall()
        # The checkpoint at a stage's end is followed by its "stage-done": one line for both.
        stage_end = e.kind == "checkpoint" and e.stage_done >= e.stage_total
        if e.kind == "stage-done" or (e.kind == "checkpoint" and not stage_end):
            where = f"stage {e.stage_number} of {e.stage_count}"
            text = (
                f"✓ Checkpoint saved after “{e.stage_title}” ({where}) — safe to resume from here."
                if e.kind == "stage-done"
                else f"✓ Checkpoint saved in {where}, {human_size(e.stage_done)} in — safe to "
                "resume from here."
            )
            self.checkpoints = [*self.checkpoints, text][-MAX_CHECKPOINT_LINES:]
            self.query_one("#checkpoints", Static).update("\n".join(self.checkpoints))
        self.query_one("#stages", ItemList).update(self._stage_items())
        self.query_one("#stage-bar", ProgressBar).update(
            total=max(1, e.stage_total), progress=e.stage_done
        )
        self.query_one("#overall-bar", ProgressBar).update(
            total=max(1, e.overall_total), progress=e.overall_done
        )
        if e.stage_index >= 0:
            self.query_one("#stage-label", Label).update(f"This stage: {e.stage_percent} %")
        if e.stage_index >= 0 or self.overall is None:
            self.overall = (e.overall_done, e.overall_total)
            self.query_one("#overall-label", Label).update(self._overall_words())
        doing = {"verify": "Checking what was written", "stalled": "Waiting"}.get(e.kind, "Writing")
        if e.kind in ("write", "verify", "stalled"):
            self.query_one("#rate", Static).update(
                f"{doing} · {human_size(e.overall_done)} of {human_size(e.overall_total)} · "
                f"{human_rate(e.rate_bytes_s)} · time left: {human_duration(e.eta_s)}"
            )
        elif e.kind == "stage-start":
            self.query_one("#rate", Static).update(
                f"Starting stage {e.stage_number}: {e.stage_title}"
            )

    def _show_stall(self) -> None:
        stall = self.query_one("#stall", Static)
        e = self.stalled
        if e is None or e.waiting_on is None:
            stall.remove_class("stalled")
            stall.update("")
            return
        stall.update(stall_words(e.waiting_on, e.stalled_s or 0.0, STALL_WHAT_NOW))
        if not stall.has_class("stalled"):
            stall.add_class("stalled")
            stall.scroll_visible()  # many stages on a small console: bring it into view

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        self.running = False
        if message.outcome.journal_path is None:
            message.outcome.journal_path = self.journal_path
        self.dismiss(message.outcome)

    # -- stopping ------------------------------------------------------------------------

    @on(Button.Pressed, "#stop")
    def action_stop(self) -> None:
        if not self.running:
            return
        self.cancel.set()
        self.query_one("#stop", Button).disabled = True
        words = "Stopping at the next safe point and saving a checkpoint… " + TERMS["checkpoint"]
        if self.stalled is not None:
            # The engine is stuck in a read or a write: it stops when that call returns.
            words += (
                " The disk is not answering, so this can take long. If it does not stop, it "
                "is safe to switch the computer off: the restore continues from the last "
                "checkpoint."
            )
        self.query_one("#rate", Static).update(words)
