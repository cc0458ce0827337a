"""Step 2's "Look inside": the backup's partitions as folders, a file copied out.

As root with FUSE (the backup is mounted read-only through restore-tui's own server):
the demo's Linux backup opened from step 2 with `l`, its ext4 data partition opened,
one file copied out to a folder; the copy is the file that was backed up, and leaving
the screen leaves nothing mounted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_tui_flow import SIZE, built_demo, choose_backup, demo
from textual.pilot import Pilot
from textual.widgets import Input, Tree
from textual.widgets.tree import TreeNode
from tui_support import cut_widgets, on_screen, until, wizard

from layout.probe import read_mounts
from restore_tui.demo import DemoSetup
from restore_tui.screens.backup import BackupScreen
from restore_tui.screens.inside import CopyTo, LookInsideScreen


async def cursor_on(pilot: Pilot[object], tree: Tree[Path], node: TreeNode[Path]) -> None:
    """Put the tree's cursor on ``node``. ``Tree.move_cursor`` goes by the line the node had
    when the tree last laid out its lines, and a node just added has none until the tree
    is idle or asked for its lines: until then the cursor lands on the first line (a whole
    partition) instead, so try again until it is on ``node``."""

    def there() -> bool:
        if tree.cursor_node is not node:  # reading cursor_node lays the lines out
            tree.move_cursor(node)
        return tree.cursor_node is node

    await until(pilot, there, f"the cursor on {node.label}")


pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
        reason="looking inside mounts the backup through FUSE: needs root and /dev/fuse",
    ),
]
__all__ = ["built_demo", "demo"]


def our_mounts() -> list[str]:
    return [m.mount_point for m in read_mounts() if m.mount_point.startswith("/run/restore-tui")]


async def test_a_file_is_copied_out_of_the_backup(demo: DemoSetup, tmp_path: Path) -> None:
    before = our_mounts()
    # A file the sample put in the Linux laptop's root partition (ext4), two folders down.
    number, path = 2, "etc/hostname"
    data = demo.linux.files[number][path]
    *folders, name = path.split("/")
    dest = tmp_path / "copied"
    dest.mkdir()
    app = wizard(demo)
    async with app.run_test(size=SIZE) as pilot:
        await choose_backup(pilot, demo.linux_archive)
        await on_screen(pilot, BackupScreen)
        await pilot.press("l")
        inside = await on_screen(pilot, LookInsideScreen)
        assert isinstance(inside, LookInsideScreen)
        tree: Tree[Path] = inside.query_one("#inside-tree", Tree)
        await until(pilot, lambda: bool(tree.root.children), "the partitions to be listed")
        assert not cut_widgets(inside), cut_widgets(inside)
        node = next(n for n in tree.root.children if str(n.label).startswith(f"{number}-"))
        for step in ["", *folders]:
            if step:
                node = next(n for n in node.children if str(n.label) == f"{step}/")
            node.expand()
            await until(pilot, lambda n=node: bool(n.children), f"{step or number} opened")
        leaf = next(n for n in node.children if str(n.label).startswith(f"{name}  ("))
        await cursor_on(pilot, tree, leaf)
        await pilot.press("c")
        ask = await on_screen(pilot, CopyTo)
        ask.query_one("#dest", Input).value = str(dest)
        ask.query_one("#copy").press()  # type: ignore[attr-defined]
        await on_screen(pilot, LookInsideScreen)
        await until(pilot, lambda: bool(inside.copied), "the copy")
        assert (dest / name).read_bytes() == data
        await pilot.press("escape")
        await on_screen(pilot, BackupScreen)
        await pilot.press("ctrl+q")
    assert our_mounts() == before  # nothing left mounted
