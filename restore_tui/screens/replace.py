"""Step 5 of the replace job: which backed-up partition goes back over its counterpart.

Each partition of the backup says which partition of the chosen disk it would replace
and why that one (the same filesystem UUID, the same place and size, …), or that it is
not on this disk, or that the partition there is too small — found by what the
partitions are (restore_tui.counterpart), never by their numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, OptionList, Static
from textual.widgets.option_list import Option

from archive.manifest import ArchiveManifest, Role
from archive.roles import plain_name
from layout.probe import ProbedDisk
from restore_tui.counterpart import CounterpartError, find_counterpart, size_words
from restore_tui.screens.common import Step, StepHeader, human_size

ReplaceResult = int | Literal["back"]


@dataclass(frozen=True)
class Choice:
    """One backed-up partition, and what it would replace on the disk (or why not)."""

    number: int
    words: str
    detail: str
    usable: bool
    role: Role


def choices_for(manifest: ArchiveManifest, disk: ProbedDisk) -> list[Choice]:
    ss = manifest.table.sector_size
    out: list[Choice] = []
    for src in manifest.table.data_partitions:
        try:
            role = manifest.image(src.number).role
        except KeyError:
            continue  # not stored: nothing to put back
        label = f" “{src.label}”" if src.label else ""
        words = (
            f"Partition {src.number}: {plain_name(role, src.filesystem)}{label}, "
            f"{human_size(src.length_lba * ss)}"
        )
        try:
            found = find_counterpart(src, disk.table, disk.headline)
        except CounterpartError as exc:
            out.append(Choice(src.number, words, f"   not on this disk: {exc}", False, role))
            continue
        cp = found.partition
        too_small = size_words(src, cp, ss)
        held = " ".join(x for x in (cp.filesystem, cp.label and f"“{cp.label}”") if x)
        here = f"partition {cp.number} here ({held}, {human_size(cp.length_lba * ss)})"
        if too_small:
            out.append(Choice(src.number, words, f"   cannot replace {here}: {too_small}", False,
                              role))  # fmt: skip
            continue
        detail = f"   replaces {here}: {', '.join(found.reasons)}"
        out.append(Choice(src.number, words, detail, True, role))
    return out


class ReplaceScreen(Screen[ReplaceResult]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(
        self, step: Step, manifest: ArchiveManifest, target: ProbedDisk, *, dry_run: bool = False
    ) -> None:
        super().__init__()
        self.step = step
        self.target = target
        self.dry_run = dry_run
        self.choices = choices_for(manifest, target)

    def compose(self) -> ComposeResult:
        yield StepHeader(
            self.step,
            f"Which partition should go back as it was in the backup? It replaces the same "
            f"partition on {self.target.headline}; every other partition stays as it is.",
            dry_run=self.dry_run,
        )
        yield OptionList(
            *(
                Option(f"{c.words}\n{c.detail}", id=f"part-{c.number}", disabled=not c.usable)
                for c in self.choices
            ),
            id="replace-parts",
        )
        yield Static(
            "Only a partition found on this disk by what it is (its filesystem's serial "
            "number or UUID, its place and size) can be replaced.",
            classes="hint",
        )
        with Horizontal(classes="buttons"):
            yield Button("Replace it", id="use", variant="primary")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        options = self.query_one("#replace-parts", OptionList)
        usable = [i for i, c in enumerate(self.choices) if c.usable]
        # The system partition (C:) is what people put back most often.
        system = [i for i in usable if self.choices[i].role is Role.SYSTEM]
        if usable:
            options.highlighted = (system or usable)[0]
        else:
            self.query_one("#use", Button).disabled = True
        options.focus()

    def _chosen(self) -> int | None:
        index = self.query_one("#replace-parts", OptionList).highlighted
        if index is None or not self.choices[index].usable:
            return None
        return self.choices[index].number

    @on(OptionList.OptionSelected, "#replace-parts")
    @on(Button.Pressed, "#use")
    def _use(self) -> None:
        number = self._chosen()
        if number is not None:
            self.dismiss(number)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss("back")
