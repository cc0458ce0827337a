"""The check the screen tests rely on finds cut lines: a row of buttons wider than the
screen, an ellipsis, a table wider than its place — and lets wrapped text pass."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, DataTable, Label, Static
from tui_support import cut_widgets

pytestmark = pytest.mark.asyncio
LONG = "a sentence long enough to need two or three lines at forty columns of width"


class Screenful(App[None]):
    def __init__(self, make: Callable[[], list[Widget]]) -> None:
        super().__init__()
        self.make = make

    def compose(self) -> ComposeResult:
        yield from self.make()


async def cuts(make: Callable[[], list[Widget]]) -> list[str]:
    app = Screenful(make)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        return cut_widgets(app.screen)


async def test_wrapped_text_is_not_cut() -> None:
    assert await cuts(lambda: [Static(LONG), Button("Short")]) == []


def buttons() -> list[Widget]:
    row = Horizontal(Button("Check the backup first"), Button("Continue without it"))
    row.styles.height = "auto"
    return [row]


async def test_buttons_past_the_edge_are_found() -> None:
    found = await cuts(buttons)
    assert any("is clipped at the side" in f for f in found), found


def ellipsis() -> list[Widget]:
    label = Label(LONG)
    label.styles.text_wrap = "nowrap"
    label.styles.text_overflow = "ellipsis"
    label.styles.width = "100%"
    return [label]


async def test_an_ellipsis_is_found() -> None:
    found = await cuts(ellipsis)
    assert any("cuts its text" in f for f in found), found


def wide_table() -> list[Widget]:
    table: DataTable[str] = DataTable()
    table.add_columns("What happens to it", "Where it goes on the disk")
    table.add_row(LONG, LONG)
    return [table]


async def test_a_table_wider_than_its_place_is_found() -> None:
    found = await cuts(wide_table)
    assert found, "a 150-column table in 40 columns"
