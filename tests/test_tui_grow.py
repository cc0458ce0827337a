"""The preview of a whole-disk restore onto a larger disk offers to use the whole disk:
`g` plans again with the last partition grown, and the restore grows it (ntfsresize on
exactly that partition). Root: the tool runs on a loop device over the partition."""

from __future__ import annotations

import os
import shutil

import pytest
from test_tui_flow import SIZE, built_demo, demo, pick_target, to_job
from tui_support import cut_widgets, on_screen, screen_text, wizard

from layout.blockio import DiskReader
from layout.table_io import read_table
from restore_tui.demo import DemoSetup
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen
from restore_tui.screens.preview import PreviewScreen

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ntfsresize") is None,
        reason="growing NTFS runs ntfsresize on a loop device: needs root and ntfs-3g",
    ),
]
__all__ = ["built_demo", "demo"]


async def test_g_grows_the_last_partition_into_the_larger_disk(demo: DemoSetup) -> None:
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("enter")
        await pick_target(pilot, demo.new_disk)  # 80 MiB for a 64 MiB backup
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert preview.grow_offer == 2 and preview.plan.choices.grow is None
        assert "grow partition 2 into the extra space" in screen_text(preview)
        await pilot.press("g")
        await pilot.pause()
        grown = await on_screen(pilot, PreviewScreen)
        assert isinstance(grown, PreviewScreen) and grown is not preview
        assert grown.plan.choices.grow == 2
        said = screen_text(grown)
        assert "Leave the extra space unallocated" in said and "ntfsresize" in said
        assert not cut_widgets(grown), cut_widgets(grown)
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        await pilot.press(*confirm.wanted.word, "enter")
        await on_screen(pilot, DoneScreen)
        await pilot.press("enter")
    assert app.return_value == 0
    with DiskReader(str(demo.new_disk)) as r:
        parsed = read_table(r.read, r.size, 512)
    assert parsed is not None
    p2 = parsed.table.partition(2)
    assert p2.stop_lba == os.path.getsize(demo.new_disk) // 512  # to the disk's end
