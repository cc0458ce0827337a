"""Step "What will change": what will be erased and the stages first, then before and after
as proportional bars and tables, notes, and the exact sectors on request.

Everything shown comes from the plan object the engine will execute — nothing else. When
the planner warns that two disks would share an identity, the screen offers to plan again
with new identifiers instead of naming the command line's --new-ids.
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
from layout.notices import Notice
from layout.plan import Plan
from restore_tui.plan_text import LayoutRow, bar_segments, plan_rows
from restore_tui.screens.common import TERMS, ItemList, Step, StepHeader, human_size

PreviewResult = Literal[
    "go", "back", "done", "restore-now", "new-ids", "same-ids", "grow", "no-grow"
]
NEW_IDS_FULL = "Give the restored disk new identifiers"
NEW_IDS_ONE = "Give the new partition a new identifier"
SAME_IDS = "Keep the backed-up identifiers"
PALETTE = ("blue", "green", "magenta", "cyan", "dark_orange", "red", "purple", "dark_green")
STATUS_WORDS: dict[str, str] = {
    "kept": "kept as it is",
    "replaced": "replaced by the backup",
    "created": "created from the backup",
    "unallocated": "free space",
}


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
    short = row.name.split(" — ")[0]
    # "System Reserved “System Reserved”" says nothing twice: the label only when it adds.
    name = row.name if not row.label else short if row.label == short else f"{short} “{row.label}”"
    indent = "  " if row.kind == "logical" else ""
    return (number, indent + name, human_size(row.size_bytes), STATUS_WORDS[row.status])


EXACT_TERMS = (
    "Sectors are the disk's {ss}-byte blocks, counted from 0 at its start. MBR and GPT are the "
    "older and newer kinds of partition table; an extended boot record is the small record in "
    "front of each logical partition (one inside an extended partition) that links it to the "
    "next."
)


def exact_lines(plan: Plan) -> str:
    ss = plan.after.sector_size
    lines = [EXACT_TERMS.format(ss=ss), ""]
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


# Planner notices that suggest fresh identifiers (two disks or partitions would share one).
SHARED_ID_CODES = frozenset({"shared-disk-identity", "shared-partition-guid"})
NEW_ID_CODES = frozenset({"new-disk-ids", "new-partition-guid"})


def offers_new_ids(plan: Plan) -> bool:
    return plan.new_ids or any(w.code in SHARED_ID_CODES for w in plan.warnings)


def grow_label(plan: Plan, number: int) -> str:
    """The larger-disk choice on the preview: grow a partition, or leave the space free."""
    if plan.choices.grow is not None:
        return "Leave the extra space unallocated (g)"
    return f"Use the whole disk: grow partition {number} into the extra space (g)"


def new_ids_label(plan: Plan) -> str:
    if plan.new_ids:
        return SAME_IDS
    return NEW_IDS_FULL if plan.job == "full-disk" else NEW_IDS_ONE


def wizard_words(said: Notice, plan: Plan, *, restored: bool = False) -> str:
    """A planner notice as the wizard says it: where the command line names --new-ids,
    the wizard names the choice on this screen. Once ``restored``, that choice is gone:
    only what to do about it is said."""
    choice = f"choose “{NEW_IDS_FULL if plan.job == 'full-disk' else NEW_IDS_ONE}” (key n)"
    p = said.params
    would = "now" if restored else "would"
    if said.code == "shared-disk-identity":
        unplug = "Unplug that disk before starting the computer"
        return (
            f"Two disks {would} share an identity: {p['other']} still carries the backed-up "
            f"disk's {p['identifier']}. Windows takes one of them offline and boot loaders may "
            f"pick the wrong one. {unplug}" + ("." if restored else f", or {choice}")
        )
    if said.code == "shared-partition-guid":
        return (
            f"Two partitions {would} share partition GUID {p['guid']}: partition "
            f"{p['partition']} of {p['other']} has it. Boot entries naming that GUID may pick "
            "the wrong one"
            + (
                "; unplug that disk before starting the computer."
                if restored
                else f"; {choice} for a fresh one"
            )
        )
    if said.code in NEW_ID_CODES:
        return said.text.replace("Fresh identifiers (--new-ids):", "New identifiers:")
    if said.code == "hidden-sectors-updated":
        # The command line names the field; he needs only what it means.
        return (
            "The partition goes to a new place on the disk; its first sector is updated "
            "with that place, so Windows still finds it"
        )
    return said.text


def one_partition_words(plan: Plan, *, dry_run: bool = False) -> str:
    """What a one-partition restore overwrites, without sector numbers."""
    before = {p.number for p in plan.before.partitions} if plan.before else set()
    new = [p for p in plan.after.partitions if p.number not in before]
    ss = plan.after.sector_size
    size = f" ({human_size(new[0].length_lba * ss)})" if new else ""
    goes, is_, would = ("would go", "would be", "would be") if dry_run else ("goes", "is", "")
    return (
        f"[b]Nothing {would or is_} erased.[/b] The new partition{size} {goes} into free space "
        f"on {plan.target.name}; whatever old data lies in that free space "
        f"{is_} overwritten. Every other partition stays as it is."
    )


def identity_words(plan: Plan, source: PartitionTable | None) -> str:
    """Which identifiers the restored disk (or partition) carries, old and new."""
    after = plan.after
    if plan.job == "one-partition":
        before = {p.number for p in plan.before.partitions} if plan.before else set()
        new = [p for p in after.partitions if p.number not in before and p.gpt_guid]
        if not new:
            return ""
        how = "a new" if plan.new_ids else "the backed-up"
        return f"Identifier: the new partition gets {how} partition GUID {new[0].gpt_guid}."
    if after.scheme == "gpt":
        what, now = "GPT disk GUID", after.gpt_disk_guid
        was = source.gpt_disk_guid if source else None
    else:
        what, now = "disk signature", after.mbr_signature
        was = source.mbr_signature if source else None
    if plan.new_ids:
        extra = " and new partition GUIDs" if after.scheme == "gpt" else ""
        old = f" (the backup's is {was})" if was else ""
        return f"Identifiers: the restored disk gets a new {what} {now}{old}{extra}."
    return f"Identifiers: the restored disk keeps the backed-up disk's {what} {now}."


class PreviewScreen(Screen[PreviewResult]):
    """The plan, essentials first; the rest scrolls with the keys shown under it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("x", "exact", "Exact sectors"),
        # One key, two meanings: only the one that fits the plan on screen is enabled.
        Binding("n", "new_ids", "New identifiers"),
        Binding("n", "same_ids", "Keep identifiers"),
        Binding("g", "grow", "Whole disk"),
        Binding("down", "scroll('down')", "Scroll", show=False),
        Binding("up", "scroll('up')", "Scroll", show=False),
        Binding("pagedown", "scroll('page_down')", "More", show=False),
        Binding("pageup", "scroll('page_up')", "Scroll", show=False),
        Binding("home", "scroll('home')", "Top", show=False),
        Binding("end", "scroll('end')", "End", show=False),
    ]

    def __init__(
        self,
        step: Step,
        plan: Plan,
        *,
        dry_run: bool = False,
        source_table: PartitionTable | None = None,
        show_ids: bool = False,
        can_restore: bool = False,
        grow_offer: int | None = None,
    ) -> None:
        super().__init__()
        self.step = step
        self.plan = plan
        self.dry_run = dry_run
        #: a preview chosen as the job (not a wizard started for previews only): it can
        #: go on to the restore it shows
        self.can_restore = dry_run and can_restore
        self.source_table = source_table
        #: just planned again with other identifiers: open at what that changed
        self.show_ids = show_ids
        self.offer_ids = offers_new_ids(plan)
        #: a larger disk: the partition that can grow into the extra space (None: none)
        self.grow_offer = grow_offer

    def compose(self) -> ComposeResult:
        plan = self.plan
        lead = "Nothing has been written." if self.dry_run else "Nothing has been written yet."
        ask = "" if self.dry_run else " Check it, then Continue."
        yield StepHeader(self.step, f"{lead} This is the plan.{ask}", dry_run=self.dry_run)
        with VerticalScroll(id="body"):
            if plan.job == "one-partition":
                yield Static(one_partition_words(plan, dry_run=self.dry_run), id="erases")
            elif plan.erases:
                will = "Would be" if self.dry_run else "Will be"
                yield Static(f"[b]{will} erased:[/b] {plan.erases}", classes="warning", id="erases")
            runs = "would run" if self.dry_run else "runs"
            yield Static(
                f"[b]The restore {runs} in this order, with a checkpoint after each:[/b]",
                id="stages-title",
            )
            yield ItemList([(f" {i}.", s.title) for i, s in enumerate(plan.stages, 1)], id="stages")
            if plan.stages and plan.stages[0].name == "table" and plan.job == "full-disk":
                yield Static(TERMS["track0"], classes="hint")
            yield DiskBar("Before", plan_rows(plan, "before"))
            yield DiskBar("After", plan_rows(plan, "after"))
            yield Static("[grey50]░ free space (unallocated)[/grey50]", classes="hint")
            notes = [self._note_words(w) for w in plan.warnings]
            for note in notes:
                yield Static(f"[b]Note:[/b] {note}", classes="warning note")
            if self.offer_ids:
                yield Static(identity_words(plan, self.source_table), id="identity")
            if any(
                w.code in SHARED_ID_CODES | NEW_ID_CODES | {"shared-fs-uuid"} for w in plan.warnings
            ):
                yield Static(TERMS["ids"], classes="hint")
            if self.offer_ids:
                yield Button(f"{new_ids_label(plan)} (n)", id="new-ids")
            if self.grow_offer is not None:
                yield Button(grow_label(plan, self.grow_offer), id="grow")
            yield Label("Now on the disk:", classes="section")
            yield DataTable(id="before-table", cursor_type="none")
            yield Label("After the restore:", classes="section")
            yield DataTable(id="after-table", cursor_type="none")
            yield Static(exact_lines(plan), id="exact")
        yield Static("", id="more", classes="hint")
        with Horizontal(classes="buttons"):
            if self.dry_run:
                # Chosen as a job, the preview goes back to the start; a wizard started for
                # previews only ends there.
                done = "Back to the start" if self.can_restore else "Done"
                yield Button(done, id="done", variant="primary")
                if self.can_restore:
                    yield Button("Restore this now", id="restore-now")
            else:
                yield Button("Continue", id="go", variant="primary")
            yield Button("Exact sectors", id="exact-toggle")
            yield Button("Back", id="back")
        yield Footer()

    def _note_words(self, said: Notice) -> str:
        if said.code == "target-larger" and self.grow_offer is not None:
            return said.text.replace(
                "(a partition can be grown into it later)",
                f"unless you choose “Use the whole disk” (key g), which grows partition "
                f"{self.grow_offer} into it",
            )
        return wizard_words(said, self.plan)

    def on_mount(self) -> None:
        for which in ("before", "after"):
            table = self.query_one(f"#{which}-table", DataTable)
            # Tables to read, not to pick from: the arrow keys scroll the page instead.
            table.can_focus = False
            table.add_columns("#", "Partition", "Size", "What happens")
            for row in plan_rows(self.plan, which):
                table.add_row(*table_cells(row), key=f"{row.start_lba}")
        self.query_one("#exact", Static).display = False
        self.query_one("#done" if self.dry_run else "#go", Button).focus()
        body = self.query_one("#body", VerticalScroll)
        self.watch(body, "scroll_y", lambda _y: self._more_hint(), init=False)
        if self.show_ids:
            self.call_after_refresh(self._scroll_to_ids)
        self.call_after_refresh(self._more_hint)

    def _scroll_to_ids(self) -> None:
        notes = list(self.query(".note"))
        target = notes[-1] if notes else self.query_one("#identity")
        self.query_one("#body", VerticalScroll).scroll_to_widget(target, animate=False, top=True)

    def on_resize(self) -> None:
        self.call_after_refresh(self._more_hint)

    def _more_hint(self) -> None:
        """Say that the page goes on, and how to see the rest, while it does."""
        body = self.query_one("#body", VerticalScroll)
        more = self.query_one("#more", Static)
        if body.scroll_y < body.max_scroll_y:
            notes = len(self.plan.warnings)
            what = "partitions before and after" + (
                f", {notes} note{'s' if notes != 1 else ''}" if notes else ""
            )
            more.update(f"▼ More below: {what}. Press ↓ or PgDn.")
        elif body.max_scroll_y > 0:
            more.update("▲ That is all. PgUp goes back to the top.")
        else:
            more.update("")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "grow":
            return self.grow_offer is not None
        if action == "new_ids":
            return self.offer_ids and not self.plan.new_ids
        if action == "same_ids":
            return self.plan.new_ids
        return True

    def action_scroll(self, how: str) -> None:
        body = self.query_one("#body", VerticalScroll)
        {
            "down": body.scroll_down,
            "up": body.scroll_up,
            "page_down": body.scroll_page_down,
            "page_up": body.scroll_page_up,
            "home": body.scroll_home,
            "end": body.scroll_end,
        }[how](animate=False)

    @on(Button.Pressed, "#exact-toggle")
    def action_exact(self) -> None:
        exact = self.query_one("#exact", Static)
        exact.display = not exact.display
        # The button says what pressing it does now.
        self.query_one("#exact-toggle", Button).label = (
            "Hide sectors" if exact.display else "Exact sectors"
        )
        if exact.display:
            # After the next layout: until then the shown lines have no place to scroll to.
            self.call_after_refresh(
                self.query_one("#body", VerticalScroll).scroll_to_widget,
                exact,
                animate=False,
                top=True,
            )
        self.call_after_refresh(self._more_hint)

    @on(Button.Pressed, "#grow")
    def action_grow(self) -> None:
        if self.grow_offer is not None:
            self.dismiss("no-grow" if self.plan.choices.grow is not None else "grow")

    @on(Button.Pressed, "#new-ids")
    def _ids_pressed(self) -> None:
        self.dismiss("same-ids" if self.plan.new_ids else "new-ids")

    def action_new_ids(self) -> None:
        self.dismiss("new-ids")

    def action_same_ids(self) -> None:
        self.dismiss("same-ids")

    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        self.dismiss("go")

    @on(Button.Pressed, "#restore-now")
    def _restore_now(self) -> None:
        self.dismiss("restore-now")

    @on(Button.Pressed, "#done")
    def _done(self) -> None:
        self.dismiss("done")

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
