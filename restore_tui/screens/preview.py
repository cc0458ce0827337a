"""Step "What will change": before and after as proportional bars and tables, the stages in
order, what will be erased in words, and the exact sectors on request.

Everything shown comes from the plan object the engine will execute — nothing else.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Footer, Label, Static

from layout.models import PartitionTable
from layout.plan import Plan
from restore_tui.screens.common import TERMS, Step, StepHeader, disk_name, human_size

PreviewResult = Literal["go", "back", "done"]
PALETTE = ("blue", "green", "magenta", "cyan", "yellow", "red", "bright_blue", "bright_green")


def segments(table: PartitionTable | None, disk_bytes: int) -> list[tuple[int, int, str | None]]:
    """(start byte, stop byte, partition number as text or None for free) across the disk."""
    if table is None:
        return [(0, disk_bytes, None)]
    ss = table.sector_size
    out: list[tuple[int, int, str | None]] = []
    pos = 0
    for p in sorted(table.data_partitions, key=lambda p: p.start_lba):
        start, stop = p.start_lba * ss, p.stop_lba * ss
        if start > pos:
            out.append((pos, start, None))
        out.append((start, stop, str(p.number)))
        pos = max(pos, stop)
    if pos < disk_bytes:
        out.append((pos, disk_bytes, None))
    return out


class DiskBar(Widget):
    """One disk as a bar as wide as the screen, each partition in its own colour."""

    DEFAULT_CSS = "DiskBar { height: 1; }"

    def __init__(self, label: str, table: PartitionTable | None, disk_bytes: int) -> None:
        super().__init__()
        self.label = label
        self.table = table
        self.disk_bytes = max(1, disk_bytes)

    def render(self) -> RenderResult:
        label = f"{self.label:<7}"
        width = max(10, self.size.width - len(label))
        text = Text(label)
        cells: list[tuple[str, str]] = []
        for start, stop, number in segments(self.table, self.disk_bytes):
            # Every partition gets at least one cell, so a tiny one is still visible.
            n = max(1, round((stop - start) * width / self.disk_bytes))
            if number is None:
                cells.append(("░" * n, "grey50"))
            else:
                colour = PALETTE[(int(number) - 1) % len(PALETTE)]
                body = (number + "█" * n)[:n] if n > 1 else number[:1]
                cells.append((body, f"bold white on {colour}"))
        used = sum(len(c) for c, _s in cells)
        # Rounding can overshoot by a few cells; trim from the largest segment.
        while used > width and cells:
            i = max(range(len(cells)), key=lambda k: len(cells[k][0]))
            if len(cells[i][0]) <= 1:
                break
            cells[i] = (cells[i][0][:-1], cells[i][1])
            used -= 1
        for body, style in cells:
            text.append(body, style=style)
        return text


def status_rows(plan: Plan) -> list[tuple[str, str, str, str]]:
    """(number, what, size, what happens to it) for every partition after the restore."""
    before = {p.number: p for p in plan.before.data_partitions} if plan.before else {}
    after = plan.after
    ss = after.sector_size
    rows = []
    stage_titles = {s.name: s.title for s in plan.stages}
    for p in after.data_partitions:
        title = stage_titles.get(f"partition-{p.number}") or (p.label or p.gpt_name or "")
        old = before.get(p.number)
        if plan.job == "one-partition":
            restored = f"partition-{p.number}" in stage_titles
            status = "created and restored" if restored else "kept as it is"
        elif old is not None:
            status = "replaced by the backup"
        else:
            status = "created from the backup"
        rows.append((str(p.number), title or "—", human_size(p.length_lba * ss), status))
    return rows


def exact_lines(plan: Plan) -> str:
    ss = plan.after.sector_size
    lines = []
    for i, stage in enumerate(plan.stages, 1):
        lines.append(f"Stage {i}: {stage.title}")
        for a in stage.actions:
            first = a.offset // ss
            last = (a.offset + a.length - 1) // ss
            lines.append(
                f"   {a.kind:<12} sectors {first}-{last} (bytes {a.offset}+{a.length}): "
                f"{a.description}"
            )
    return "\n".join(lines)


class PreviewScreen(Screen[PreviewResult]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("x", "exact", "Exact sectors"),
    ]

    def __init__(self, step: Step, plan: Plan, *, dry_run: bool = False) -> None:
        super().__init__()
        self.step = step
        self.plan = plan
        self.dry_run = dry_run

    def compose(self) -> ComposeResult:
        plan = self.plan
        disk_bytes = plan.target.identity.size_bytes
        target = disk_name(plan.target.identity)
        lead = "Nothing has been written." if self.dry_run else "Nothing has been written yet."
        yield StepHeader(self.step, f"{lead} This is the plan for {target}.", dry_run=self.dry_run)
        with VerticalScroll(id="body"):
            if plan.erases:
                yield Static(
                    f"[b]Will be erased:[/b] {plan.erases}", classes="warning", id="erases"
                )
            elif plan.job == "one-partition":
                yield Static("Nothing is erased: only free space is used.", id="erases")
            yield DiskBar("Before", plan.before, disk_bytes)
            yield DiskBar("After", plan.after, disk_bytes)
            yield Static("[grey50]░ free space (unallocated)[/grey50]", classes="hint")
            table: DataTable[str] = DataTable(id="after-table", cursor_type="row")
            yield table
            yield Label(
                "The restore runs in this order, with a checkpoint after each:", classes="section"
            )
            stages = "\n".join(
                f" {i}. {s.title} ({human_size(s.bytes_to_write)})"
                for i, s in enumerate(plan.stages, 1)
            )
            yield Static(stages, id="stages")
            if plan.job == "full-disk":
                yield Static(TERMS["mbr"], classes="hint")
            for w in plan.warnings:
                yield Static(f"[b]Note:[/b] {w}", classes="warning")
            yield Static(exact_lines(plan), id="exact")
        with Horizontal(classes="buttons"):
            if self.dry_run:
                yield Button("Done", id="done", variant="primary")
            else:
                yield Button("Continue", id="go", variant="primary")
            yield Button("Exact sectors", id="exact-toggle")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#after-table", DataTable)
        table.add_columns("#", "Partition after the restore", "Size", "What happens")
        for row in status_rows(self.plan):
            table.add_row(*row, key=row[0])
        self.query_one("#exact", Static).display = False
        self.query_one("#done" if self.dry_run else "#go", Button).focus()

    @on(Button.Pressed, "#exact-toggle")
    def action_exact(self) -> None:
        exact = self.query_one("#exact", Static)
        exact.display = not exact.display
        if exact.display:
            self.query_one("#body", VerticalScroll).scroll_to_widget(exact)

    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        self.dismiss("go")

    @on(Button.Pressed, "#done")
    def _done(self) -> None:
        self.dismiss("done")

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
