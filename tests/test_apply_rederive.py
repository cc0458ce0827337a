"""`apply` runs only what planning gives now, and only when that equals the saved file.

Each refusal leaves the target image byte-identical: a restore action moved onto a
partition the plan keeps, a plan from another backup, a disk whose table changed since,
a truncated file, a plan of another version. A plan applied as saved still restores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_planner_cli import file_hash

from archive.backup import backup
from restore_tui import sample
from restore_tui.cli import main

pytestmark = pytest.mark.skipif(
    shutil.which("sfdisk") is None or shutil.which("mkfs.ext4") is None,
    reason="needs sfdisk and mkfs.ext4 to build the sample disks",
)
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(archive, spare disk image with one partition and free space, saved plan JSON)."""
    work = tmp_path_factory.mktemp("apply")
    disk = sample.build_mbr_with_logicals(work / "source.img", 64)
    archive = work / "disk.rtui"
    backup(str(disk.path), archive)
    keep = sample.SamplePartition(
        number=1, start_lba=2048, length_lba=40 * 2048, fs="ext4", label="photos",
        mbr_type=0x83, files={"a.txt": b"keep me\n"},
    )  # fmt: skip
    spare = sample.build_disk(work / "spare.img", 128, "msdos", [keep], seed=5).path
    plan = work / "plan.json"
    args = ["plan", str(archive), "--target", str(spare), "--partition", "1", "--out", str(plan)]
    assert main(args) == 0
    return archive, Path(spare), plan


def fresh_copy(tmp_path: Path, saved: tuple[Path, Path, Path]) -> tuple[Path, Path, dict]:
    """A private copy of the spare disk and a plan that names it."""
    _archive, spare, plan = saved
    target = tmp_path / "spare.img"
    shutil.copyfile(spare, target)
    data = json.loads(plan.read_text())
    data["target"]["device"] = str(target)
    return target, tmp_path / "plan.json", data


def apply(plan: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["apply", str(plan), "--yes", "--checkpoint-seconds", "0"])
    return code, capsys.readouterr().err


def test_a_restore_moved_onto_a_kept_partition_is_refused(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, plan, data = fresh_copy(tmp_path, saved)
    before = file_hash(target)
    kept = data["before"]["partitions"][0]
    data_stage = data["stages"][1]
    data_stage["actions"][0]["offset"] = kept["start_lba"] * 512  # onto "photos"
    # The edit is also consistent with the plan's own extents, as a careful forger's would be.
    plan.write_text(json.dumps(data))
    code, err = apply(plan, capsys)
    assert code == 1 and err.startswith("error: the plan file is not what planning")
    assert "stages[1].actions[0].offset" in err and "nothing was written" in err
    assert file_hash(target) == before


def test_a_plan_of_another_backup_is_refused(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, plan, data = fresh_copy(tmp_path, saved)
    before = file_hash(target)
    data["archive"]["identity"] = "0" * 64
    plan.write_text(json.dumps(data))
    code, err = apply(plan, capsys)
    assert code == 1 and "made from another backup" in err
    assert file_hash(target) == before


def test_a_disk_whose_table_changed_is_refused(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, plan, data = fresh_copy(tmp_path, saved)
    plan.write_text(json.dumps(data))
    with target.open("r+b") as f:  # another tool changed the disk signature since
        f.seek(440)
        f.write(bytes.fromhex("0BADF00D"))
    before = file_hash(target)
    code, err = apply(plan, capsys)
    assert code == 1 and "partition table" in err and "changed since the plan was made" in err
    assert file_hash(target) == before


@pytest.mark.parametrize("cut", [0, 1, 200, -2])
def test_a_truncated_plan_file_is_refused(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], cut: int
) -> None:
    target, plan, data = fresh_copy(tmp_path, saved)
    text = json.dumps(data)
    plan.write_text(text[:cut])
    before = file_hash(target)
    code, err = apply(plan, capsys)
    assert code == 1 and "is not a complete restore-tui plan" in err
    assert file_hash(target) == before


def test_a_plan_of_another_version_is_refused(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, plan, data = fresh_copy(tmp_path, saved)
    data["schema_version"] = 1
    plan.write_text(json.dumps(data))
    before = file_hash(target)
    code, err = apply(plan, capsys)
    assert code == 1 and "another version of restore-tui (plan version 1)" in err
    assert file_hash(target) == before


def test_the_plan_as_saved_restores(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, plan, data = fresh_copy(tmp_path, saved)
    plan.write_text(json.dumps(data))
    kept = data["before"]["partitions"][0]
    start, length = kept["start_lba"] * 512, kept["length_lba"] * 512
    with target.open("rb") as f:
        f.seek(start)
        photos = f.read(length)
    code, err = apply(plan, capsys)
    assert code == 0, err
    with target.open("rb") as f:
        f.seek(start)
        assert f.read(length) == photos  # the kept partition is untouched


def test_resume_after_a_finished_restore_names_the_disk_it_went_onto(
    saved: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive, _spare, _plan = saved
    work = tmp_path / "copy"
    work.mkdir()
    local = work / archive.name
    shutil.copyfile(archive, local)
    onto = tmp_path / "restored.img"
    sample.build_blank(onto, 64)
    assert main(["restore", str(local), "--target", str(onto), "--yes"]) == 0
    capsys.readouterr()
    assert main(["resume", str(local)]) == 0
    out = capsys.readouterr().out
    assert f"The last restore of this backup, onto {onto.name} · " in out
    assert "nothing to resume" in out


def test_restore_never_says_restored_unless_the_record_says_finished(
    saved: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An engine that returns early (a stop that slipped through) is not a finished restore."""
    from restore_tui.engine import RestoreEngine

    archive, _spare, _plan = saved
    local = tmp_path / archive.name
    shutil.copyfile(archive, local)
    onto = tmp_path / "restored.img"
    sample.build_blank(onto, 64)
    monkeypatch.setattr(RestoreEngine, "run", _run_without_finishing)
    code = main(["restore", str(local), "--target", str(onto), "--yes"])
    captured = capsys.readouterr()
    assert code == 1 and "Restored onto" not in captured.out
    assert "stopped before the end" in captured.err and "restore-tui resume" in captured.err


def _run_without_finishing(self) -> None:  # type: ignore[no-untyped-def]
    """What a cancelled engine that forgot to raise would do: a journal, not finished."""
    from restore_tui.journal import Journal

    self.journal = Journal.create(
        self.plan,
        archive_path=self.archive.path,
        target_path=self.target_path,
        target_identity=self.target_identity,
    )


def test_a_disk_that_differs_in_several_facts_is_refused_in_one_sentence(
    saved: tuple[Path, Path, Path],
) -> None:
    from archive import open_archive
    from layout.plan import PlanChoices
    from layout.probe import ImageProbe
    from restore_tui.flow import Flow

    archive, spare, _plan = saved
    with open_archive(archive) as arc:
        flow = Flow(arc, ImageProbe([str(spare)]))
        disk = flow.disk(str(spare))
        plan = flow.plan(disk, PlanChoices(job="one-partition", partition=1))
        other = disk.model_copy(
            update={
                "identity": disk.identity.model_copy(
                    update={"model": "Other disk", "size_bytes": disk.identity.size_bytes * 2}
                )
            }
        )
        reasons = flow.refusals(plan, other)
    (said,) = [r for r in reasons if r.code == "other-disk"]
    assert said.text.count("this is not the disk") == 1
    assert "it is a Other disk" in said.text and "the plan is for" in said.text
