"""The target step says what each disk holds now and what the chosen job does to it."""

from __future__ import annotations

from planner_fixtures import GiB, make_manifest, mbr_with_logicals, probed

from layout.models import Partition, PartitionTable
from restore_tui.app import candidate_for
from restore_tui.matching import judge

PHOTOS = PartitionTable(
    scheme="msdos", disk_size_lba=196608, mbr_signature="0D15C0DE",
    partitions=(Partition(number=1, start_lba=2048, length_lba=77824, mbr_type=0x83,
                          filesystem="ext4", label="photos"),),
)  # fmt: skip


def test_a_whole_disk_restore_says_his_photos_are_erased() -> None:
    manifest = make_manifest(mbr_with_logicals())
    disk = probed(PHOTOS, 4 * GiB)
    whole = candidate_for(judge(manifest, disk, set(), "full-disk"))
    assert whole.holds == (
        "Holds now: ext4 partition “photos” (38.0 MiB) — a whole-disk restore erases all of it."
    )
    one = candidate_for(judge(manifest, disk, set(), "one-partition"))
    assert one.holds.endswith("these stay as they are; only free space is used.")


def test_a_blank_disk_and_a_blocked_one_say_so_without_contradiction() -> None:
    manifest = make_manifest(mbr_with_logicals())
    blank = candidate_for(judge(manifest, probed(None, 4 * GiB), set(), "one-partition"))
    assert blank.holds.startswith("Holds now: no partition table")
    assert not blank.blocked  # a new table is made for it
    assert any("largest free space" in n for n in blank.notes)
    wiped = candidate_for(judge(manifest, probed(None, 4 * GiB), set(), "one-partition", (2,)))
    assert wiped.blocked and not any("largest free space" in n for n in wiped.notes)
    assert any("restore the whole disk instead" in b for b in wiped.blockers)
