"""Step 5 of the one-partition job: which partition from the backup, into which free space.

Each free region of the target says whether the chosen partition fits (after the
1 MiB alignment new partitions get); a region that is too small cannot be picked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Label, Static

from archive.manifest import ArchiveManifest, Role
from archive.roles import plain_name
from layout.models import FreeRegion, Partition
from layout.probe import ProbedDisk
from restore_tui.matching import room_in
from restore_tui.screens.common import TERMS, Step, StepHeader, human_size


@dataclass(frozen=True)
class PartitionChoice:
    number: int
    region: FreeRegion


PartitionResult = PartitionChoice | Literal["back"]


def fits(partition: Partition, region: FreeRegion) -> bool:
    return room_in(region) >= partition.length_lba


def region_key(region: FreeRegion) -> str:
    return f"{region.start_lba}+{region.length_lba}{'e' if region.inside_extended else ''}"


class PartitionScreen(Screen[PartitionResult]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self, step: Step, manifest: ArchiveManifest, target: ProbedDisk, *, dry_run: bool = False
    ) -> None:
        super().__init__()
        self.step = step
        self.manifest = manifest
        self.target = target
        self.dry_run = dry_run
        self.regions = {region_key(r): r for r in target.free}
        self.partitions = {
            str(p.number): p for p in manifest.table.partitions if p.kind != "extended"
        }

    def compose(self) -> ComposeResult:
        yield StepHeader(
            self.step,
            "Pick the partition to restore, then the free space on "
            f"{self.target.headline} to put it in.",
            dry_run=self.dry_run,
        )
        yield Label("From the backup:", classes="section")
        yield DataTable(id="source-parts", cursor_type="row")
        yield Static("", id="part-detail")
        yield Label("Free space on the target disk:", classes="section")
        yield DataTable(id="regions", cursor_type="row")
        hints = [TERMS["free"]]
        if any(r.inside_extended for r in self.target.free):
            hints.append(TERMS["extended"])
        yield Static("\n".join(hints), id="fit-status", classes="hint")
        with Horizontal(classes="buttons"):
            yield Button("Put it here", id="use", variant="primary")
            yield Button("Back", id="back")
        yield Footer()

    def _role(self, number: int) -> str:
        try:
            return plain_name(
                self.manifest.image(number).role,
                self.manifest.table.partition(number).filesystem,
            )
        except KeyError:
            return plain_name(Role.DATA)

    def on_mount(self) -> None:
        parts = self.query_one("#source-parts", DataTable)
        parts.add_columns("#", "What it is", "Size")
        ss = self.manifest.table.sector_size
        for key, p in self.partitions.items():
            parts.add_row(key, self._role(p.number), human_size(p.length_lba * ss), key=key)
        regions = self.query_one("#regions", DataTable)
        regions.add_column("Where", key="where")
        regions.add_column("Size", key="size")
        regions.add_column("Fits?", key="fits")
        # The system partition (C:) is what people restore on its own most often.
        system = next(
            (
                i
                for i, p in enumerate(self.partitions.values())
                if self._is_system(p.number)
            ),
            0,
        )
        parts.move_cursor(row=system)
        parts.focus()
        self._fill_regions()

    def _is_system(self, number: int) -> bool:
        try:
            return self.manifest.image(number).role is Role.SYSTEM
        except KeyError:
            return False

    def _chosen_partition(self) -> Partition | None:
        table = self.query_one("#source-parts", DataTable)
        if not self.partitions:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.partitions.get(key or "")

    def _describe(self, partition: Partition | None) -> None:
        """The highlighted partition's label, filesystem and use (its role is in the table)."""
        text = ""
        if partition is not None:
            ss = self.manifest.table.sector_size
            label = f"label “{partition.label}”" if partition.label else ""
            bits = [partition.filesystem or "", label]
            try:
                used = self.manifest.image(partition.number).used_bytes
            except KeyError:
                used = None
            size = human_size(partition.length_lba * ss)
            bits.append(f"{size}, {human_size(used)} used" if used is not None else size)
            text = f"Partition {partition.number} of the backup: " + ", ".join(b for b in bits if b)
        self.query_one("#part-detail", Static).update(escape(text))

    def _fill_regions(self) -> None:
        partition = self._chosen_partition()
        self._describe(partition)
        regions = self.query_one("#regions", DataTable)
        regions.clear()
        for key, r in self.regions.items():
            ok = partition is not None and fits(partition, r)
            where = f"{human_size(r.start_lba * r.sector_size)} from the start"
            if r.inside_extended:
                where += " (inside the extended partition)"
            verdict = "fits" if ok else "too small"
            style = "" if ok else "dim"
            regions.add_row(
                Text(where, style=style),
                Text(human_size(room_in(r) * r.sector_size), style=style),
                Text(verdict, style="bold" if ok else "dim"),
                key=key,
            )
        if not self.regions:
            self._status("This disk has no free space. Go Back and choose another disk.")

    def _status(self, text: str) -> None:
        self.query_one("#fit-status", Static).update(text)

    @on(DataTable.RowHighlighted, "#source-parts")
    def _partition_moved(self) -> None:
        self._fill_regions()

    @on(DataTable.RowSelected, "#source-parts")
    def _partition_picked(self) -> None:
        self.query_one("#regions", DataTable).focus()

    @on(DataTable.RowSelected, "#regions")
    def _region_picked(self, event: DataTable.RowSelected) -> None:
        self._choose(event.row_key.value)

    @on(Button.Pressed, "#use")
    def _use(self) -> None:
        regions = self.query_one("#regions", DataTable)
        if not self.regions:
            return
        self._choose(regions.coordinate_to_cell_key(regions.cursor_coordinate).row_key.value)

    def _choose(self, key: str | None) -> None:
        partition = self._chosen_partition()
        region = self.regions.get(key or "")
        if partition is None or region is None:
            return
        if not fits(partition, region):
            ss = self.manifest.table.sector_size
            self._status(
                f"Partition {partition.number} ({self._role(partition.number)}) needs "
                f"{human_size(partition.length_lba * ss)}; "
                f"that free space holds only {human_size(room_in(region) * region.sector_size)}. "
                "Pick a larger free space or another disk."
            )
            return
        self.dismiss(PartitionChoice(partition.number, region))

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
