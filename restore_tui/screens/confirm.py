"""Step "Confirm": a confirmation that cannot happen by accident.

The person types the last characters of the target's serial number (or a short
word when the disk has none); "Go back" is the focused button, never "Start".
"""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from layout.plan import Plan
from restore_tui.flow import Confirmation, Located, confirmation_for
from restore_tui.screens.common import TERMS, Step, StepHeader, TextField
from restore_tui.screens.preview import SHARED_ID_CODES, wizard_words


def request_words(wanted: Confirmation) -> str:
    """How the wizard asks for the flow's confirmation."""
    if wanted.kind == "serial":
        return (
            f"type the last {len(wanted.word)} characters of the disk's serial number "
            f"(printed on its label): [b]{wanted.word}[/b]"
        )
    return f"type the word [b]{wanted.word}[/b]"


class ConfirmScreen(Screen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Go back"),
    ]

    def __init__(self, step: Step, plan: Plan, *, resuming: Located | None = None) -> None:
        super().__init__()
        self.step = step
        self.plan = plan
        self.resuming = resuming
        self.wanted = confirmation_for(plan.target.identity, plan.job)
        self.request = request_words(self.wanted)

    def compose(self) -> ComposeResult:
        plan = self.plan
        target = plan.target.name
        yield StepHeader(self.step, "Last check before anything is written.")
        with VerticalScroll(id="body"):
            if self.resuming is not None:
                disk = self.resuming.disk
                yield Static(
                    f"[b]Continue the interrupted restore onto {disk.headline}.[/b]\n"
                    "The disk was found by what it is, not by its name.",
                    classes="warning",
                )
                if self.resuming.renamed is not None:
                    yield Static(self.resuming.renamed.text + ".", id="renamed")
            elif plan.job == "full-disk":
                # The disk by what it is; its /dev name follows once, on its own line.
                has_partitions = plan.before is not None and bool(plan.before.partitions)
                replaced = (
                    "Every partition on it is replaced by the backup."
                    if has_partitions
                    else "It has no partitions now; whatever it holds is overwritten."
                )
                yield Static(
                    f"[b]This will erase everything on {target}.[/b]\n"
                    f"{replaced} This cannot be undone.",
                    classes="warning",
                )
            elif plan.job == "replace-partition":
                # The planner's words: which partition is erased, and what replaces it.
                yield Static(
                    f"[b]{escape(plan.erases.rstrip('.'))}.[/b] This cannot be undone.",
                    classes="warning",
                    id="erases",
                )
            else:
                yield Static(
                    f"[b]This will write one new partition onto {target}.[/b]\n"
                    "Only free space is used; whatever old data lies in it is overwritten. "
                    "The other partitions stay as they are.",
                    classes="warning",
                )
            # A disk that would share its identity with another is said again here: on the
            # preview it may have been below the fold.
            for w in plan.warnings:
                if w.code in SHARED_ID_CODES:
                    said = wizard_words(w, plan).replace("(key n)", "on the preview (Go back)")
                    yield Static(f"[b]Note:[/b] {escape(said)}", classes="notice")
            if plan.new_ids:
                what = "disk" if plan.job == "full-disk" else "partition"
                yield Static(f"The restored {what} gets new identifiers, as you chose.")
            note = (
                "a disk image file"
                if plan.target.identity.bus == "image"
                else "names like this change between boots"
            )
            yield Static(f"Now called {plan.target.device} ({note}).", classes="hint")
            stages = len(plan.stages)
            runs = f"{stages} stages" if stages != 1 else "one stage"
            yield Static(
                f"The restore runs in {runs} with a checkpoint after each. "
                + TERMS["checkpoint"],
                classes="hint",
            )
            yield Static(f"To go ahead, {self.request}", id="request")
            yield TextField(placeholder="type here", id="word")
            yield Static("", id="confirm-status")
        with Horizontal(classes="buttons"):
            yield Button("Go back", id="back", variant="primary")
            yield Button("Start restoring", id="start", variant="error", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#word", Input).focus()

    def _matches(self) -> bool:
        return self.wanted.matches(self.query_one("#word", Input).value)

    @on(Input.Changed, "#word")
    def _typed(self) -> None:
        ok = self._matches()
        self.query_one("#start", Button).disabled = not ok
        self.query_one("#confirm-status", Static).update(
            "Ready: press Enter or choose “Start restoring”." if ok else ""
        )

    @on(Input.Submitted, "#word")
    def _submitted(self) -> None:
        if self._matches():
            self.dismiss(True)
        else:
            self.query_one("#confirm-status", Static).update(
                f"That is not it. {self.request[0].upper()}{self.request[1:]}."
            )

    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        if self._matches():
            self.dismiss(True)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss(False)
