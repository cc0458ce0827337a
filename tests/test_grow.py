"""A whole-disk restore onto a larger disk that grows a partition into the extra space
(`restore --grow N|last|system`): the table entry is extended, the filesystem grown by
its own tool on exactly the partition's extent, everything else as restored.

Real ext4 and NTFS filesystems on image files; the tools run on loop devices, so root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from archive import open_archive
from layout.blockio import DiskReader
from layout.table_io import read_table
from restore_tui import sample
from restore_tui.cli import main

MIB = 1024 * 1024
SECTOR = 512

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("resize2fs") is None or shutil.which("sfdisk") is None,
    reason="growing runs resize2fs/ntfsresize on a loop device over the partition: needs root",
)


def make_ext4(image: Path, start: int, size: int, label: str, files: Path) -> None:
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", str(files),
         "-E", f"offset={start * SECTOR}", str(image), f"{size * SECTOR // 1024}k"],
        check=True,
    )  # fmt: skip


@pytest.fixture
def linux_backup(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "src.img"
    with open(source, "wb") as f:
        f.truncate(48 * MIB)
    layout = ((2048, 16384, "boot"), (18432, 77824, "data"))
    script = "label: dos\n" + "".join(f"start={s}, size={n}, type=83\n" for s, n, _ in layout)
    subprocess.run(["sfdisk", "-q", str(source)], input=script, text=True, check=True)
    for start, size, label in layout:
        files = tmp_path / label
        files.mkdir()
        (files / "hello.txt").write_text(f"the {label} partition\n" * 500)
        make_ext4(source, start, size, label, files)
    archive = tmp_path / "src.rtui"
    assert main(["backup", str(source), str(archive)]) == 0
    return source, archive


def table_of(path: Path):  # type: ignore[no-untyped-def]
    with DiskReader(str(path)) as r:
        parsed = read_table(r.read, r.size, SECTOR)
    assert parsed is not None
    return parsed.table


def ext4_blocks(image: Path, offset: int) -> int:
    out = subprocess.run(["dumpe2fs", "-h", f"{image}?offset={offset}"], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    if "Block count" not in out:  # older dumpe2fs: through a loop device
        argv = ["losetup", "-f", "--show", "-o", str(offset), "-r", str(image)]
        loop = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        try:
            out = subprocess.run(["dumpe2fs", "-h", loop], capture_output=True, text=True).stdout
        finally:
            subprocess.run(["losetup", "-d", loop], check=False)
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def test_the_last_partition_grows_into_a_larger_disk(
    linux_backup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, archive = linux_backup
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(96 * MIB)
    assert main(["plan", str(archive), "--target", str(target), "--grow", "last"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "Partition 2 is grown from 38.0 MiB to 87.0 MiB" in said and "resize2fs" in said
    assert main(["restore", str(archive), "--target", str(target), "--yes", "--grow", "last"]) == 0
    table = table_of(target)
    p1, p2 = table.partition(1), table.partition(2)
    assert (p2.start_lba, p2.stop_lba) == (18432, 96 * MIB // SECTOR)  # to the disk's end
    # Partition 1, the boot code and track 0 are as backed up.
    src, got = source.read_bytes(), target.read_bytes()
    assert got[:440] == src[:440]
    assert got[SECTOR : 18432 * SECTOR] == src[SECTOR : 18432 * SECTOR]
    assert p1.length_lba == 16384
    # The filesystem fills the grown partition and checks clean, its files as backed up.
    assert ext4_blocks(target, p2.start_lba * SECTOR) > (p2.length_lba * SECTOR) - 8 * MIB
    files = sample.read_files_ext4(target, p2.start_lba * SECTOR, p2.length_lba * SECTOR)
    assert files == {"hello.txt": b"the data partition\n" * 500}
    with open_archive(archive) as arc:
        assert arc.manifest.table.partition(2).length_lba == 77824


def test_growing_refuses_what_it_cannot_do(
    linux_backup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _source, archive = linux_backup
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(96 * MIB)
    before = target.read_bytes()
    # Partition 1 has partition 2 right after it.
    assert main(["plan", str(archive), "--target", str(target), "--grow", "1"]) != 0
    assert "no free space after partition 1" in capsys.readouterr().err
    assert main(["plan", str(archive), "--target", str(target), "--grow", "sideways"]) != 0
    assert "--grow takes a partition number, 'last' or 'system'" in capsys.readouterr().err
    assert target.read_bytes() == before


@pytest.mark.skipif(shutil.which("mkntfs") is None, reason="needs mkntfs for an NTFS disk")
def test_the_windows_system_partition_grows_with_ntfsresize(tmp_path: Path) -> None:
    disk = sample.build_windows_mbr(tmp_path / "win.img", 64)
    archive = tmp_path / "win.rtui"
    assert main(["backup", str(disk.path), str(archive)]) == 0
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(128 * MIB)
    assert main(["restore", str(archive), "--target", str(target), "--yes", "--grow",
                 "system"]) == 0  # fmt: skip
    p2 = table_of(target).partition(2)
    assert p2.stop_lba > 120 * MIB // SECTOR
    offset, length = p2.start_lba * SECTOR, p2.length_lba * SECTOR
    loop = subprocess.run(
        ["losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(length), str(target)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        info = subprocess.run(["ntfsresize", "--info", "--force", "--no-progress-bar", loop],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
        volume = next(int(x.split(":")[1].split()[0]) for x in info.splitlines()
                      if x.startswith("Current volume size"))  # fmt: skip
        assert volume > length - MIB  # the volume fills its partition
        # ntfsresize asks Windows to check the volume at its next start; clear that
        # request here only so that ntfs-3g reads the files.
        subprocess.run(["ntfsfix", "-d", loop], capture_output=True, check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    files = sample.read_files("ntfs", target, offset, length)
    assert files == disk.files[2]


def test_killed_just_before_the_grow_stage_it_resumes_and_fills(
    linux_backup: tuple[Path, Path], tmp_path: Path
) -> None:
    """kill -9 at the checkpoint just before the resize stage: `resume` runs it and ends
    with the filesystem filling its partition and its files intact. (The stage's own
    checkpoint is the restore's last, so there is no later moment short of finishing.)"""
    from test_crash_resume import let_go, next_checkpoint, spawn

    from restore_tui.journal import Checkpoint, beside_path

    _source, archive = linux_backup
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(96 * MIB)
    journal = beside_path(archive)
    proc = spawn(["restore", str(archive), "--target", str(target), "--grow", "last"])
    try:
        while next_checkpoint(proc, 60):
            record = Checkpoint.model_validate_json(journal.read_text())
            others = {s.name for s in record.plan.stages} - {"grow-2"}
            if others <= set(record.completed_stages):  # everything restored, not yet grown
                proc.kill()
                break
            let_go(proc)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "killed before it could finish"
    assert main(["resume", str(archive), "--yes"]) == 0
    p2 = table_of(target).partition(2)
    assert p2.stop_lba == 96 * MIB // SECTOR
    assert ext4_blocks(target, p2.start_lba * SECTOR) > (p2.length_lba * SECTOR) - 8 * MIB
    files = sample.read_files_ext4(target, p2.start_lba * SECTOR, p2.length_lba * SECTOR)
    assert files == {"hello.txt": b"the data partition\n" * 500}


def test_killed_while_the_tool_runs_it_resumes_and_fills(
    linux_backup: tuple[Path, Path], tmp_path: Path
) -> None:
    """The computer stops while the resize stage runs (the whole process group killed
    while resize2fs is starting, as a power cut would): `resume` runs the stage again —
    e2fsck, then resize2fs — and the filesystem fills its partition, files intact."""
    import signal
    import sys
    import time

    from restore_tui.journal import Checkpoint, beside_path

    _source, archive = linux_backup
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(96 * MIB)
    # A resize2fs that waits before doing anything: the moment to cut the power.
    shims = tmp_path / "bin"
    shims.mkdir()
    started = tmp_path / "resize-started"
    real = shutil.which("resize2fs")
    (shims / "resize2fs").write_text(f"#!/bin/sh\ntouch {started}\nsleep 30\nexec {real} \"$@\"\n")
    (shims / "resize2fs").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    cli = "import sys; from restore_tui.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", cli, "restore", str(archive), "--target", str(target),
         "--grow", "last", "--yes"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the resize stage never started"
        os.killpg(proc.pid, signal.SIGKILL)  # the restore and the tool it started
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    record = Checkpoint.model_validate_json(beside_path(archive).read_text())
    assert "grow-2" not in record.completed_stages and not record.finished
    # The loop device the killed restore had set up over the partition is its own:
    # detach it (a power cut would have taken it away too).
    for line in subprocess.run(["losetup", "-j", str(target)], capture_output=True,
                               text=True, check=False).stdout.splitlines():  # fmt: skip
        subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)
    assert main(["resume", str(archive), "--yes"]) == 0
    p2 = table_of(target).partition(2)
    assert ext4_blocks(target, p2.start_lba * SECTOR) > (p2.length_lba * SECTOR) - 8 * MIB
    files = sample.read_files_ext4(target, p2.start_lba * SECTOR, p2.length_lba * SECTOR)
    assert files == {"hello.txt": b"the data partition\n" * 500}
