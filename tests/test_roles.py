"""Partition roles: what each partition is for, in words the forum user understands."""

from __future__ import annotations

from archive.manifest import Role
from archive.roles import ESP_GUID, LINUX_ROOT_GUIDS, MSR_GUID, infer_role, plain_name
from layout.models import Partition, PartitionTable


def mbr(*parts: Partition) -> PartitionTable:
    return PartitionTable(scheme="msdos", disk_size_lba=2_000_000, mbr_signature="7490A9A7",
                          partitions=parts)  # fmt: skip


def test_windows_7_layout_system_reserved_then_c() -> None:
    reserved = Partition(number=1, start_lba=2048, length_lba=204800, mbr_type=7,
                         flags=("boot",), filesystem="ntfs", label="System Reserved")  # fmt: skip
    system = Partition(number=2, start_lba=206848, length_lba=1_700_000, mbr_type=7,
                       filesystem="ntfs")  # fmt: skip
    table = mbr(reserved, system)
    role, evidence = infer_role(reserved, table)
    assert role is Role.SYSTEM_RESERVED and "marked active (the one the BIOS starts)" in evidence
    role, _ = infer_role(system, table)
    assert role is Role.SYSTEM
    assert (
        plain_name(Role.SYSTEM, "ntfs") == "System — the operating system (usually C: in Windows)"
    )


def test_linux_system_is_not_called_c_drive() -> None:
    assert plain_name(Role.SYSTEM, "ext4") == "System — the operating system (Linux)"
    assert "C:" not in plain_name(Role.SYSTEM, "btrfs")


def test_gpt_types_decide_before_any_guess() -> None:
    root_guid = sorted(LINUX_ROOT_GUIDS)[0]
    table = PartitionTable(
        scheme="gpt", disk_size_lba=2_000_000, gpt_disk_guid="1B2C3D4E-0000-4000-8000-00000000ABCD",
        partitions=(
            Partition(number=1, start_lba=2048, length_lba=65536, gpt_type=ESP_GUID,
                      gpt_guid="11111111-2222-4333-8444-555555555555", filesystem="vfat"),
            Partition(number=2, start_lba=67584, length_lba=32768, gpt_type=MSR_GUID,
                      gpt_guid="21111111-2222-4333-8444-555555555555"),
            Partition(number=3, start_lba=100352, length_lba=200000, gpt_type=root_guid,
                      gpt_guid="31111111-2222-4333-8444-555555555555", filesystem="ext4"),
            Partition(number=4, start_lba=300352, length_lba=1_000_000,
                      gpt_type="0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                      gpt_guid="41111111-2222-4333-8444-555555555555", filesystem="ext4"),
        ),
    )  # fmt: skip
    roles = [infer_role(p, table)[0] for p in table.partitions]
    # The larger ext4 is data: the Linux root type names the system, not size.
    assert roles == [Role.EFI_SYSTEM, Role.MSR, Role.SYSTEM, Role.DATA]


def test_without_guessing_a_lone_filesystem_is_data() -> None:
    lone = Partition(number=1, start_lba=2048, length_lba=100000, mbr_type=0x83, filesystem="ext4")
    assert infer_role(lone, mbr(lone))[0] is Role.SYSTEM
    assert infer_role(lone, mbr(lone), guess_system=False)[0] is Role.DATA
