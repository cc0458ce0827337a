"""The benchmark scripts run end to end on tiny disks and print their ratio lines.

Only that they run and report: timings are never asserted (the machine is shared).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from restore_tui import sample
from restore_tui.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("zstd", "dd", "partclone.restore", "partclone.extfs", "partclone.fat", "mke2fs",
         "mkfs.fat", "sfdisk")  # fmt: skip
MISSING = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


@pytest.mark.skipif(bool(MISSING), reason=f"benchmark tools missing: {MISSING}")
def test_bench_runs_and_prints_ratios(tmp_path: Path) -> None:
    out_json = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--only",
            "gpt",
            "--size",
            "64M",
            "--big-size",
            "96M",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out_json),
            # As root, the backups on a second disk in RAM, as the full benchmark keeps them.
            *(["--backups-on", "ram"] if os.geteuid() == 0 else []),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ratios = [line for line in proc.stdout.splitlines() if line.startswith("ratio ")]
    kinds = {line.split()[1].split("/")[0] for line in ratios}
    assert kinds == {"backup", "verify", "restore", "rss"}, proc.stdout
    # Every ratio line carries a number, and the restore lines name both baselines.
    for line in ratios:
        assert re.search(r"= \d+\.\d\d", line), line
    restore = [line for line in ratios if line.startswith("ratio restore/")]
    # Each restore is compared with both baselines, and with its limit L; the verified one
    # also with what the machine allows (the backup read, written and read back at once).
    against_tools = [line for line in restore if "zstd|dd" in line]
    against_limit = [line for line in restore if "vs its limit" in line]
    against_target = [line for line in restore if "the target's own limit" in line]
    assert against_tools and all("partclone" in x for x in against_tools)
    assert len(against_limit) == len(against_tools) and all("L = " in x for x in against_limit)
    assert len(against_target) == len(against_tools) // 2
    assert all("L' = " in x and "--no-verify" not in x for x in against_target)
    assert len(restore) == len(against_tools) + len(against_limit) + len(against_target)
    assert "page caches:" in proc.stdout and "machine:" in proc.stdout
    on_ram = "backups on: a second disk" in proc.stdout
    assert on_ram == (os.geteuid() == 0), proc.stdout
    # Unmounted at the end, not left busy by a backup still open.
    assert not (tmp_path / "work" / "backups").exists() and "busy" not in proc.stderr
    figures = out_json.read_text()
    assert '"gpt"' in figures and '"gpt-big"' in figures


def test_bench_rejects_unknown_size() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--size", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "size" in proc.stderr


def _bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_contenders_take_turns_and_each_keeps_its_best(tmp_path: Path) -> None:
    """Round after round, not one contender's runs back to back: both figures of a
    ratio get the same minutes of the machine."""
    run = _bench_module()
    order: list[str] = []
    walls = {"a": iter([3.0, 1.0, 2.0]), "b": iter([1.5, 2.5, 0.5])}

    def contender(name: str) -> Callable[[], dict[str, object]]:
        def go() -> dict[str, object]:
            order.append(name)
            return {name: run.Result(name, wall_s=next(walls[name]))}

        return go

    bench = run.Bench(tmp_path, cold=False, repeat=3)
    best = run.best_in_rounds(bench, [contender("a"), contender("b")])
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert {k: v.wall_s for k, v in best.items()} == {"a": 1.0, "b": 0.5}


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("losetup") is None, reason="loop devices need root"
)
def test_the_disk_like_target_is_a_loop_device_doing_direct_io(tmp_path: Path) -> None:
    run = _bench_module()
    work = tmp_path / "work"
    work.mkdir()
    if not run.takes_direct_loop(work):
        pytest.skip(f"{work} takes no direct I/O (tmpfs?)")
    bench = run.Bench(work, cold=False, repeat=1)
    with run.target(bench, "loop-dio", 4 * 1024 * 1024) as dev:
        assert Path(f"/sys/block/{Path(dev).name}/loop/dio").read_text().strip() == "1"
    with run.target(bench, "loop", 4 * 1024 * 1024) as dev:
        assert Path(f"/sys/block/{Path(dev).name}/loop/dio").read_text().strip() == "0"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("losetup") is None or not Path("/dev/shm").is_dir(),
    reason="a RAM disk for the backups needs root, loop devices and /dev/shm",
)
def test_the_backups_disk_in_ram_is_mounted_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = _bench_module()
    mount_point = tmp_path / "backups"
    with run.ram_disk(mount_point, 64 * 1024 * 1024) as store:
        assert os.path.ismount(store)
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE,FSTYPE", str(store)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert source[1] == "ext4" and source[0].startswith("/dev/loop")
        backing = Path(
            Path(f"/sys/block/{Path(source[0]).name}/loop/backing_file").read_text().strip()
        )
        assert backing.parent == Path("/dev/shm")
        (store / "a.rtui").write_bytes(b"x" * 4096)
    assert not mount_point.exists()
    assert not backing.exists()
    attached = subprocess.run(
        ["losetup", "-j", str(backing)], capture_output=True, text=True, check=False
    ).stdout
    assert attached.strip() == ""


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this machine")
def test_a_ram_disk_larger_than_the_free_ram_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    run = _bench_module()
    before = set(Path("/dev/shm").iterdir())
    refused = run.ram_disk(tmp_path / "backups", 1 << 50)
    with pytest.raises(run.BenchError, match="--backups-on work"):
        refused.__enter__()
    assert set(Path("/dev/shm").iterdir()) == before
    assert not (tmp_path / "backups").exists()


def _small_backup(tmp_path: Path) -> tuple[sample.SampleDisk, Path]:
    """A 16 MiB disk (one ext4 partition with 6 MiB of files) and its backup."""
    rng = random.Random(3)
    lba = 1024 * 1024 // 512
    files = {f"f{i}.bin": rng.randbytes(1024 * 1024) for i in range(6)}
    root = sample.SamplePartition(
        number=1, start_lba=lba, length_lba=14 * lba, fs="ext4", label="root", mbr_type=0x83,
        files=files,
    )  # fmt: skip
    # Without old garbage, bytes a restore leaves alone are zeros on both sides.
    disk = sample.build_disk(tmp_path / "src.img", 16, "msdos", [root], seed=3, garbage=False)
    archive = tmp_path / "src.rtui"
    assert cli_main(["backup", str(disk.path), str(archive)]) == 0
    return disk, archive


def _where(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "where.py"), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(not sample.have_tool("mke2fs"), reason="mke2fs (e2fsprogs) is not installed")
@pytest.mark.parametrize("verify", [True, False])
def test_where_a_restore_spends_its_time_is_told_from_inside_its_process(
    tmp_path: Path, verify: bool
) -> None:
    disk, archive = _small_backup(tmp_path)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(disk.size_bytes))
    proc = _where(archive, target, *([] if verify else ["--no-verify"]))
    assert proc.returncode == 0, proc.stderr
    # The restore really ran: the target is the source disk again.
    assert target.read_bytes() == disk.path.read_bytes()
    out = proc.stdout
    phases = {
        name: float(m.group(1))
        for name in ("start-up", "data", "end")
        if (m := re.search(rf"^  {name} \(.*?\)\s+(\d+\.\d\d) s$", out, re.M))
    }
    assert set(phases) == {"start-up", "data", "end"}, out
    total = float(re.search(r"(\d+\.\d\d) s in all", out).group(1))  # type: ignore[union-attr]
    assert abs(sum(phases.values()) - total) <= 0.02, out
    # Each kind of thread is named by what it does; the read-back only where it ran.
    decoding = re.search(r"decoding the backup .*?(\d+\.\d\d) s$", out, re.M)
    assert decoding is not None and float(decoding.group(1)) > 0, out
    assert ("reading back and checking" in out) == verify, out
    assert "main thread (imports" in out and "writing to the target" in out, out
    assert re.search(r"decompress \d+\.\d\d s, BLAKE3 \d+\.\d\d s, XXH3", out), out
    assert ("twice in this restore" in out) == verify, out
    # The journal the restore kept beside the backup is gone with the run.
    assert not list(tmp_path.glob("src.rtui.restore-journal*"))


def test_where_refuses_a_backup_with_an_unfinished_restore(tmp_path: Path) -> None:
    archive = tmp_path / "a.rtui"
    archive.write_bytes(b"not read")
    (tmp_path / "a.rtui.restore-journal.json").write_text("{}")
    proc = _where(archive, tmp_path / "t")
    assert proc.returncode == 2
    assert "unfinished restore" in proc.stderr and "remove it first" in proc.stderr
    assert (tmp_path / "a.rtui.restore-journal.json").exists()


@pytest.mark.skipif(not sample.have_tool("mke2fs"), reason="mke2fs (e2fsprogs) is not installed")
def test_where_passes_on_why_a_restore_was_refused(tmp_path: Path) -> None:
    _disk, archive = _small_backup(tmp_path)
    small = tmp_path / "small.img"
    small.write_bytes(bytes(1024 * 1024))
    proc = _where(archive, small)
    assert proc.returncode == 1
    # The restore's own words (what is wrong with the target), then where.py's.
    assert "too small" in proc.stderr and "the restore failed" in proc.stderr
    assert small.read_bytes() == bytes(1024 * 1024) and proc.stdout == ""
