"""A disk whose partition table was wiped, its filesystems still in place, is recognised.

After a failed restore the first MiB of the forum user's disk was zero: no table, no
signature, but the NTFS volumes sat exactly where they were. That is strong evidence.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import LOOP_SKIP_REASON

from archive import open_archive
from archive.backup import backup
from layout.probe import ImageProbe, SystemProbe
from restore_tui import sample
from restore_tui.flow import Flow

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.ntfs") is None or shutil.which("sfdisk") is None,
    reason="needs mkfs.ntfs and sfdisk to build the Windows-like sample disk",
)
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def wiped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(backup, the backed-up disk with its first MiB zeroed, a blank disk of the same size)."""
    work = tmp_path_factory.mktemp("wiped")
    disk = sample.build_windows_mbr(work / "internal.img", 64)
    archive = work / "Full-C-Drive.rtui"
    backup(str(disk.path), archive)
    with open(disk.path, "r+b") as f:
        f.write(bytes(MIB))  # the table, the boot code and track 0 are gone
    blank = sample.build_blank(work / "blank.img", 64)
    return archive, Path(disk.path), Path(blank)


def test_the_wiped_disk_ranks_first_with_the_reason(wiped: tuple[Path, Path, Path]) -> None:
    archive, internal, blank = wiped
    with open_archive(archive) as arc:
        matches = Flow(arc, ImageProbe([str(blank), str(internal)])).candidates("full-disk")
    best = matches[0]
    assert best.device == str(internal) and best.strong and not best.blockers
    assert (
        "backed-up partitions 1 and 2 are still on this disk at their old places (same "
        "filesystem UUID); only the partition table is gone"
    ) in best.reasons
    assert not matches[1].strong


def test_on_a_loop_device_too(wiped: tuple[Path, Path, Path], loop_device) -> None:  # type: ignore[no-untyped-def]
    if LOOP_SKIP_REASON:
        pytest.skip(LOOP_SKIP_REASON)
    archive, internal, blank = wiped
    device = loop_device(internal)
    other = loop_device(blank)
    with open_archive(archive) as arc:
        matches = Flow(arc, SystemProbe()).candidates("full-disk")
    ours = [m for m in matches if m.device in (device, other)]
    assert ours[0].device == device and ours[0].strong
    assert any("still on this disk at their old places" in r for r in ours[0].reasons)
    assert not ours[1].strong


def test_a_disk_snapshot_is_probed_for_its_filesystems_once(
    wiped: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning and the refusals before the preview judge the same snapshot: blkid runs
    once per backed-up partition for it. A new snapshot (the check right before
    writing) is probed afresh, and sees what changed."""
    import restore_tui.flow as flow_module

    archive, internal, _blank = wiped
    probed: list[int] = []
    real = flow_module.probe_filesystems

    def counting(path: str, regions):  # type: ignore[no-untyped-def]
        probed.extend(offset for offset, _size in regions)
        return real(path, regions)

    monkeypatch.setattr(flow_module, "probe_filesystems", counting)
    with open_archive(archive) as arc:
        flow = Flow(arc, ImageProbe([str(internal)]))
        disk = flow.disk(str(internal))
        reasons = flow.judge(disk, "full-disk").reasons
        assert any("partitions 1 and 2 are still on this disk" in r for r in reasons)
        assert len(probed) == 2
        assert flow.judge(disk, "full-disk").reasons == reasons and len(probed) == 2
        start = 2048 * 512  # partition 1's first sector (sample.build_windows_mbr)
        saved = internal.read_bytes()[start : start + MIB]
        try:
            with open(internal, "r+b") as f:
                f.seek(start)
                f.write(bytes(MIB))  # partition 1's filesystem is gone now
            again = flow.judge(flow.disk(str(internal)), "full-disk").reasons
        finally:
            with open(internal, "r+b") as f:
                f.seek(start)
                f.write(saved)
        assert len(probed) == 4
        assert any("partition 2 is still on this disk" in r for r in again)
