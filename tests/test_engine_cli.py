"""The restore commands' conversation: the deliberate confirmation and the progress lines.

No disk is touched here; the restores themselves are tested in test_engine_real.py.
"""

from __future__ import annotations

import io

import pytest

from layout.models import DiskIdentity
from layout.probe import ProbedDisk
from restore_tui.commands.restore import ProgressLines, confirm
from restore_tui.engine import ProgressEvent
from restore_tui.errors import UserError


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def disk(serial: str | None) -> ProbedDisk:
    return ProbedDisk(
        device="/dev/sdb",
        identity=DiskIdentity(model="WDC WD5000", serial=serial, bus="sata", size_bytes=10**9),
        table=None,
        table_fingerprint="0" * 64,
    )


def test_confirmation_wants_the_serials_end(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdin", FakeTerminal("7XK2\n"))
    confirm(disk("WD-WCAV5Z187XK2"), "full-disk", "restore erases it", yes=False, stream=out)
    assert "last 4 characters of its serial number (WD-WCAV5Z187XK2)" in out.getvalue()

    monkeypatch.setattr("sys.stdin", FakeTerminal("yes\n"))
    with pytest.raises(UserError, match="not confirmed; nothing was written"):
        confirm(disk("WD-WCAV5Z187XK2"), "full-disk", "restore erases it", yes=False, stream=out)


def test_without_a_serial_the_word_is_erase(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdin", FakeTerminal("ERASE\n"))
    confirm(disk(None), "full-disk", "restore erases it", yes=False, stream=out)
    assert "the word ERASE" in out.getvalue()


def test_no_terminal_means_no_restore_without_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("7XK2\n"))  # a pipe, not a person
    with pytest.raises(UserError, match="add --yes to confirm without a terminal"):
        confirm(disk("WD-WCAV5Z187XK2"), "full-disk", "restore erases it", yes=False)
    # --yes: no question
    confirm(disk("WD-WCAV5Z187XK2"), "full-disk", "restore erases it", yes=True)


def event(kind: str, **kw: object) -> ProgressEvent:
    base: dict[str, object] = dict(
        kind=kind, stage_index=1, stage_count=4, stage_name="system",
        stage_title="System (C:)", stage_done=50 * 2**20, stage_total=100 * 2**20,
        overall_done=60 * 2**20, overall_total=200 * 2**20, rate_bytes_s=20 * 2**20,
        eta_s=7.0,
    )  # fmt: skip
    base.update(kw)
    return ProgressEvent(**base)  # type: ignore[arg-type]


def test_progress_lines_show_throughput_eta_and_checkpoints() -> None:
    out = io.StringIO()
    lines = ProgressLines(out, plain_every_s=0)
    lines(event("stage-start"))
    lines(event("write"))
    lines(event("checkpoint", stage_done=100 * 2**20))
    text = out.getvalue()
    assert "Stage 2 of 4: System (C:)" in text
    assert "stage 2 of 4, System (C:): 50 % · overall 30 % (60.0 MiB of 200.0 MiB)" in text
    assert "20.0 MiB/s · about 7 s left" in text
    assert "Checkpoint saved (30 % done, stage 2 of 4) — safe to resume from here" in text
