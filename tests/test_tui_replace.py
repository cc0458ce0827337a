"""The wizard's fourth job: put one partition back as it was, over its counterpart.

On the demo: the Windows disk that was backed up has partition 2 (C:) changed since;
"Put one partition back as it was", that disk, partition 2 (preselected, with why it is
the counterpart), the preview, the confirmation, the restore. Partition 2 is the
backed-up one again; every other byte of the disk is as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_tui_flow import SIZE, built_demo, demo, pick_target, to_job
from tui_support import cut_widgets, header, on_screen, read, screen_text, wizard

from archive import open_archive
from archive.digest import chunk_matches
from restore_tui.demo import DemoSetup
from restore_tui.screens.confirm import ConfirmScreen
from restore_tui.screens.end import DoneScreen
from restore_tui.screens.preview import PreviewScreen
from restore_tui.screens.replace import ReplaceScreen

pytestmark = pytest.mark.asyncio
__all__ = ["built_demo", "demo"]


def own_copy(path: Path) -> Path:
    """The clone links the backed-up disk to the shared demo: make it this test's own."""
    real = path.resolve()
    path.unlink()
    shutil.copyfile(real, path)
    return path


async def test_partition_2_goes_back_over_itself(demo: DemoSetup) -> None:
    disk = own_copy(demo.windows.path)
    with open_archive(demo.windows_archive) as arc:
        chunk = max(
            (c for c in arc.manifest.image(2).chunks if c.kind == "data"), key=lambda c: c.length
        )
    changed_at = chunk.offset + chunk.length // 2
    with open(disk, "r+b") as f:  # C: changed since the backup (a bad update)
        f.seek(changed_at)
        f.write(b"\xee" * 4096)
    before = disk.read_bytes()
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await to_job(pilot, demo.windows_archive)
        await pilot.press("down", "down", "down", "enter")  # "Put one partition back"
        target = await pick_target(pilot, disk)
        assert header(target) == "Step 4 of 9 · The target disk"
        choose = await on_screen(pilot, ReplaceScreen)
        assert isinstance(choose, ReplaceScreen)
        assert header(choose) == "Step 5 of 9 · Which partition"
        assert not cut_widgets(choose), cut_widgets(choose)
        shown = screen_text(choose) + "".join(
            str(choose.query_one("#replace-parts").get_option_at_index(i).prompt)  # type: ignore[attr-defined]
            for i in range(len(choose.choices))
        )
        assert "replaces partition 2 here" in shown and "the same NTFS serial number" in shown
        await pilot.press("enter")  # partition 2 (the system partition) is preselected
        preview = await on_screen(pilot, PreviewScreen)
        assert isinstance(preview, PreviewScreen)
        assert "Everything now in partition 2" in screen_text(preview)
        assert not cut_widgets(preview), cut_widgets(preview)
        await pilot.press("enter")
        confirm = await on_screen(pilot, ConfirmScreen)
        assert isinstance(confirm, ConfirmScreen)
        # The last check says what is erased, never "only free space is used".
        last_check = screen_text(confirm)
        assert "Everything now in partition 2" in last_check and "cannot be undone" in last_check
        assert "free space" not in last_check
        await pilot.press(*confirm.wanted.word, "enter")
        done = await on_screen(pilot, DoneScreen)
        assert "holds what it held when the backup was made" in screen_text(done)
        await pilot.press("enter")
    assert app.return_value == 0
    after = disk.read_bytes()
    with open_archive(demo.windows_archive) as arc:
        image = arc.manifest.image(2)
        p2 = arc.manifest.table.partition(2)
        for c in image.chunks:
            if c.kind == "data":
                got = read(disk, c.offset, c.length)
                assert chunk_matches(c, got), f"partition 2 differs at byte {c.offset}"
    lo, hi = p2.start_lba * 512, p2.stop_lba * 512
    assert after[:lo] == before[:lo] and after[hi:] == before[hi:]
    assert after[changed_at : changed_at + 4096] != b"\xee" * 4096
