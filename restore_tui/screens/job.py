"""Step 3 of the wizard: what to do with the backup.

Restore the whole disk, restore one partition into free space, or only show what
would change; each choice is explained in one plain sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.console import Group
from rich.padding import Padding
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, OptionList, Static
from textual.widgets.option_list import Option

from layout.plan import Job
from restore_tui.screens.common import TERMS, Step, StepHeader

JobKind = Job


@dataclass(frozen=True)
class JobChoice:
    kind: JobKind
    dry_run: bool


JobResult = JobChoice | Literal["back"]

_CHOICES: tuple[tuple[str, JobKind, bool, str, str], ...] = (
    (
        "full",
        "full-disk",
        False,
        "Restore the whole disk",
        "Everything back as it was; the disk you choose is replaced.",
    ),
    (
        "one",
        "one-partition",
        False,
        "Restore one partition into free space",
        "One partition into unused space; nothing else on the disk changes.",
    ),
    (
        "preview",
        "full-disk",
        True,
        "Only show what would change",
        "A whole-disk restore planned and shown. Nothing is written.",
    ),
    (
        "replace",
        "replace-partition",
        False,
        "Put one partition back as it was",
        "After a bad update or a mistake; nothing else on the disk changes.",
    ),
)


class JobScreen(Screen[JobResult]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, step: Step, *, dry_run: bool = False) -> None:
        super().__init__()
        self.step = step
        self.dry_run = dry_run

    def compose(self) -> ComposeResult:
        yield StepHeader(self.step, "What do you want to do?", dry_run=self.dry_run)
        with VerticalScroll(id="body"):
            options = OptionList(id="jobs")
            for key, _kind, preview_only, title, text in _CHOICES:
                if self.dry_run and preview_only:
                    continue  # everything is a preview already
                if self.dry_run:
                    title = f"Preview: {title[0].lower()}{title[1:]}"
                # The explanation indented under its title, also where it wraps.
                prompt = Group(Text(title, style="bold"), Padding(Text(text), (0, 0, 0, 2)))
                options.add_option(Option(prompt, id=key))
            yield options
            yield Static(TERMS["partition"] + "\n" + TERMS["free"], classes="hint")
        with Horizontal(classes="buttons"):
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        jobs = self.query_one("#jobs", OptionList)
        jobs.focus()
        jobs.highlighted = 0

    @on(OptionList.OptionSelected, "#jobs")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        for key, kind, preview_only, _title, _text in _CHOICES:
            if key == event.option.id:
                self.dismiss(JobChoice(kind, self.dry_run or preview_only))
                return

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
