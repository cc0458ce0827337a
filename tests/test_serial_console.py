"""On a serial console (the rescue image's ttyS0) text fields do not blink: each blink
redraws the field, which floods a 115200-baud line."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

import restore_tui.screens.common as common
from restore_tui.screens.common import TextField

pytestmark = pytest.mark.asyncio


class OneField(App[None]):
    def compose(self) -> ComposeResult:
        yield TextField(placeholder="type here")


@pytest.mark.parametrize("serial", [True, False])
async def test_a_field_blinks_only_off_a_serial_line(
    monkeypatch: pytest.MonkeyPatch, serial: bool
) -> None:
    monkeypatch.setattr(common, "on_serial_console", lambda: serial)
    app = OneField()
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.query_one(TextField).cursor_blink is (not serial)

