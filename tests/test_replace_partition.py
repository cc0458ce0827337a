"""Replace one partition with its backed-up version (`restore --partition N --replace`).

Real ext4 filesystems on disk image files: a disk with three partitions is backed up,
partition 2's files are changed, and partition 2 is put back. Partition 2 then equals
the backed-up one byte for byte where the backup stored it; partitions 1 and 3, the
table and the boot code are byte-identical to before. A counterpart that is smaller,
not there, or on a disk in use is refused with its own reason and nothing written; a
restore killed mid-partition resumes to the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archive import open_archive
from archive.digest import chunk_matches
from restore_tui.cli import main
from restore_tui.journal import beside_path

MIB = 1024 * 1024
SECTOR = 512
# (start sector, size in sectors, label) of the three partitions of the 64 MiB disk.
LAYOUT = ((2048, 16384, "boot"), (18432, 49152, "data"), (67584, 61440, "home"))
P2_UUID = "5a1e5a1e-0000-4000-8000-00000000d474"

pytestmark = pytest.mark.skipif(
    shutil.which("mke2fs") is None or shutil.which("sfdisk") is None,
    reason="needs mke2fs and sfdisk to build disks with real ext4 filesystems",
)


def make_ext4(image: Path, start: int, size: int, label: str, files: Path, uuid: str) -> None:
    """An ext4 filesystem holding ``files``, at sector ``start`` of ``image``."""
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-U", uuid, "-d", str(files),
         "-E", f"offset={start * SECTOR}", str(image), f"{size * SECTOR // 1024}k"],
        check=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"},
    )  # fmt: skip


def tree(root: Path, words: str) -> Path:
    root.mkdir(parents=True)
    (root / "notes.txt").write_text(words * 2000)
    (root / "photos").mkdir()
    (root / "photos" / "a.jpg").write_bytes(hashlib.sha256(words.encode()).digest() * 30000)
    return root


def build_disk(path: Path, work: Path, p2_words: str, layout=LAYOUT) -> None:  # type: ignore[no-untyped-def]
    with open(path, "wb") as f:
        f.truncate(64 * MIB)
    script = "label: dos\nlabel-id: 0x1234abcd\n" + "".join(
        f"start={s}, size={n}, type=83\n" for s, n, _ in layout
    )
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True)
    uuids = ("5a1e5a1e-0000-4000-8000-00000000b007", P2_UUID,
             "5a1e5a1e-0000-4000-8000-00000000a0e3")  # fmt: skip
    for i, ((start, size, label), uuid) in enumerate(zip(layout, uuids, strict=True), 1):
        words = p2_words if i == 2 else f"partition {i} "
        make_ext4(path, start, size, label, tree(work / f"{path.stem}-{i}", words), uuid)


def read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def extent(number: int) -> tuple[int, int]:
    start, size, _ = LAYOUT[number - 1]
    return start * SECTOR, size * SECTOR


@pytest.fixture
def disks(tmp_path: Path) -> tuple[Path, Path]:
    """(backup of the disk, the disk afterwards with partition 2's files changed)."""
    source = tmp_path / "disk.img"
    build_disk(source, tmp_path / "before", "the files of the backup ")
    archive = tmp_path / "disk.rtui"
    assert main(["backup", str(source), str(archive)]) == 0
    build_disk(source, tmp_path / "after", "files changed since the backup ")
    return archive, source


def assert_only_partition_2_replaced(archive: Path, target: Path, before: bytes) -> None:
    p2_off, p2_len = extent(2)
    with open_archive(archive) as arc:
        image = arc.manifest.image(2)
        for c in image.chunks:
            if c.kind == "data":
                got = read(target, c.offset, c.length)
                assert chunk_matches(c, got), f"partition 2 differs at byte {c.offset}"
    after = target.read_bytes()
    # Everything outside partition 2's extent is exactly as it was.
    assert after[:p2_off] == before[:p2_off]
    assert after[p2_off + p2_len :] == before[p2_off + p2_len :]


def test_partition_2_is_put_back_and_nothing_else_changes(
    disks: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    archive, target = disks
    before = target.read_bytes()
    assert main(["plan", str(archive), "--target", str(target), "--partition", "2",
                 "--replace"]) == 0  # fmt: skip
    said = " ".join(capsys.readouterr().out.split())
    assert "Restore plan: one partition over its counterpart" in said
    assert "Partition 2 of this disk is backed-up partition 2" in said
    assert f"the same filesystem UUID ({P2_UUID})" in said
    assert "replaced by" in said or "replaced" in said
    assert target.read_bytes() == before  # planning writes nothing
    assert main(["restore", str(archive), "--target", str(target), "--partition", "2",
                 "--replace", "--yes"]) == 0  # fmt: skip
    assert_only_partition_2_replaced(archive, target, before)
    # The restored partition holds the backed-up files again.
    p2_off, _ = extent(2)
    got = subprocess.run(
        ["debugfs", "-R", "cat /notes.txt", f"{target}?offset={p2_off}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if got.returncode == 0 and got.stdout:
        assert got.stdout.startswith("the files of the backup ")


def test_a_smaller_counterpart_is_refused_by_how_much(
    disks: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive, _ = disks
    small = tmp_path / "small.img"
    # Partition 2 is 4 MiB shorter, with the same filesystem UUID.
    layout = (LAYOUT[0], (18432, 49152 - 8192, "data"), LAYOUT[2])
    build_disk(small, tmp_path / "small", "other files ", layout)
    before = small.read_bytes()
    assert main(["restore", str(archive), "--target", str(small), "--partition", "2",
                 "--replace", "--yes"]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "is 4.0 MiB smaller than backed-up partition 2" in err
    assert small.read_bytes() == before


def test_a_disk_without_the_partition_is_refused(
    disks: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive, _ = disks
    other = tmp_path / "other.img"
    with open(other, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(["sfdisk", "-q", str(other)], input="label: dos\nstart=2048, type=7\n",
                   text=True, check=True)  # fmt: skip
    before = other.read_bytes()
    assert main(["restore", str(archive), "--target", str(other), "--partition", "2",
                 "--replace", "--yes"]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "none of the backed-up partitions is on it" in err
    assert other.read_bytes() == before


def test_replace_needs_a_partition_number(
    disks: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    archive, target = disks
    assert main(["restore", str(archive), "--target", str(target), "--replace", "--yes"]) != 0
    assert "--replace needs --partition N" in capsys.readouterr().err


CLI = "import sys; from restore_tui.cli import main; sys.exit(main(sys.argv[1:]))"


def test_killed_mid_partition_it_resumes_to_the_same_bytes(disks: tuple[Path, Path]) -> None:
    archive, target = disks
    before = target.read_bytes()
    args = [str(archive), "--target", str(target), "--partition", "2", "--replace", "--yes"]
    journal = beside_path(archive)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "restore", *args, "--checkpoint-seconds", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # Killed once the journal says partition 2 has begun: mid-partition.
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and '"done_in_action": 0' not in journal.read_text():
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert main(["resume", str(archive), "--yes"]) == 0
    assert_only_partition_2_replaced(archive, target, before)


def test_a_disk_with_a_mounted_partition_is_refused(
    disks: tuple[Path, Path],
    loop_device,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Partition 3 of the disk is mounted: replacing partition 2 is refused like any
    restore onto a disk in use, and nothing is written."""
    archive, image = disks
    device = loop_device(image)
    before = image.read_bytes()
    point = tmp_path / "mnt"
    point.mkdir()
    subprocess.run(["mount", "-o", "ro", f"{device}p3", str(point)], check=True)
    try:
        assert main(["restore", str(archive), "--target", device, "--partition", "2",
                     "--replace", "--yes"]) != 0  # fmt: skip
    finally:
        subprocess.run(["umount", str(point)], check=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "in use" in err and "mounted" in err
    assert image.read_bytes() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="growing runs resize2fs on a loop device: root")
def test_a_larger_counterpart_is_filled_by_the_restored_filesystem(
    disks: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive, _ = disks
    big = tmp_path / "big.img"
    # Partition 2 is 4 MiB larger (same filesystem UUID); partition 3 moved up.
    layout = (LAYOUT[0], (18432, 49152 + 8192, "data"), (75776, 53248, "home"))
    build_disk(big, tmp_path / "big", "other files ", layout)
    before = big.read_bytes()
    assert main(["restore", str(archive), "--target", str(big), "--partition", "2",
                 "--replace", "--yes"]) == 0  # fmt: skip
    said = " ".join(capsys.readouterr().err.split())
    assert "the restored filesystem is grown from 24.0 MiB to 28.0 MiB to fill it" in said
    after = big.read_bytes()
    lo, hi = 18432 * SECTOR, (18432 + 49152 + 8192) * SECTOR
    assert after[:lo] == before[:lo] and after[hi:] == before[hi:]  # only partition 2
    dump = subprocess.run(["dumpe2fs", "-h", f"{big}?offset={lo}"], capture_output=True,
                          text=True, check=False).stdout  # fmt: skip
    if "Block count" in dump:
        fields = dict(line.split(":", 1) for line in dump.splitlines() if ":" in line)
        assert int(fields["Block count"]) * int(fields["Block size"]) > hi - lo - MIB
