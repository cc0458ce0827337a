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

from layout.plan import Plan
from layout.preview import LayoutRow, Status, bar_segments, layout_rows, plan_statuses
from restore_tui.screens.common import TERMS, Step, StepHeader, disk_name, human_size

PreviewResult = Literal["go", "back", "done"]
PALETTE = ("blue", "green", "magenta", "cyan", "dark_orange", "red", "purple", "dark_green")
STATUS_WORDS: dict[str, str] = {
    "kept": "kept as it is",
    "replaced": "replaced by the backup",
    "created": "created from the backup",
    "unallocated": "free space",
}


def rows_of(plan: Plan, which: Literal["before", "after"]) -> list[LayoutRow]:
    """The target's layout before or after the plan, with what happens to each partition."""
    ident = plan.target.identity
    ss = ident.logical_sector_size
    before_status, after_status = plan_statuses(plan)
    if which == "before":
        default: Status = "replaced" if plan.job == "full-disk" else "kept"
        return layout_rows(plan.before, ident.size_bytes // ss, ss, before_status, default)
    return layout_rows(plan.after, ident.size_bytes // ss, ss, after_status, "kept")


class DiskBar(Widget):
    """One disk as a bar as wide as the screen, each partition in its own colour."""

    DEFAULT_CSS = "DiskBar { height: 1; }"

    def __init__(self, label: str, rows: list[LayoutRow]) -> None:
        super().__init__()
        self.label = label
        self.rows = rows

    def render(self) -> RenderResult:
        label = f"{self.label:<7}"
        text = Text(label)
        width = max(10, self.size.width - len(label))
        for seg in bar_segments(self.rows, width):
            if seg.row.number is None:
                text.append("░" * seg.columns, style="grey50")
            else:
                colour = PALETTE[(seg.row.number - 1) % len(PALETTE)]
                body = (seg.symbol + " " * seg.columns)[: seg.columns]
                text.append(body, style=f"bold white on {colour}")
        return text


def table_cells(row: LayoutRow) -> tuple[str, str, str, str]:
    number = row.symbol if row.number is not None else "-"
    name = row.name if not row.label else f"{row.name.split(' — ')[0]} “{row.label}”"
    indent = "  " if row.kind == "logical" else ""
    return (number, indent + name, human_size(row.size_bytes), STATUS_WORDS[row.status])


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
            yield DiskBar("Before", rows_of(plan, "before"))
            yield DiskBar("After", rows_of(plan, "after"))
            yield Static("[grey50]░ free space (unallocated)[/grey50]", classes="hint")
            yield Label("Now on the disk:", classes="section")
            yield DataTable(id="before-table", cursor_type="row")
            yield Label("After the restore:", classes="section")
            yield DataTable(id="after-table", cursor_type="row")
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
        for which in ("before", "after"):
            table = self.query_one(f"#{which}-table", DataTable)
            table.add_columns("#", "Partition", "Size", "What happens")
            for row in rows_of(self.plan, which):
                table.add_row(*table_cells(row), key=f"{row.start_lba}")
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
