"""Identity matching on recorded machines: evidence, blockers, ranking and the automatic choice.

The machines in tests/data/machines are JSON lists of ProbedDisk (what the real
probe returns); the backups are manifests built from the disks they describe.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.manifest import ArchiveManifest, BootArea, SourceDisk
from layout.models import DiskIdentity, PartitionTable
from layout.notices import codes
from layout.probe import ProbedDisk, RecordedProbe, dump_disks
from restore_tui.cli import main
from restore_tui.matching import (
    Match,
    choice_explanation,
    choose_target,
    judge,
    match_disks,
)

MACHINES = Path(__file__).parent / "data" / "machines"


def machine(name: str) -> RecordedProbe:
    return RecordedProbe(MACHINES / f"{name}.json")


def manifest_for(identity: DiskIdentity, table: PartitionTable) -> ArchiveManifest:
    """A backup of a disk with this identity and table (no data: matching needs none)."""
    first = table.first_partition_lba or 2048
    return ArchiveManifest(
        created=datetime(2024, 3, 1, tzinfo=UTC),
        creator="test",
        source=SourceDisk(identity=identity, device="/dev/sda"),
        table=table,
        boot=BootArea(
            boot_code="00" * 440,
            sector0="00" * table.sector_size,
            track0_stop=first * table.sector_size,
        ),
    )


def backup_of(disk: ProbedDisk) -> ArchiveManifest:
    assert disk.table is not None
    return manifest_for(disk.identity, disk.table)


FORUM = machine("forum-laptop")
WINDOWS_DISK = FORUM.disk("/dev/sdb")
WINDOWS_BACKUP = backup_of(WINDOWS_DISK)


def by_device(matches: list[Match]) -> dict[str, Match]:
    return {m.device: m for m in matches}


def test_forum_laptop_finds_the_windows_disk_for_its_identity() -> None:
    disks = FORUM.disks()
    matches = match_disks(WINDOWS_BACKUP, disks, "/dev/sdc")
    assert [m.device for m in matches] == ["/dev/sdb", "/dev/sda", "/dev/sdc"]
    best = matches[0]
    assert best.device == "/dev/sdb" and best.strong and not best.blockers
    assert "same disk signature 7490A9A7 as the backed-up disk" in best.reasons
    assert "same serial number WD-WCC6Y1234567 as the backed-up disk" in best.reasons
    assert "same WWN 0x50014ee2b5f0c1a2 as the backed-up disk" in best.reasons
    assert "same model (WDC WD10EZEX-08WN4A0)" in best.reasons
    assert any("filesystem UUIDs from the backup found on this disk: 2 of 2" in r
               for r in best.reasons)
    assert any('"System Reserved"' in r for r in best.reasons)
    usb = by_device(matches)["/dev/sdc"]
    assert "holds-backup" in codes(usb.blockers)
    assert any("partition 1 is mounted at /media/usb" in b.text for b in usb.blockers)
    assert choose_target(matches) is best
    assert "Chose WDC WD10EZEX-08WN4A0" in choice_explanation(matches)


def test_blocked_disks_rank_below_usable_ones_without_evidence() -> None:
    matches = match_disks(WINDOWS_BACKUP, FORUM.disks(), "/dev/sdc")
    # The rescue stick is in use and too small; the backup drive holds the archive.
    stick = by_device(matches)["/dev/sda"]
    assert any(b.text.startswith("too small: ") for b in stick.blockers)
    assert stick.reasons == ["nothing links this disk to the backup"]


def test_replaced_disk_nothing_is_chosen_and_the_reasons_say_why() -> None:
    probe = machine("replaced-disk")
    matches = match_disks(WINDOWS_BACKUP, probe.disks(), None)
    assert not any(m.strong for m in matches)
    assert choose_target(matches) is None
    found = by_device(matches)
    spare = found["/dev/sdb"]
    # Same model and size, but a model is not an identity: supporting evidence only.
    assert "same model (WDC WD10EZEX-08WN4A0)" in spare.reasons
    assert "same size (931.5 GiB)" in spare.reasons
    assert "no strong evidence that this is the backed-up disk" in spare.reasons
    assert matches[0] is spare  # the most evidence among the usable disks
    ssd = found["/dev/sda"]
    assert any(r.startswith("larger than the backed-up disk by 931.5 GiB") for r in ssd.reasons)
    old = found["/dev/sdc"]
    assert "too small: 465.8 GiB smaller than the backed-up disk (465.8 GiB here, 931.5 GiB "\
        "needed)" in [b.text for b in old.blockers]
    k4 = found["/dev/sdd"]
    assert (
        "uses 4096-byte sectors, but the backup was made from a disk with 512-byte sectors"
        in [b.text for b in k4.blockers]
    )
    sd = found["/dev/mmcblk0"]
    assert any(b.text.startswith("read-only: ") for b in sd.blockers)
    system = found["/dev/nvme0n1"]
    assert any("partition 2 is mounted at /" in b.text for b in system.blockers)
    text = choice_explanation(matches)
    assert "None of the attached disks is clearly the backed-up disk" in text
    for device in found:
        assert f"({device})" in text
    # Usable disks come before blocked ones.
    usable = [bool(m.blockers) for m in matches]
    assert usable == sorted(usable)


def test_two_disks_with_the_backed_up_identity_are_not_chosen_between() -> None:
    probe = machine("cloned-disks")
    # A backup made from the copy: both disks carry its signature, only one its serial.
    twin = probe.disk("/dev/sdc")
    matches = match_disks(backup_of(twin), probe.disks(), "/dev/sdd")
    assert matches[0].device == "/dev/sdc"  # signature and serial beat signature alone
    other = by_device(matches)["/dev/sdb"]
    assert other.strong
    assert any(r.startswith("serial number differs (WD-WCC6Y1234567") for r in other.reasons)
    assert choose_target(matches) is None
    text = choice_explanation(matches)
    assert "More than one disk carries the backed-up disk's identity" in text
    assert "/dev/sdb" in text and "/dev/sdc" in text


def test_backed_up_disk_in_use_is_named_but_not_chosen() -> None:
    disks = [
        d.model_copy(update={"in_use": ("partition 2 is active swap",)})
        if d.device == "/dev/sdb" else d
        for d in FORUM.disks()
    ]
    matches = match_disks(WINDOWS_BACKUP, disks, "/dev/sdc")
    assert matches[0].device == "/dev/sdb"
    assert choose_target(matches) is None
    text = choice_explanation(matches)
    assert "The backed-up disk is attached but cannot be restored onto now" in text
    assert "partition 2 is active swap" in text


def test_gpt_disk_guid_and_loop_archive_disk() -> None:
    probe = machine("gpt-nvme")
    nvme = probe.disk("/dev/nvme0n1")
    holding = probe.disk_holding("/mnt/backup/laptop.rta")
    assert holding == "/dev/loop0"
    matches = match_disks(backup_of(nvme), probe.disks(), holding)
    best = matches[0]
    assert best.device == "/dev/nvme0n1"
    assert (
        "same GPT disk GUID 7C2D5B9E-3A41-4F6B-9E0D-2B8C6A1F4E33 as the backed-up disk"
        in best.reasons
    )
    assert "partition GUIDs from the backup found on this disk: 2 of 2" in best.reasons
    loop = by_device(matches)["/dev/loop0"]
    assert "holds-backup" in codes(loop.blockers)
    assert choose_target(matches) is best


def test_signature_of_a_different_scheme_or_zero_is_not_evidence() -> None:
    blank_sig = WINDOWS_DISK.table
    assert blank_sig is not None
    zero = blank_sig.model_copy(update={"mbr_signature": "00000000"})
    backup = manifest_for(
        WINDOWS_DISK.identity.model_copy(update={"serial": None, "wwn": None}), zero
    )
    target = WINDOWS_DISK.model_copy(update={"table": zero})
    (m,) = match_disks(backup, [target], None)
    assert not m.strong  # every blank-signature disk would "match" otherwise


def test_recorded_probe_round_trip(tmp_path: Path) -> None:
    disks = FORUM.disks()
    path = tmp_path / "m.json"
    path.write_text(dump_disks(disks))
    assert RecordedProbe(path).disks() == disks


# --- determinism: shuffled enumeration and renamed /dev nodes -----------------

RENAMES = [f"/dev/sd{c}" for c in "abcdefghij"] + ["/dev/nvme1n1", "/dev/vdb", "/dev/xvdz"]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["forum-laptop", "replaced-disk", "cloned-disks", "gpt-nvme"]),
    st.randoms(use_true_random=False),
)
def test_ranking_ignores_order_and_dev_names(name: str, rnd: random.Random) -> None:
    probe = machine(name)
    disks = probe.disks()
    source = next((d for d in disks if d.table is not None), disks[0])
    backup = backup_of(source) if source.table else WINDOWS_BACKUP
    archive_disk = disks[-1].device
    baseline = match_disks(backup, disks, archive_disk)

    names = rnd.sample(RENAMES, len(disks))
    renamed = {d.device: new for d, new in zip(disks, names, strict=True)}
    shuffled = [d.model_copy(update={"device": renamed[d.device]}) for d in disks]
    rnd.shuffle(shuffled)
    again = match_disks(backup, shuffled, renamed[archive_disk])

    def summary(ms: list[Match]) -> list[tuple[str, int, list[str], list[str]]]:
        return [
            (m.disk.model_copy(update={"device": ""}).model_dump_json(), m.score, m.reasons,
             m.blockers)
            for m in ms
        ]

    assert summary(again) == summary(baseline)
    chosen, chosen_again = choose_target(baseline), choose_target(again)
    assert (chosen is None) == (chosen_again is None)
    if chosen is not None and chosen_again is not None:
        assert renamed[chosen.device] == chosen_again.device


# --- the command line on a real archive file ----------------------------------


def test_match_command_on_image_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    import subprocess

    from archive.backup import backup

    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk is not installed")
    source = tmp_path / "laptop.img"
    with source.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(
        ["sfdisk", "-q", str(source)],
        input="label: dos\nlabel-id: 0x7490a9a7\nstart=2048,size=40960,type=83\n",
        text=True, check=True,
    )
    archive = tmp_path / "laptop.rta"
    backup(str(source), archive)
    bigger = tmp_path / "bigger.img"
    with bigger.open("wb") as f:
        f.truncate(128 * 1024 * 1024)
    smaller = tmp_path / "smaller.img"
    with smaller.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    images = ["--image", str(smaller), "--image", str(bigger), "--image", str(source)]

    assert main(["match", str(archive), "--json", *images]) == 0
    listed = json.loads(capsys.readouterr().out)
    ours = [m for m in listed if m["device"] in {str(source), str(bigger), str(smaller)}]
    assert [m["device"] for m in ours] == [str(source), str(bigger), str(smaller)]
    assert ours[0]["strong"] is True and ours[0]["blockers"] == []
    assert "same disk signature 7490A9A7 as the backed-up disk" in ours[0]["reasons"]
    assert ours[2]["blockers"][0].startswith("too small: 48.0 MiB smaller")
    # The disk holding the archive file (whatever it is on this machine) is refused.
    holding = [m for m in listed if "holds-backup" in m["blocker_codes"]]
    from layout.probe import disks_holding

    assert [m["device"] for m in holding] == [
        d for d in disks_holding(str(archive)) if d in {m["device"] for m in listed}
    ]

    # Only the images: other disks on this machine (another test's loop device holding
    # a copy of the same disk, say) would rightly make the choice ambiguous.
    assert main(["match", str(archive), "--only-images", *images]) == 0
    text = capsys.readouterr().out
    assert "1. laptop.img · 64.0 MiB · image file — the backed-up disk" in text
    assert "Chose laptop.img" in text


def test_size_words_only_for_a_whole_disk_job() -> None:
    """'Larger by … stays unallocated' and 'too small' mean nothing for one partition."""
    disks = machine("replaced-disk").disks()
    big = max(disks, key=lambda d: d.identity.size_bytes)
    small = min(disks, key=lambda d: d.identity.size_bytes)
    # A backup of a disk between the two sizes: one disk is larger, one too small.
    middle = DiskIdentity(size_bytes=(big.identity.size_bytes + small.identity.size_bytes) // 2)
    table = PartitionTable(scheme="msdos", disk_size_lba=middle.size_bytes // 512 - 1,
                           mbr_signature="12345678")  # fmt: skip
    backup = manifest_for(middle, table)
    whole_big, whole_small = judge(backup, big, set()), judge(backup, small, set())
    assert any("stays unallocated" in r for r in whole_big.reasons)
    assert any(b.text.startswith("too small") for b in whole_small.blockers)
    for disk in (big, small):
        whole = judge(backup, disk, set())
        single = judge(backup, disk, set(), "one-partition")
        assert not any("stays unallocated" in r for r in single.reasons)
        # A one-partition job adds its own free-space blockers; size is a whole-disk one.
        room = {"table-damaged", "no-free-space", "no-room"}
        assert [b for b in whole.blockers if b.code != "too-small"] == [
            b for b in single.blockers if b.code not in room
        ]
