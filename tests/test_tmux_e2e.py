"""The demo in a real terminal: tmux runs `restore-tui demo` at 100x30, keys walk a
full-disk restore, and the target image must end up holding the backup's data.

Each screen is awaited by polling `capture-pane` for its text, with a bounded wait;
the tmux session has its own unique name and is always killed at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tui_support import assert_full_restore

REPO = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 90.0

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Terminal:
    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", self.name, *(["-l"] if literal else []), *keys)

    def wait_for(self, *texts: str) -> str:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            shown = self.screen()
            if all(t in shown for t in texts):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"waited for {texts!r}; the terminal shows:\n{shown}")
            time.sleep(0.2)


def table_rows(shown: str) -> list[str]:
    """Disk image names in the order of the target table's rows."""
    names = []
    for line in shown.splitlines():
        words = line.split()
        if words and words[0].endswith(".img") and "·" not in line:
            names.append(words[0])
    return names


def test_demo_full_disk_restore_in_tmux(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    exit_file = tmp_path / "exit-code"
    program = Path(sys.executable).parent / "restore-tui"
    command = (
        f"cd {shlex.quote(str(REPO))} && {shlex.quote(str(program))} demo "
        f"--folder {shlex.quote(str(folder))}; echo $? > {shlex.quote(str(exit_file))}"
    )
    term = Terminal(f"rtui-e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", term.name, "-x", "100", "-y", "30", command],
        check=True,
        env=env,
    )
    try:
        term.wait_for("Step 1 of 8 · Choose the backup", "windows-pc.rtui", "linux-laptop.rtui")
        term.keys("Down")
        term.keys("Enter")
        term.wait_for("Step 2 of 8 · The backup", "System Reserved — Windows boot files")
        term.keys("Enter")  # check the backup first
        term.wait_for("The backup is intact")
        term.keys("Enter")  # Continue
        term.wait_for("Step 3 of 8 · What to do", "Restore the whole disk")
        term.keys("Enter")
        shown = term.wait_for("Step 4 of 8", "new-disk-80MiB.img", "Use this disk")
        rows = table_rows(shown)
        term.keys(*["Down"] * rows.index("new-disk-80MiB.img"))
        term.wait_for("new-disk-80MiB.img · 80.0 MiB")  # the detail follows the cursor
        term.keys("Enter")
        term.wait_for("Step 5 of 8", "Will be erased", "Continue")
        term.keys("Enter")
        term.wait_for("Step 6 of 8", "type the word ERASE")
        term.keys("ERASE", literal=True)
        term.wait_for("Ready: press Enter")
        term.keys("Enter")
        term.wait_for("Step 8 of 8", "is complete", "read back and matched the backup")
        term.keys("Enter")
        deadline = time.monotonic() + WAIT_SECONDS
        while not exit_file.exists() or not exit_file.read_text().strip():
            assert time.monotonic() < deadline, "restore-tui demo did not exit"
            time.sleep(0.2)
        assert exit_file.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", term.name], capture_output=True)
    assert_full_restore(folder / "new-disk-80MiB.img", folder / "windows-pc.rtui")
