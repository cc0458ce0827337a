"""kill -9 at many moments, resume each time: the target ends byte-identical to a clean restore.

The restore runs as a real `restore-tui` process. Kill moments are seeded: most come
just after the n-th checkpoint of a run (so every stage gets its share), some at a
seeded time after start (start-up, re-verification, the first writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from restore_tui import sample
from restore_tui.cli import main
from restore_tui.journal import Checkpoint, beside_path

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None or shutil.which("mkfs.vfat") is None,
    reason="needs mkfs.ext4 and mkfs.vfat to build sample disks",
)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def position(journal: Path) -> tuple[int, bool]:
    """(bytes of the plan recorded as done, finished) from the journal; (-1, False) if none."""
    try:
        record = Checkpoint.model_validate_json(journal.read_text())
    except (OSError, ValidationError):
        return -1, False
    return record.bytes_done(), record.finished


# The real command line, with one addition for the test: after each checkpoint it says so
# on stdout and waits for a line on stdin. The test lets it go on, then kills it at a
# seeded moment; a run can never race ahead more than one checkpoint past that moment.
DRIVER = """
import sys
from restore_tui.commands import restore
shown = restore.ProgressLines.__call__
def lockstep(self, event):
    shown(self, event)
    if event.kind == "checkpoint":
        sys.__stdout__.write("checkpoint\\n")
        sys.__stdout__.flush()
        sys.stdin.readline()
restore.ProgressLines.__call__ = lockstep
from restore_tui.cli import main
sys.exit(main(sys.argv[1:]))
"""


CLI = "import sys; from restore_tui.cli import main; sys.exit(main(sys.argv[1:]))"


def spawn(args: list[str], *, lockstep: bool = True) -> subprocess.Popen[bytes]:
    prefix = ["-c", DRIVER if lockstep else CLI]
    return subprocess.Popen(
        [sys.executable, *prefix, *args, "--yes", "--checkpoint-seconds", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        cwd=Path(__file__).resolve().parent.parent,
    )


def next_checkpoint(proc: subprocess.Popen[bytes], timeout: float | None) -> bool | None:
    """True at a checkpoint, False when the process ended, None when the time ran out."""
    assert proc.stdout is not None
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = proc.stdout.readline()
        if not line:
            return False
        if line == b"checkpoint\n":
            return True


def let_go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(b"\n")


def busy_disk(path: Path) -> sample.SampleDisk:
    """64 MiB, MBR with logical partitions, filesystems holding ~30 MiB of incompressible
    files: enough stored data for dozens of checkpoints in every stage."""
    rng = random.Random(7)
    lba = MIB // 512

    def blobs(prefix: str, count: int) -> dict[str, bytes]:
        return {f"{prefix}/file{i}.bin": rng.randbytes(MIB + 4096 * i) for i in range(count)}

    parts = [
        sample.SamplePartition(
            number=1, start_lba=lba, length_lba=22 * lba, fs="ext4", label="root",
            mbr_type=0x83, bootable=True, files=blobs("root", 12),
        ),
        sample.SamplePartition(
            number=2, start_lba=23 * lba, length_lba=41 * lba, fs=None, label=None,
            kind="extended", mbr_type=0x05,
        ),
        sample.SamplePartition(
            number=5, start_lba=24 * lba, length_lba=14 * lba, fs="vfat", label="SHARED",
            kind="logical", mbr_type=0x0C, files=blobs("Photos", 6),
        ),
        sample.SamplePartition(
            number=6, start_lba=39 * lba, length_lba=24 * lba, fs="ext4", label="home",
            kind="logical", mbr_type=0x83, files=blobs("user", 12),
        ),
    ]  # fmt: skip
    return sample.build_disk(path, 64, "msdos", parts, seed=31, signature="5EED0031")


def test_kill_at_twenty_plus_moments_then_resume_matches_a_clean_restore(tmp_path: Path) -> None:
    disk = busy_disk(tmp_path / "src.img")
    archive = tmp_path / "src.rtui"
    assert main(["backup", str(disk.path), str(archive)]) == 0

    # The reference: one uninterrupted restore from the same archive (its own journal).
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    os.link(archive, ref_dir / "src.rtui")
    reference = ref_dir / "target.img"
    reference.write_bytes(b"\x6b" * disk.size_bytes)
    assert main(["restore", str(ref_dir / "src.rtui"), "--target", str(reference), "--yes"]) == 0
    plan = Checkpoint.model_validate_json(beside_path(ref_dir / "src.rtui").read_text()).plan

    target = tmp_path / "target.img"
    target.write_bytes(b"\x6b" * disk.size_bytes)  # the same old contents as the reference's
    journal = beside_path(archive)

    # Seeded kill moments: most runs are killed just after their n-th checkpoint (n of 1-2,
    # then 0-2 ms so the kill lands mid-write or mid-record); every fourth at a seeded
    # time after start (start-up, re-verification, waiting at a checkpoint).
    rng = random.Random(20240611)
    kills = 0
    runs = 0
    stages_killed_in: set[str] = set()
    while kills < 80:  # until the restore finishes; the bound only guards against a hang
        done_before, finished = position(journal)
        if finished:
            break
        runs += 1
        command = (
            ["restore", str(archive), "--target", str(target)]
            if done_before < 0 or runs % 2
            else ["resume", str(archive)]
        )
        proc = spawn(command)
        allowed = rng.choice([1, 1, 2])
        try:
            if runs % 4 == 0:
                # By time: start-up, re-verification, or waiting at a checkpoint.
                deadline = time.monotonic() + rng.uniform(0.0, 0.9)
                while (left := deadline - time.monotonic()) > 0:
                    got = next_checkpoint(proc, left)
                    if not got:
                        break
                    if allowed:
                        allowed -= 1
                        let_go(proc)
            else:
                for _ in range(allowed):
                    if not next_checkpoint(proc, None):
                        break
                    let_go(proc)
                # Land somewhere after the checkpoint: mid-write or mid-record.
                time.sleep(rng.uniform(0.0, 0.002))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        record = Checkpoint.model_validate_json(journal.read_text()) if journal.exists() else None
        if record is not None and record.current_stage:
            stages_killed_in.add(record.current_stage)

    assert kills >= 20, f"only {kills} kills landed before the restore finished ({runs} runs)"
    # Kills landed in every stage of the plan.
    assert stages_killed_in >= {s.name for s in plan.stages}
    final = subprocess.run(
        [sys.executable, "-c", CLI, "resume", str(archive), "--yes"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert final.returncode == 0, final.stderr
    assert position(journal)[1], "the journal does not say the restore finished"
    assert file_hash(target) == file_hash(reference)
