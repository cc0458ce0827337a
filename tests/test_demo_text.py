"""`restore-tui demo --no-tui`: the walk-through as text, for machines without a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from restore_tui.cli import main


def test_demo_walk_through_as_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "demo"
    assert main(["demo", "--no-tui", "--folder", str(folder)]) == 0
    out = capsys.readouterr().out
    # The backed-up disk is recognised by identity, the small one refused with the reason.
    assert "1. windows-pc-disk.img · 64.0 MiB · image file — the backed-up disk" in out
    assert "• same disk signature 7490A9A7 as the backed-up disk" in out
    assert "small-disk-32MiB.img · 32.0 MiB · image file — cannot be the target" in out
    assert "✗ too small" in out
    # Evidence against is not ticked as if it were in favour.
    assert "✓ nothing links" not in out and "✓ no strong evidence" not in out
    assert "Nothing was written" in out
    images = sorted(folder.glob("*.img"))
    assert len(images) == 5 and len(sorted(folder.glob("*.rtui"))) == 2


def test_a_rebuilt_demo_folder_does_not_offer_a_stale_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --folder DIR` again rebuilds the disks: a restore record left there would
    offer to resume onto disks it never wrote, so it goes, and the demo says so."""
    folder = tmp_path / "demo"
    assert main(["demo", "--no-tui", "--folder", str(folder)]) == 0
    stale = folder / "windows-pc.rtui.restore-journal.json"
    stale.write_text("{}")
    capsys.readouterr()
    assert main(["demo", "--no-tui", "--folder", str(folder)]) == 0
    assert not stale.exists()
    assert "this demo starts afresh" in capsys.readouterr().err


def test_only_an_unfinished_record_is_called_unfinished(tmp_path: Path) -> None:
    """Rebuilding the demo removes old restore records; it says 'unfinished' only of one."""
    from restore_tui.demo import _finished

    done = tmp_path / "a.restore-journal.json"
    done.write_text('{"finished": true}')
    stopped = tmp_path / "b.restore-journal.json"
    stopped.write_text('{"finished": false}')
    broken = tmp_path / "c.restore-journal.json"
    broken.write_text("{not json")
    assert _finished(done) and not _finished(stopped) and not _finished(broken)
