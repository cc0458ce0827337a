"""The last screens: what was restored and checked, and what to do next — or, when the
restore stopped, what happened, what is safe, and how to continue.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from archive.manifest import Role
from restore_tui.screens.common import ItemList, Step, StepHeader
from restore_tui.screens.preview import NEW_ID_CODES, wizard_words
from restore_tui.screens.progress import Outcome, RestoreJob

# Engine notes the Done screen does not repeat: where the record is kept is shown on
# the progress screen, and a finished restore needs no resume.
SAID_ELSEWHERE = frozenset({"journal-location"})
DEFAULT_NEXT_STEPS = (
    "Remove the rescue USB stick or CD, so the computer does not start from it again.",
    "Restart the computer. It should start from the restored disk as before.",
    "If it does not, open the computer's start-up menu (often F12, F8 or Esc at power-on) "
    "and choose the restored disk.",
)
ONE_PARTITION_NEXT_STEPS = (
    "Start the computer normally. The restored partition shows up as a new drive "
    "(Windows may give it a new drive letter).",
    "Check that your files are there before you delete any other copy of them.",
)
# A restored system partition is the drive the computer starts from, not a new drive.
SYSTEM_PARTITION_NEXT_STEPS = (
    "Remove the rescue USB stick or CD, so the computer does not start from it again.",
    "Restart the computer. If it does not start, follow the note below.",
    "Check that your files are there before you delete any other copy of them.",
)
# Planner notes worth saying again once the restore is done: they say what to do next.
REPEATED_CODES = NEW_ID_CODES | {"system-partition-alone", "shared-disk-identity"}


# A partition put back over its counterpart is the same drive as before.
REPLACED_NEXT_STEPS = (
    "Remove the rescue USB stick or CD, so the computer does not start from it again.",
    "Restart the computer. The partition that was put back holds what it held when the "
    "backup was made; the other partitions are as they were.",
    "Check that your files are there before you delete any other copy of them.",
)


def default_next_steps(job: RestoreJob) -> tuple[str, ...]:
    plan = job.plan
    if plan.job == "full-disk":
        return DEFAULT_NEXT_STEPS
    if plan.job == "replace-partition":
        return REPLACED_NEXT_STEPS
    number = plan.choices.partition
    try:
        role = job.archive.manifest.image(number).role if number is not None else None
    except KeyError:
        role = None
    return SYSTEM_PARTITION_NEXT_STEPS if role is Role.SYSTEM else ONE_PARTITION_NEXT_STEPS


class DoneScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close"),
    ]

    def __init__(
        self,
        step: Step,
        job: RestoreJob,
        outcome: Outcome,
        *,
        next_steps: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.step = step
        self.job = job
        self.outcome = outcome
        self.next_steps = next_steps or default_next_steps(job)

    def compose(self) -> ComposeResult:
        plan = self.job.plan
        target = plan.target.name
        yield StepHeader(self.step, f"[b]The restore onto {target} is complete.[/b]")
        with VerticalScroll(id="body"):
            if self.job.verify:
                yield Static(
                    "Everything written was read back and matched the backup:", id="verified"
                )
                yield ItemList([(" ✓", s.title) for s in plan.stages], id="verified-stages")
            else:
                yield Static(
                    "Everything was written. Reading it back was switched off, so it was not "
                    "checked.",
                    id="verified",
                )
            yield Static("[b]What to do next:[/b]", id="next-steps")
            yield ItemList(
                [(f" {i}.", text) for i, text in enumerate(self.next_steps, 1)], id="next-list"
            )
            for w in plan.warnings:
                if w.code in REPEATED_CODES:
                    yield Static(f"Note: {wizard_words(w, plan, restored=True)}", classes="hint")
            for note in self.outcome.notes:
                if note.code in SAID_ELSEWHERE:
                    continue
                yield Static(f"Note: {note.text}", classes="hint")
        with Horizontal(classes="buttons"):
            yield Button("Close", id="close", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


FailureResult = Literal["close", "start-over", "other-backup"]


class FailureScreen(Screen[FailureResult]):
    """The restore stopped (a failure, or the person stopped it): what happened, what is
    safe, and what can be done now — never a dead end."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, job: RestoreJob, outcome: Outcome) -> None:
        super().__init__()
        self.job = job
        self.outcome = outcome

    def compose(self) -> ComposeResult:
        plan = self.job.plan
        o = self.outcome
        target = plan.target.name
        done = [s for s in plan.stages if s.name in o.stages_done]
        left = [s for s in plan.stages if s.name not in o.stages_done]
        if o.cancelled:
            title = "[b]The restore was stopped, safely.[/b]"
            what = "You stopped it. A checkpoint was saved at the point where it stopped."
        else:
            title = "[b]The restore stopped before the end.[/b]"
            what = f"What happened: {o.message}"
        yield Static(title, classes="step-title")
        with VerticalScroll(id="body"):
            yield Static(what, id="what-happened", classes="" if o.cancelled else "error")
            yield Static(
                "Your backup was not changed: restore-tui only reads it.", id="what-is-safe"
            )
            if o.wrote_nothing:
                yield Static(
                    f"Nothing was written to {target} yet: it is exactly as it was before.",
                    id="untouched",
                )
            if done:
                checked = " and checked" if self.job.verify else ""
                yield Static(f"On {target} these stages are finished{checked}:")
                yield ItemList([("   ✓", s.title) for s in done], id="stages-done")
            if left and not o.wrote_nothing:
                yield Static("Not finished yet (the disk will not work until they are):")
                yield ItemList([("   ·", s.title) for s in left], id="stages-left")
            where = (
                f"The progress record is kept in {o.journal_path}."
                if o.journal_path
                else "Nothing had been written yet, so you can simply start again."
            )
            if o.wrote_nothing:
                how = "there is nothing to continue; start the restore again whenever you like."
            else:
                how = (
                    "choose “Resume restoring…” on the first screen (“Another backup” below, "
                    "or when restore-tui starts again). It continues from the last checkpoint "
                    f"instead of starting over. {where}"
                )
            yield Static(f"[b]How to continue:[/b] {how}", id="how-to-resume")
            yield Static(
                "Or choose the disk again now (“Choose the disk again”): the disk list is read "
                "anew, so a disk that was unplugged or a cable that was loose can be fixed "
                "first. “Another backup” goes back to the first step, for another copy of "
                "the backup.",
                classes="hint",
            )
        with Horizontal(classes="buttons"):
            yield Button("Close", id="close", variant="primary")
            yield Button("Choose the disk again", id="start-over")
            yield Button("Another backup", id="other-backup")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss("close")

    @on(Button.Pressed, "#start-over")
    def _start_over(self) -> None:
        self.dismiss("start-over")

    @on(Button.Pressed, "#other-backup")
    def _other_backup(self) -> None:
        self.dismiss("other-backup")
