"""Preview tests: layout rows, proportional bars, and golden renderings of whole plans.

Golden files live in tests/golden/; regenerate them after a deliberate change with
``UPDATE_GOLDEN=1 pytest tests/test_preview.py`` and read the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from planner_fixtures import (
    DIGEST,
    GiB,
    disk_from_table,
    gpt_table,
    make_manifest,
    mbr_with_logicals,
    probed,
    probed_from_disk,
)

from layout.models import Partition, PartitionTable
from layout.plan import Plan
from restore_tui.plan_text import bar_segments, layout_rows, plan_statuses, render_bar, render_text
from restore_tui.planner import plan_full_disk, plan_one_partition, plan_replace_partition

GOLDEN = Path(__file__).parent / "golden"
ARCHIVE = "/media/usb/backup.rtar"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text()


def full_mbr_over_gpt() -> Plan:
    """The forum case: a Windows MBR backup onto a larger disk that had a GPT layout."""
    manifest = make_manifest(mbr_with_logicals())
    target = probed(gpt_table(), 4 * GiB)
    original = probed(mbr_with_logicals(), 2 * GiB, device="/dev/sda", model="WDC WD5000AAKX",
                      serial="WD-WCAYUJ123456")
    return plan_full_disk(manifest, DIGEST, ARCHIVE, target, other_disks=[original])


def full_gpt_onto_blank() -> Plan:
    manifest = make_manifest(gpt_table())
    return plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, 2 * GiB), new_ids=True,
                          id_seed=42)


def one_partition_into_extended() -> Plan:
    source = mbr_with_logicals()
    manifest = make_manifest(source)
    disk = disk_from_table(source.model_copy(update={"partitions": source.partitions[:4]}),
                           2 * GiB)
    target = probed_from_disk(disk)
    inside = next(r for r in target.free if r.inside_extended)
    return plan_one_partition(manifest, DIGEST, ARCHIVE, target, 6, inside,
                              ebr_lbas=disk.ebr_lbas())


def replace_windows_partition() -> Plan:
    """Partition 3 (NTFS "Windows") put back over itself, found by its partition GUID."""
    manifest = make_manifest(gpt_table())
    return plan_replace_partition(manifest, DIGEST, ARCHIVE, probed(gpt_table(), GiB), 3)


def full_gpt_grown_onto_larger() -> Plan:
    """The whole GPT disk onto one twice as large, its last partition grown to the end."""
    manifest = make_manifest(gpt_table())
    return plan_full_disk(manifest, DIGEST, ARCHIVE, probed(None, 2 * GiB), grow=4)


@pytest.mark.parametrize(
    ("name", "build", "exact"),
    [
        ("full_mbr_over_gpt.txt", full_mbr_over_gpt, False),
        ("full_gpt_onto_blank_exact.txt", full_gpt_onto_blank, True),
        ("one_partition_into_extended_exact.txt", one_partition_into_extended, True),
        ("replace_windows_partition.txt", replace_windows_partition, False),
        ("full_gpt_grown_onto_larger.txt", full_gpt_grown_onto_larger, False),
    ],
)
def test_render_text_golden(name: str, build: object, exact: bool) -> None:
    assert callable(build)
    check_golden(name, render_text(build(), exact=exact))


def test_preview_names_what_matters() -> None:
    text = render_text(full_mbr_over_gpt())
    assert "Nothing has been written yet" in text
    assert "Before (GPT, disk GUID 5E2B6B0B-1E50-4C16-9B8B-2B3C7E0F4A11)" in text
    assert "After (MBR, disk signature 7490A9A7)" in text
    assert "Everything on Samsung SSD 860 EVO 1TB · 4.0 GiB · serial S3Z9NB0K812345X" in text
    assert "Two disks would share an identity" in text
    assert "sectors 2048-206847" not in text  # exact ranges only with --exact
    exact = render_text(full_mbr_over_gpt(), exact=True)
    assert "sectors 2048-206847" in exact
    assert "bytes 0-511 (512 bytes)" in exact


def test_rows_show_statuses_and_unallocated_space() -> None:
    plan = full_mbr_over_gpt()
    before_status, after_status = plan_statuses(plan)
    ss = 512
    size_lba = 4 * GiB // ss
    after = layout_rows(plan.after, size_lba, ss, after_status)
    assert [(r.number, r.kind, r.status) for r in after] == [
        (1, "primary", "created"),
        (2, "primary", "created"),
        (3, "extended", "created"),
        (5, "logical", "created"),
        (6, "logical", "created"),
        (None, "free", "unallocated"),  # inside the extended container
        (None, "free", "unallocated"),  # the larger disk's extra space
    ]
    assert after[-1].start_lba == 3435648 and after[-1].end_lba == size_lba - 1
    assert after[0].name == "System Reserved — Windows boot files"
    before = layout_rows(plan.before, size_lba, ss, before_status)
    assert {r.status for r in before if r.number} == {"replaced"}

    one = one_partition_into_extended()
    _before, statuses = plan_statuses(one)
    assert statuses == {1: "kept", 2: "kept", 3: "kept", 5: "kept", 6: "created"}


def test_blank_disk_is_one_unallocated_row() -> None:
    rows = layout_rows(None, GiB // 512, 512)
    assert len(rows) == 1 and rows[0].status == "unallocated"
    assert rows[0].name == "Unallocated (no partition table)"


def test_bar_is_proportional_and_every_row_is_visible() -> None:
    table = PartitionTable.model_validate(
        {
            "scheme": "msdos", "disk_size_lba": 10_000_000, "mbr_signature": "00000001",
            "partitions": [
                {"number": 1, "start_lba": 2048, "length_lba": 2048, "mbr_type": 7},
                {"number": 2, "start_lba": 4096, "length_lba": 6_000_000, "mbr_type": 7},
            ],
        }
    )
    rows = layout_rows(table, 10_000_000, 512)
    segments = bar_segments(rows, width=60)
    assert sum(s.columns for s in segments) == 60
    assert [s.symbol for s in segments] == ["1", "2", "."]
    assert segments[0].columns == 1  # 1 MiB of 4.8 GiB still gets a column
    assert 35 <= segments[1].columns <= 37 and 22 <= segments[2].columns <= 24
    assert render_bar(segments) == "|" + "1" + "2" * segments[1].columns + "." * (
        segments[2].columns
    ) + "|"


def test_partitions_already_on_the_target_are_not_guessed_to_be_a_system() -> None:
    """A lone ext4 on the target is 'photos', not 'the operating system' (it may be anything):
    in every job, what a disk holds now is named by its filesystem, never by a guessed role."""
    table = PartitionTable(
        scheme="msdos", disk_size_lba=196608, mbr_signature="0D15C0DE",
        partitions=(Partition(number=1, start_lba=2048, length_lba=77824, mbr_type=0x83,
                              filesystem="ext4", label="photos"),),
    )  # fmt: skip
    for status in ("kept", "replaced"):
        now = layout_rows(table, 196608, 512, {1: status}, on_disk_now=True)[0]  # type: ignore[dict-item]
        assert now.name == "ext4 partition" and now.label == "photos"
    created = layout_rows(table, 196608, 512, {1: "created"})[0]
    assert created.name.startswith("System")  # from the backup: the usual inference


def test_the_text_preview_fits_80_columns() -> None:
    """`plan` on a rescue console: no line is cut or wrapped by the terminal."""
    for build in (full_mbr_over_gpt, full_gpt_onto_blank, one_partition_into_extended):
        long = [line for line in render_text(build()).splitlines() if len(line) > 80]
        assert not long, long


def test_the_wizard_says_what_the_hidden_sectors_fix_means() -> None:
    from layout.notices import notice
    from restore_tui.screens.preview import wizard_words

    said = notice("hidden-sectors-updated", "… the 'hidden sectors' field …", old_start=1)
    words = wizard_words(said, one_partition_into_extended())
    assert "hidden sectors" not in words and "Windows still finds it" in words
