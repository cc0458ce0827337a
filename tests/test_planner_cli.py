"""`restore-tui plan` on real disk images: a real backup, plans as text and JSON, nothing written.

The sample disk is built with sfdisk and mkfs and backed up with the real writer;
every test hashes the target image before and after to prove it was not touched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from layout.plan import Plan
from layout.probe import ImageProbe
from restore_tui import sample
from restore_tui.cli import main

pytestmark = pytest.mark.skipif(
    shutil.which("sfdisk") is None or shutil.which("mkfs.ext4") is None,
    reason="needs sfdisk and mkfs.ext4 to build the sample disk",
)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source image, archive) for an MBR disk with logical partitions."""
    from archive.backup import backup

    work = tmp_path_factory.mktemp("plan-cli")
    disk = sample.build_mbr_with_logicals(work / "source.img", 64)
    archive = work / "disk.rtui"
    backup(str(disk.path), archive)
    return Path(disk.path), archive


def test_plan_json_on_an_image_writes_nothing(
    backed_up: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _source, archive = backed_up
    target = tmp_path / "blank.img"
    sample.build_blank(target, 96)
    before = file_hash(target)
    out = tmp_path / "plan.json"
    assert main(["plan", str(archive), "--target", str(target), "--json", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert file_hash(target) == before
    data = json.loads(printed)
    assert data["target"]["device"] == str(target)
    assert [s["name"] for s in data["stages"]] == ["table", "system", "partition-5", "partition-6"]
    for stage in data["stages"]:
        for action in stage["actions"]:
            assert {"kind", "offset", "length"} <= set(action)
            assert action["offset"] + action["length"] <= 96 * 1024 * 1024
    saved = Plan.from_json(out.read_text())
    assert saved == Plan.from_json(printed)
    assert not list(tmp_path.glob("*.partial"))


def test_plan_text_one_partition_into_the_extended_container(
    backed_up: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, archive = backed_up
    target = tmp_path / "copy.img"
    shutil.copyfile(source, target)
    before = file_hash(target)
    assert main(["plan", str(archive), "--target", str(target), "--partition", "5",
                 "--exact"]) == 0
    text = capsys.readouterr().out
    assert file_hash(target) == before
    assert "Restore plan: one partition into free space" in text
    assert "created" in text and "kept" in text
    assert "New extended boot record at sector" in text
    assert "'hidden sectors' field" in text  # vfat moved to a new start


def test_plan_refusals_exit_non_zero(
    backed_up: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, archive = backed_up
    small = tmp_path / "small.img"
    sample.build_blank(small, 32)
    before = file_hash(small)
    assert main(["plan", str(archive), "--target", str(small)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot be the target" in err and "too small" in err
    assert file_hash(small) == before

    copy = tmp_path / "copy.img"
    shutil.copyfile(source, copy)
    assert main(["plan", str(archive), "--target", str(copy), "--partition", "1"]) == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "too little" in err
    assert main(["plan", str(archive), "--target", str(copy), "--region", "2048"]) == 1
    assert "--region only applies with --partition" in capsys.readouterr().err


def test_plan_without_target_picks_the_backed_up_disk_only_on_strong_evidence(
    backed_up: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, archive = backed_up
    copy = tmp_path / "original.img"
    shutil.copyfile(source, copy)
    blank = tmp_path / "blank.img"
    sample.build_blank(blank, 128)
    images = [str(blank), str(copy)]
    # Only these images are the machine: the test must not depend on this host's disks.
    only = ["--only-images", "--image", str(blank)]
    hashes = [file_hash(Path(p)) for p in images]
    assert main(["plan", str(archive), "--json", *only, "--image", str(copy)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["target"]["device"] == str(copy)
    assert "same disk signature" in captured.err

    assert main(["plan", str(archive), *only]) == 1
    err = capsys.readouterr().err
    assert "none was chosen" in err and "blank.img" in err
    assert [file_hash(Path(p)) for p in [str(blank), str(copy)]] == hashes


def test_probed_image_carries_the_ebr_chain_for_a_new_logical(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    from archive import open_archive
    from restore_tui.planner import plan_one_partition

    source, archive = backed_up
    copy = tmp_path / "copy.img"
    shutil.copyfile(source, copy)
    disk = ImageProbe([str(copy)]).disk(str(copy))
    assert disk.ebr_lbas is not None and len(disk.ebr_lbas) == 2
    inside = next(r for r in disk.free if r.inside_extended)
    with open_archive(archive) as opened:
        plan = plan_one_partition(opened.manifest, "0" * 64, str(archive), disk, 5, inside)
    new = plan.after.partition(7)
    assert new.kind == "logical"
    link = plan.stages[0].actions[1]
    assert link.offset == disk.ebr_lbas[-1] * 512 + 462 and link.length == 16


def test_saved_plan_names_the_backup_by_its_full_path(
    backed_up: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A plan made with a relative backup path must still find the backup when
    `apply` runs from another folder (the target is already stored absolute)."""
    _source, archive = backed_up
    target = tmp_path / "blank.img"
    sample.build_blank(target, 96)
    out = tmp_path / "plan.json"
    monkeypatch.chdir(archive.parent)
    assert main(["plan", archive.name, "--target", str(target), "--out", str(out)]) == 0
    capsys.readouterr()
    saved = Plan.from_json(out.read_text())
    assert saved.archive.path == str(archive)
    monkeypatch.chdir(tmp_path)
    assert Path(saved.archive.path).is_file()


@pytest.mark.parametrize("command", ["plan", "restore"])
def test_the_backup_file_itself_is_refused_as_the_target(
    backed_up: tuple[Path, Path], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Offered as a disk image, the backup file is the disk holding the backup: refused
    for that reason (not merely for being small), and left unchanged."""
    _source, archive = backed_up
    before = file_hash(archive)
    args = [command, str(archive), "--target", str(archive)]
    assert main([*args, "--yes"] if command == "restore" else args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "holds the backup you are restoring from" in err
    assert file_hash(archive) == before
