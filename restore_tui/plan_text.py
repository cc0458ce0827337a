"""The before/after preview of a restore plan: rows, proportional bars and the full text.

Rows and bar segments are plain data so the TUI draws the same picture as
``plan`` prints; ``render_text`` needs nothing but the plan itself.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from archive.manifest import Role
from archive.roles import infer_role, plain_name
from layout.gaps import MiB, usable_area
from layout.models import Partition, PartitionTable
from layout.plan import Action, GrowFilesystem, Plan, Stage
from layout.probe import disk_headline
from restore_tui.planner import human_size

Status = Literal["kept", "replaced", "created", "unallocated"]
BAR_WIDTH = 60
# Text fits an 80-column rescue console (the --exact extras may run wider).
TEXT_WIDTH = 78
LABEL_WIDTH = 16


@dataclass(frozen=True)
class LayoutRow:
    """One line of a layout table: a partition or a stretch of unallocated space."""

    number: int | None  # None: unallocated
    kind: Literal["primary", "extended", "logical", "free"]
    name: str
    label: str | None
    filesystem: str | None
    start_lba: int
    length_lba: int
    sector_size: int
    status: Status

    @property
    def end_lba(self) -> int:
        return self.start_lba + self.length_lba - 1

    @property
    def size_bytes(self) -> int:
        return self.length_lba * self.sector_size

    @property
    def symbol(self) -> str:
        """The character that draws this row in the bar."""
        if self.number is None:
            return "."
        if self.number < 10:
            return str(self.number)
        return chr(ord("a") + (self.number - 10) % 26)


@dataclass(frozen=True)
class BarSegment:
    symbol: str
    columns: int
    row: LayoutRow


def _gaps(
    taken: Sequence[tuple[int, int]], start: int, stop: int, min_lba: int
) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    cursor = start
    for a, b in sorted(taken):
        if a > cursor:
            spans.append((cursor, min(a, stop)))
        cursor = max(cursor, b)
    if cursor < stop:
        spans.append((cursor, stop))
    return [(a, b) for a, b in spans if b - a >= min_lba]


def _partition_row(
    p: Partition,
    table: PartitionTable,
    status: Status,
    on_disk_now: bool,
    roles_from: PartitionTable | None = None,
) -> LayoutRow:
    # A partition already on the target may be anything: no guessing that the largest
    # one is a system (his 'photos' partition is not), only what its type and label say.
    # Partitions kept by the plan (or replaced in place) are the target's own, in the
    # after-layout too: one way of naming them in both tables.
    on_disk_now = on_disk_now or status in ("kept", "replaced")
    # A grown partition keeps the role it had at its backed-up size.
    judged, among = (roles_from.partition(p.number), roles_from) if roles_from else (p, table)
    role, _evidence = infer_role(judged, among, guess_system=not on_disk_now)
    name = plain_name(role, p.filesystem)
    if on_disk_now and role is Role.DATA:
        name = held_now(p)
    kind: Literal["primary", "extended", "logical"] = p.kind
    return LayoutRow(
        number=p.number, kind=kind, name=name,
        label=p.label or p.gpt_name or None,
        filesystem=p.filesystem, start_lba=p.start_lba, length_lba=p.length_lba,
        sector_size=table.sector_size, status=status,
    )


FS_WORDS = {"ntfs": "NTFS", "vfat": "FAT", "exfat": "exFAT", "swap": "swap"}


def held_now(p: Partition) -> str:
    """What a partition on the target holds now, by its filesystem alone: "NTFS partition",
    "ext4 partition" — neither "System" nor "your files", which would be guesses."""
    if not p.filesystem:
        return "Unknown contents"
    return f"{FS_WORDS.get(p.filesystem, p.filesystem)} partition"


def _free_row(start: int, stop: int, sector_size: int, name: str) -> LayoutRow:
    return LayoutRow(
        number=None, kind="free", name=name, label=None, filesystem=None, start_lba=start,
        length_lba=stop - start, sector_size=sector_size, status="unallocated",
    )


def layout_rows(
    table: PartitionTable | None,
    disk_size_lba: int,
    sector_size: int,
    statuses: Mapping[int, Status] | None = None,
    default_status: Status = "kept",
    *,
    on_disk_now: bool = False,
    roles_from: PartitionTable | None = None,
) -> list[LayoutRow]:
    """Partitions and unallocated space (1 MiB or more) in disk order.

    ``on_disk_now``: the table is what the target holds now (named only by what its
    types and labels say), not the backed-up layout.

    Logical partitions follow their extended container; free space inside the
    container is listed there too, since only a logical partition can use it.
    """
    min_lba = max(1, MiB // sector_size)
    first, stop = usable_area(table, disk_size_lba, sector_size)
    if table is None:
        return [
            _free_row(first, stop, sector_size, "Unallocated (no partition table)")
            for first, stop in _gaps((), first, stop, min_lba)
        ]
    statuses = statuses or {}
    rows: list[LayoutRow] = []
    top = sorted((p for p in table.partitions if p.kind != "logical"), key=lambda p: p.start_lba)
    free_top = _gaps([(p.start_lba, p.stop_lba) for p in top], first, stop, min_lba)
    items: list[tuple[int, int, LayoutRow]] = [
        (a, 1, _free_row(a, b, sector_size, "Unallocated")) for a, b in free_top
    ]
    for p in top:
        status = statuses.get(p.number, default_status)
        items.append(
            (p.start_lba, 0, _partition_row(p, table, status, on_disk_now, roles_from))
        )
        # (A kept partition is one the target holds now: _partition_row names it so.)
        if p.kind == "extended":
            logicals = sorted(
                (q for q in table.partitions if q.kind == "logical"), key=lambda q: q.start_lba
            )
            inner: list[tuple[int, int, LayoutRow]] = [
                (
                    q.start_lba,
                    0,
                    _partition_row(
                        q, table, statuses.get(q.number, default_status), on_disk_now,
                        roles_from,
                    ),
                )
                for q in logicals
            ]
            # The EBR sector before each logical is not free space worth showing.
            taken = [(q.start_lba - 1, q.stop_lba) for q in logicals]
            inner += [
                (a, 1, _free_row(a, b, sector_size, "Unallocated, inside the extended partition"))
                for a, b in _gaps(taken, p.start_lba + 1, min(p.stop_lba, stop), min_lba)
            ]
            # Keep the container's contents right after it, in their own disk order.
            items += [(p.start_lba, 1 + i, row) for i, (_s, _o, row) in enumerate(sorted(
                inner, key=lambda t: (t[0], t[1])))]
    items.sort(key=lambda t: (t[0], t[1]))
    rows = [row for _s, _o, row in items]
    return rows


def bar_segments(rows: Sequence[LayoutRow], width: int = BAR_WIDTH) -> list[BarSegment]:
    """Columns per row, proportional to size, at least one each (largest remainder)."""
    drawn = [r for r in rows if r.kind != "extended"]
    if not drawn:
        return []
    width = max(width, len(drawn))
    total = sum(r.length_lba for r in drawn)
    spare = width - len(drawn)
    exact = [r.length_lba * spare / total for r in drawn]
    columns = [1 + int(x) for x in exact]
    leftover = width - sum(columns)
    order = sorted(range(len(drawn)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    for i in order[:leftover]:
        columns[i] += 1
    return [BarSegment(r.symbol, c, r) for r, c in zip(drawn, columns, strict=True)]


def render_bar(segments: Sequence[BarSegment]) -> str:
    return "|" + "".join(s.symbol * s.columns for s in segments) + "|"


def plan_statuses(plan: Plan) -> tuple[dict[int, Status], dict[int, Status]]:
    """Status of each partition number before and after the plan."""
    before = plan.before.partitions if plan.before is not None else ()
    if plan.job == "full-disk":
        return (
            {p.number: "replaced" for p in before},
            {p.number: "created" for p in plan.after.partitions},
        )
    if plan.job == "replace-partition":
        replaced = replaced_partition(plan)
        return (
            {p.number: "replaced" if p.number == replaced else "kept" for p in before},
            {
                p.number: "replaced" if p.number == replaced else "kept"
                for p in plan.after.partitions
            },
        )
    kept = set(before)
    return (
        {p.number: "kept" for p in before},
        {p.number: "kept" if p in kept else "created" for p in plan.after.partitions},
    )


def replaced_partition(plan: Plan) -> int | None:
    """The partition of the target a replace plan puts the backed-up version over."""
    for w in plan.warnings:
        if w.code == "counterpart-found":
            return int(w.params["partition"])
    return None


def plan_rows(plan: Plan, which: Literal["before", "after"]) -> list[LayoutRow]:
    """The target's layout now or after the plan, with what happens to each partition:
    what the wizard's tables and bars and `plan`'s text both show."""
    ident = plan.target.identity
    ss = ident.logical_sector_size
    before_status, after_status = plan_statuses(plan)
    if which == "before":
        default: Status = "replaced" if plan.job == "full-disk" else "kept"
        return layout_rows(
            plan.before, ident.size_bytes // ss, ss, before_status, default, on_disk_now=True
        )
    return layout_rows(
        plan.after, ident.size_bytes // ss, ss, after_status, "kept", roles_from=_ungrown(plan)
    )


def _ungrown(plan: Plan) -> PartitionTable | None:
    """The after-table with grown partitions at their backed-up sizes (None: none grows)."""
    grown = {
        a.offset: a.from_length
        for s in plan.stages
        for a in s.actions
        if isinstance(a, GrowFilesystem)
    }
    if not grown:
        return None
    ss = plan.after.sector_size
    fields = plan.after.model_dump()
    for p in fields["partitions"]:
        if p["start_lba"] * ss in grown:
            p["length_lba"] = grown[p["start_lba"] * ss] // ss
    return PartitionTable.model_validate(fields)


def _table_heading(table: PartitionTable | None) -> str:
    if table is None:
        return "no partition table"
    if table.scheme == "gpt":
        return f"GPT, disk GUID {table.gpt_disk_guid}"
    return f"MBR, disk signature {table.mbr_signature or 'none'}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _row_cells(row: LayoutRow, exact: bool) -> list[str]:
    indent = "  " if row.kind == "logical" or "inside the extended" in row.name else ""
    cells = [
        row.symbol if row.number is not None else "-",
        # The short name ("System", "Data"); the explanation after the dash is in the steps.
        indent + ("Free space (in extended)" if indent and row.kind == "free"
                  else row.name.split(" — ")[0]),
        _clip(row.label or "", LABEL_WIDTH),
        row.filesystem or "",
        human_size(row.size_bytes),
        row.status,
    ]
    if exact:
        cells.append(f"sectors {row.start_lba}-{row.end_lba}")
    return cells


def render_layout(
    title: str, table: PartitionTable | None, rows: Sequence[LayoutRow], exact: bool = False
) -> list[str]:
    """A heading, the proportional bar, and one aligned line per row."""
    header = ["#", "What", "Label", "Files", "Size", "Status"]
    if exact:
        header.append("Where")
    table_cells = [header, *(_row_cells(row, exact) for row in rows)]
    widths = [max(len(cells[i]) for cells in table_cells) for i in range(len(header))]
    right = {0, 4}  # numbers and sizes line up on the right

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return ("  " + "  ".join(padded)).rstrip()

    lines = [f"{title} ({_table_heading(table)}):", "  " + render_bar(bar_segments(rows))]
    lines += [line(cells) for cells in table_cells]
    return lines


def _action_line(action: Action) -> str:
    what = {"write-bytes": "write", "restore-area": "restore", "zero": "zero",
            "grow-filesystem": "grow"}[action.kind]  # fmt: skip
    source = ""
    if action.kind == "restore-area":
        area = "track 0" if action.area == "track0" else f"backed-up partition {action.area}"
        source = f" from {area} at byte {action.source_offset}"
    return (
        f"       {what:<7} bytes {action.offset}-{action.stop - 1} "
        f"({action.length} bytes){source}: {action.description}"
    )


def _stage_size(stage: Stage) -> str:
    table = sum(a.length for a in stage.actions if a.kind in ("write-bytes", "zero"))
    data = sum(a.length for a in stage.actions if a.kind == "restore-area")
    parts = [
        f"the filesystem's own tool works on the partition only ({human_size(a.length)})"
        for a in stage.actions
        if a.kind == "grow-filesystem"
    ]
    if data:
        parts.append(f"restores up to {human_size(data)} from the backup")
    if table:
        parts.append(f"writes {human_size(table)} of table and boot data")
    return "; ".join(parts)


_SIZE = re.compile(r"(\d) (bytes|KiB|MiB|GiB|TiB|PiB)\b")


def _wrap(text: str, first: str, rest: str) -> list[str]:
    # textwrap breaks only at ASCII spaces: a no-break space keeps "600 MiB" on one line.
    glued = _SIZE.sub("\\1\u00a0\\2", text)
    lines = textwrap.wrap(glued, TEXT_WIDTH, initial_indent=first, subsequent_indent=rest)
    return [line.replace("\u00a0", " ") for line in lines] or [first.rstrip()]


def render_text(plan: Plan, exact: bool = False) -> str:
    """The whole preview as text: target, before, after, what is destroyed, steps, warnings."""
    ident = plan.target.identity
    job = {
        "full-disk": "the whole disk",
        "one-partition": "one partition into free space",
        "replace-partition": "one partition over its counterpart",
    }[plan.job]
    lines = [
        f"Restore plan: {job}. Nothing has been written yet.",
        f"Backup: {plan.archive.path}",
        f"Target: {disk_headline(ident, plan.target.name)}",
        f"        {plan.target.device} "
        + ("(a disk image file)" if ident.bus == "image" else
           "now (a /dev name can change between boots)"),
        "",
    ]
    lines += render_layout("Before", plan.before, plan_rows(plan, "before"), exact)
    lines.append("")
    lines += render_layout("After", plan.after, plan_rows(plan, "after"), exact)
    lines.append("")
    lines.append("What will be destroyed:")
    lines += _wrap(plan.erases, "  ", "  ")
    lines.append("")
    lines.append("Steps, in order (progress is saved after each one):")
    for index, stage in enumerate(plan.stages, start=1):
        lines += _wrap(stage.title, f"  {index}. ", "     ")
        lines += _wrap(_stage_size(stage), "     ", "     ")
        if exact:
            lines += [_action_line(a) for a in stage.actions]
    if plan.warnings:
        lines.append("")
        lines.append("Warnings:")
        for warning in plan.warnings:
            lines += _wrap(warning.text, "  ! ", "    ")
    return "\n".join(lines) + "\n"
