"""What each partition is for, inferred from its table entry and filesystem.

Roles decide restore order (boot pieces before the system) and give every
partition a name a person understands instead of "Partition 5-1".
"""

from __future__ import annotations

from archive.manifest import Role
from layout.models import Partition, PartitionTable

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
MSR_GUID = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
WINDOWS_RECOVERY_GUID = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
LINUX_SWAP_GUID = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
LINUX_ROOT_GUIDS = {
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",  # x86-64
    "44479540-F297-41B2-9AF7-D131D5F0458A",  # x86
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",  # arm64
}
BASIC_DATA_GUID = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX_DATA_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MBR_EXTENDED_TYPES = {0x05, 0x0F, 0x85}

PLAIN_NAMES: dict[Role, str] = {
    Role.SYSTEM_RESERVED: "System Reserved — Windows boot files",
    Role.EFI_SYSTEM: "EFI System — the files the computer starts from",
    Role.BIOS_BOOT: "BIOS boot — start-up code for GRUB",
    Role.MSR: "Microsoft Reserved — space Windows keeps for itself",
    Role.SYSTEM: "System — the operating system (usually C: in Windows)",
    Role.DATA: "Data — your files",
    Role.SWAP: "Swap — temporary memory space, nothing to keep",
    Role.RECOVERY: "Recovery — the maker's or Windows' repair tools",
    Role.EXTENDED: "Extended — a container for more partitions",
}

RESERVED_ROLES = frozenset({Role.EFI_SYSTEM, Role.BIOS_BOOT, Role.SYSTEM_RESERVED, Role.MSR})


LINUX_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})


def plain_name(role: Role, filesystem: str | None = None) -> str:
    """The role in everyday words; the filesystem tells a Windows system from a Linux one."""
    if role is Role.SYSTEM and filesystem in LINUX_FILESYSTEMS:
        return "System — the operating system (Linux)"
    return PLAIN_NAMES[role]


def _system_candidate(p: Partition) -> bool:
    return p.filesystem in {"ntfs", "ext4", "ext3", "ext2", "xfs", "btrfs"}


def infer_role(
    partition: Partition, table: PartitionTable, *, guess_system: bool = True
) -> tuple[Role, tuple[str, ...]]:
    """The partition's role and the facts it was inferred from, in plain words.

    ``guess_system=False`` leaves out the weakest guess (the largest partition is
    the system): right for partitions already on a target, which may be anything.
    """
    p = partition
    label = (p.label or p.gpt_name or "").strip()
    gtype = p.gpt_type
    if p.kind == "extended" or (p.mbr_type in MBR_EXTENDED_TYPES and table.scheme == "msdos"):
        return Role.EXTENDED, (f"MBR type {p.mbr_type or 0:#04x} is an extended container",)
    if gtype == ESP_GUID or p.mbr_type == 0xEF or "esp" in p.flags:
        return Role.EFI_SYSTEM, ("partition type is EFI System",)
    if gtype == BIOS_BOOT_GUID or "bios_grub" in p.flags:
        return Role.BIOS_BOOT, ("partition type is BIOS boot",)
    if gtype == MSR_GUID or "msr" in p.flags:
        return Role.MSR, ("partition type is Microsoft Reserved",)
    if gtype == WINDOWS_RECOVERY_GUID or p.mbr_type == 0x27:
        return Role.RECOVERY, ("partition type is a recovery partition",)
    if gtype == LINUX_SWAP_GUID or p.mbr_type == 0x82 or p.filesystem == "swap":
        return Role.SWAP, ("holds Linux swap",)
    size_mib = p.length_lba * table.sector_size // (1024 * 1024)
    if label.lower() == "system reserved" or (
        p.filesystem == "ntfs"
        and "boot" in p.flags
        and size_mib <= 1024
        and table.scheme == "msdos"
        and any(q.filesystem == "ntfs" and q.length_lba > p.length_lba for q in table.partitions)
    ):
        evidence = [f"label is {label!r}"] if label else []
        evidence.append(f"small NTFS partition ({size_mib} MiB)")
        if "boot" in p.flags:
            evidence.append("marked active (the one the BIOS starts)")
        return Role.SYSTEM_RESERVED, tuple(evidence)
    if label.lower() in {"recovery", "winre", "windows re tools"}:
        return Role.RECOVERY, (f"label is {label!r}",)
    if gtype in LINUX_ROOT_GUIDS:
        return Role.SYSTEM, ("partition type is a Linux root filesystem",)
    # The system partition: the largest partition with an OS-capable filesystem,
    # unless a Linux root type already named one.
    candidates = [q for q in table.partitions if _system_candidate(q) and q.kind != "extended"]
    named_root = any(q.gpt_type in LINUX_ROOT_GUIDS for q in table.partitions)
    if guess_system and not named_root and candidates:
        largest = max(candidates, key=lambda q: (q.length_lba, -q.number))
        if largest.number == p.number:
            return Role.SYSTEM, (
                f"largest {p.filesystem} partition on the disk ({size_mib} MiB)",
            )
    if p.filesystem:
        return Role.DATA, (f"holds a {p.filesystem} filesystem",)
    return Role.DATA, ("no filesystem recognised: kept as raw sectors",)
