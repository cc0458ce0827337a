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
from restore_tui.flow import Flow


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


def segments(text: str) -> list[str]:
    """What a terminal shows of ``text``, one piece per line or in-place redraw."""
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(part.replace("\x1b[K", "") for part in line.split("\r"))
    return out


def a_whole_restore_of_events() -> list[ProgressEvent]:
    long_title = "System (C:) — Windows and your programs, the partition the computer starts"
    evs = [
        event("note", message="progress is recorded in /media/usb/backups/windows-pc.rtui"
              ".restore-journal.json, beside the backup, where it survives a restart"),
        event("stage-already-done", stage_index=0, stage_title="Partition table and track 0"),
        event("stage-start", stage_title=long_title, stage_done=0),
    ]  # fmt: skip
    for i in range(1, 11):
        evs.append(event("write", stage_title=long_title, stage_done=i * 10 * 2**20))
    evs.append(event("stalled", stage_title=long_title, waiting_on="backup", stalled_s=31.0))
    evs.append(event("stalled", stage_title=long_title, waiting_on="backup", stalled_s=125.0))
    evs.append(event("moving", stage_title=long_title, waiting_on="backup", stalled_s=130.0))
    evs.append(event("write", stage_title=long_title, stage_done=100 * 2**20))
    evs.append(event("checkpoint", stage_title=long_title, stage_done=100 * 2**20))
    evs.append(event("verify", stage_title=long_title, stage_done=100 * 2**20))
    evs.append(event("finished"))
    return evs


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_on_a_terminal_lines_fit_the_width_and_redraw_in_place(
    monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))  # what shutil.get_terminal_size reads first
    out = FakeTerminal()
    lines = ProgressLines(out)
    lines.every = 0  # every write event draws
    for e in a_whole_restore_of_events():
        lines(e)
    text = out.getvalue()
    shown = segments(text)
    too_long = [s for s in shown if len(s) >= columns]
    assert not too_long, f"wider than {columns} columns: {too_long}"
    # The status is redrawn in place (carriage return, clear to the end), not piled up.
    assert text.count("\r") >= 11 and "\x1b[K" in text
    status = [s for s in shown if s.startswith(("stage 2 of 4", "checking:", "overall"))]
    assert len(status) >= 12
    # It is shortened, not wrapped or cut: the overall percent always stays.
    assert all("overall 30 %" in s for s in status)
    # Notes and stage lines are wrapped, continued with an indent; the stall has its words.
    words = " ".join(s.strip() for s in shown)
    assert "beside the backup, where it survives a restart" in words
    assert "Stage 1 of 4: Partition table and track 0 — already done" in words
    assert (
        "Nothing has moved for 31 s: restore-tui is waiting for the disk that holds the "
        "backup. A USB disk may have gone to sleep" in words
    )
    assert "press Ctrl+C to stop safely" in words
    assert "nothing has moved for 2 min" in words.lower()
    assert "Data is moving again (nothing had moved for 2 min)." in words
    assert any(s.startswith(ProgressLines.INDENT) for s in shown)


def test_the_stage_title_goes_first_then_the_rate() -> None:
    title = "System (C:)"
    drawn = {}
    for width in (120, 80, 60, 40):
        out = FakeTerminal()
        lines = ProgressLines(out, width=width)
        lines(event("write", stage_title=title))
        drawn[width] = segments(out.getvalue())[-1]
    assert drawn[120] == ProgressLines.status(event("write", stage_title=title))
    assert drawn[80] == "stage 2 of 4: 50 % · overall 30 % (60.0 MiB of 200.0 MiB) · about 7 s left"
    assert drawn[60] == "stage 2 of 4: 50 % · overall 30 % · about 7 s left"
    assert drawn[40] == "stage 2 of 4: 50 % · overall 30 %"


def test_to_a_log_a_stall_is_one_line_and_so_is_its_end() -> None:
    out = io.StringIO()
    lines = ProgressLines(out, plain_every_s=0)
    lines(event("stalled", waiting_on="target", stalled_s=30.0))
    lines(event("stalled", waiting_on="target", stalled_s=40.0))  # within a minute: quiet
    lines(event("moving", waiting_on="target", stalled_s=45.0))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    got = text.splitlines()
    assert len(got) == 2
    assert got[0].startswith(
        "Nothing has moved for 30 s: restore-tui is waiting for the disk being restored. "
        "It may be failing, or its cable may be loose."
    )
    assert got[1] == "Data is moving again (nothing had moved for 45 s)."


class TwoDisks:
    """Attached disks as a probe reports them: two with serials, one without."""

    def __init__(self) -> None:
        self.all = [
            disk("WD-WCAV5Z187XK2"),
            disk("S3Z9NB0K123456").model_copy(update={"device": "/dev/sdc"}),
            disk(None).model_copy(update={"device": "/dev/sdd"}),
        ]

    def disks(self) -> list[ProbedDisk]:
        return self.all

    def disk(self, device: str) -> ProbedDisk:
        return next(d for d in self.all if d.device == device)

    def disk_holding(self, path: str) -> str | None:
        return None


def test_a_target_given_by_serial_number_is_that_disk() -> None:
    flow = Flow(None, TwoDisks())  # type: ignore[arg-type]  # the archive is not read here
    assert flow.disk("serial:S3Z9NB0K123456").device == "/dev/sdc"
    with pytest.raises(UserError) as missing:
        flow.disk("serial:NOPE")
    words = str(missing.value)
    assert "no attached disk has serial number NOPE" in words
    assert "WD-WCAV5Z187XK2 (/dev/sdb), S3Z9NB0K123456 (/dev/sdc)" in words
