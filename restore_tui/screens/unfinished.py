"""Shown when the chosen backup has an unfinished restore: continue it, or start over.

However the backup was chosen (named on the command line, typed, picked from the
list), a restore that stopped half-way is offered before anything else.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from restore_tui.journal import JournalSummary
from restore_tui.screens.common import TERMS, Step, StepHeader

UnfinishedResult = Literal["resume", "start-over", "back"]


class UnfinishedScreen(Screen[UnfinishedResult]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, step: Step, summary: JournalSummary) -> None:
        super().__init__()
        self.step = step
        self.summary = summary

    def compose(self) -> ComposeResult:
        s = self.summary
        yield StepHeader(self.step, "[b]A restore of this backup did not finish.[/b]")
        with VerticalScroll(id="body"):
            yield Static(
                f"It was restoring onto {s.target_description}, and stopped in stage "
                f"{s.stage_number} of {s.stage_count} ({s.stage_title}), {s.percent} % done.",
                id="what",
            )
            yield Static(
                "Continue it: restore-tui finds that disk again by what it is, checks the "
                "last piece written, and goes on from there. " + TERMS["checkpoint"],
                classes="hint",
            )
            yield Static(
                "Or start over: choose what to do and the disk again (the unfinished record "
                "is replaced when the new restore starts).",
                classes="hint",
            )
        with Horizontal(classes="buttons"):
            yield Button("Continue the restore", id="resume", variant="primary")
            yield Button("Start over", id="start-over")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#resume", Button).focus()

    @on(Button.Pressed, "#resume")
    def _resume(self) -> None:
        self.dismiss("resume")

    @on(Button.Pressed, "#start-over")
    def _start_over(self) -> None:
        self.dismiss("start-over")

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
