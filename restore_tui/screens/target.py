"""Step 4 of the wizard: which disk to restore onto, chosen by what the disk *is*.

Disks are listed as model, size, serial and connection with the reasons they match
the backed-up disk; disks that cannot be targets are greyed with why and cannot be picked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static

from layout.probe import ProbedDisk, bus_name, model_words
from restore_tui.screens.common import TERMS, Step, StepHeader, human_size


@dataclass(frozen=True)
class TargetCandidate:
    """One present disk, as the matcher judged it for this backup and job."""

    disk: ProbedDisk
    reasons: tuple[str, ...] = ()
    blockers: tuple[str, ...] = ()
    recommended: bool = False
    notes: tuple[str, ...] = field(default=())
    #: what the table says for a recommended disk
    good_words: str = "✓ best match"
    #: what the disk holds now and what the job does to it
    holds: str = ""

    @property
    def device(self) -> str:
        return self.disk.device

    @property
    def blocked(self) -> bool:
        return bool(self.blockers)


TargetResult = TargetCandidate | Literal["back"]


# Column widths that keep the table inside 80 columns: the reasons for the highlighted
# disk are listed in full under the table instead of squeezed into a column.
MODEL_WIDTH = 24
SERIAL_WIDTH = 12
BUS_WIDTH = 11


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def clip_left(text: str, width: int) -> str:
    """The end of ``text``: a serial number's last characters are the ones on the label."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def verdict_words(c: TargetCandidate) -> str:
    """One short cell: can this disk be the target, and is it the backed-up one?"""
    if c.blockers:
        return "✗ cannot use"
    if c.recommended:
        return c.good_words
    return "can be used"


class TargetScreen(Screen[TargetResult]):
    """A table of disks; Enter picks the highlighted one unless it is refused."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        step: Step,
        candidates: list[TargetCandidate],
        *,
        job_words: str,
        dry_run: bool = False,
        chosen: str | None = None,
    ) -> None:
        super().__init__()
        self.step = step
        self.candidates = candidates
        #: the disk picked last time this step was shown (going back keeps it)
        self.chosen = chosen
        self.by_device = {c.device: c for c in candidates}
        self.job_words = job_words
        self.dry_run = dry_run

    def compose(self) -> ComposeResult:
        yield StepHeader(self.step, self.job_words, dry_run=self.dry_run)
        yield DataTable(id="disks", cursor_type="row", zebra_stripes=False)
        with VerticalScroll(id="disk-detail-box"):
            yield Static("", id="disk-detail")
        yield Static(
            "Go by model, size and serial number: names like /dev/sda change between boots.",
            classes="hint",
            id="name-hint",
        )
        with Horizontal(classes="buttons"):
            yield Button("Use this disk", id="use", variant="primary")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#disks", DataTable)
        table.add_column("Disk", key="model")
        table.add_column("Size", key="size")
        table.add_column("Serial", key="serial")
        table.add_column("Connection", key="bus")
        table.add_column("Use it?", key="verdict")
        best = next((c.device for c in self.candidates if c.recommended), None)
        for c in self.candidates:
            ident = c.disk.identity
            style = "dim" if c.blocked else ("bold" if c.recommended else "")
            # One best match: the list is in order of evidence.
            verdict = verdict_words(c) if c.device == best or not c.recommended else "✓ matches too"
            cells = (
                clip(model_words(c.disk.identity, c.disk.backing_file), MODEL_WIDTH),
                human_size(ident.size_bytes),
                clip_left(ident.serial or "—", SERIAL_WIDTH),
                clip(bus_name(ident.bus), BUS_WIDTH),
                verdict,
            )
            table.add_row(*(Text(cell, style=style) for cell in cells), key=c.device)
        if not self.candidates:
            self.query_one("#disk-detail", Static).update(
                "No disks were found. Connect the disk you want to restore onto, then go Back "
                "and come here again."
            )
            self.query_one("#use", Button).disabled = True
            return
        # Start on the disk picked before (coming back), else the best usable disk —
        # never on a refused one.
        first_ok = next(
            (i for i, c in enumerate(self.candidates) if c.device == self.chosen and not c.blocked),
            next(
                (i for i, c in enumerate(self.candidates) if c.recommended),
                next((i for i, c in enumerate(self.candidates) if not c.blocked), 0),
            ),
        )
        table.move_cursor(row=first_ok)
        table.focus()
        self._describe(self.candidates[first_ok])

    def _highlighted(self) -> TargetCandidate | None:
        table = self.query_one("#disks", DataTable)
        if not self.candidates:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.by_device.get(key or "")

    def _describe(self, c: TargetCandidate) -> None:
        lines = [f"[b]{escape(c.disk.headline)}[/b]", f"Now called {escape(c.disk.device_note)}"]
        lines.extend(f"[red]✗ cannot be the target: {escape(b)}[/red]" for b in c.blockers)
        if c.holds:
            lines.append(escape(c.holds) if c.blocked else f"[b]{escape(c.holds)}[/b]")
        # Reasons are evidence either way ("same disk signature", "nothing links this disk"),
        # so a neutral bullet, not a tick.
        lines.extend(f"• {escape(r)}" for r in (*c.reasons, *c.notes))
        if any(word in r for r in c.reasons for word in ("signature", "GUID", "UUID")):
            lines.append(f"[dim]{TERMS['ids']}[/dim]")
        self.query_one("#disk-detail", Static).update("\n".join(lines))
        self.query_one("#disk-detail-box", VerticalScroll).scroll_home(animate=False)
        self.query_one("#use", Button).disabled = c.blocked

    @on(DataTable.RowHighlighted, "#disks")
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        c = self.by_device.get(event.row_key.value or "")
        if c is not None:
            self._describe(c)

    @on(DataTable.RowSelected, "#disks")
    def _selected(self, event: DataTable.RowSelected) -> None:
        c = self.by_device.get(event.row_key.value or "")
        if c is not None:
            self._choose(c)

    @on(Button.Pressed, "#use")
    def _use(self) -> None:
        c = self._highlighted()
        if c is not None:
            self._choose(c)

    def _choose(self, c: TargetCandidate) -> None:
        if c.blocked:
            # Refused disks stay visible so the person sees *why*, but never proceed.
            self.notify(
                f"{c.disk.name} cannot be the target: {c.blockers[0]}",
                severity="warning",
            )
            return
        self.dismiss(c)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
