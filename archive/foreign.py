"""Backups made by other tools that restore-tui cannot read: what they are, in words.

People bring what they have: an Acronis ``Full C Drive.tib``, a Macrium image, a
Windows system image, a virtual machine's disk. For each such file the refusal says
what the file is, that restore-tui cannot read it, and what to do instead, in a few
lines that stand alone (the command line prints them after ``error:``; the wizard
shows them on its first step).

Recognised by content wherever a public source gives the format's signature; the
file name is only a hint, and a format known by its name alone is said to "look
like" one. Where the signatures come from:

- VHD: the "conectix" footer (disk type at byte 60, 2 fixed, 3 dynamic,
  4 differencing; a copy of the footer at the start for dynamic disks), as QEMU's
  ``block/vpc.c`` reads it. A fixed-size VHD with a partition table is a raw disk
  with a footer: ``archive.raw`` restores it, so it never reaches this module.
- VHDX: "vhdxfile" at offset 0 (QEMU ``block/vhdx.h``, ``VHDX_FILE_SIGNATURE``).
- qcow/qcow2: "QFI\\xfb" at 0, version after it (QEMU ``block/qcow.h``, ``qcow2.h``).
- VMDK: "KDMV" (and the older "COWD") at 0, or a text descriptor that begins
  "# Disk DescriptorFile" (QEMU ``block/vmdk.c``).
- ntfsclone: "\\0ntfsclone-image" at 0 (ntfs-3g ``ntfsclone.c``, ``IMAGE_MAGIC``),
  also inside gzip/zstd/... compression as Clonezilla saves it.
- partimage: "PaRtImAgE-VoLuMe" at 0 (partimage ``MAGIC_BEGIN_VOLUME``), also
  inside gzip or bzip2 compression.
- Acronis .tib: b4 6e 68 44 at 0 (PhotoRec's ``file_tib.c``) or ce 24 b9 a2 (the
  volume header of later versions, from a public reverse-engineered reader).
- Macrium Reflect X: the 12 bytes "MACRIUM_FILE" at the very end (Macrium's own
  published file layout, github.com/macrium/mrimgx_file_layout).
- By name only: Acronis .tibx, Macrium .mrimg of Reflect 8 and older, Norton Ghost
  .gho, AOMEI .adi, EaseUS .pbd.
"""

from __future__ import annotations

import os
import re
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path

from archive.errors import ArchiveError

HEAD_BYTES = 64 * 1024  # the VMDK descriptor, the ISO 9660 volume descriptor
TAIL_BYTES = 1024

_COMPRESSION_COMMANDS = {
    "gzip": "gunzip -c",
    "zstd": "zstd -dc",
    "xz": "xz -dc",
    "lzma": "xz -dc",
    "bzip2": "bzip2 -dc",
    "lz4": "lz4 -dc",
}
_DECOMPRESS_TO_FILE = {
    "gzip": "gunzip -k",
    "zstd": "zstd -d",
    "xz": "unxz -k",
    "bzip2": "bunzip2 -k",
    "lz4": "lz4 -d",
    "lzop": "lzop -d",
    "lzip": "lzip -d -k",
}
ACRONIS_MAGICS = (b"\xb4\x6e\x68\x44", b"\xce\x24\xb9\xa2")
NTFSCLONE_MAGIC = b"\0ntfsclone-image"
PARTIMAGE_MAGIC = b"PaRtImAgE-VoLuMe"
MACRIUM_X_MAGIC = b"MACRIUM_FILE"
VMDK_DESCRIPTOR = b"# Disk DescriptorFile"

_EXTENSIONS = {
    ".tib": "acronis-tib",
    ".tibx": "acronis-tibx",
    ".mrimg": "macrium",
    ".mrimgx": "macrium",
    ".vhd": "vhd",
    ".avhd": "vhd",
    ".vhdx": "vhdx",
    ".avhdx": "vhdx",
    ".qcow2": "qcow",
    ".qcow": "qcow",
    ".vmdk": "vmdk",
    ".gho": "ghost",
    ".ghs": "ghost",
    ".adi": "aomei",
    ".pbd": "easeus",
}


@dataclass(frozen=True)
class Finding:
    """A file recognised as another tool's backup or virtual disk.

    ``confirmed``: by its content (its signature); otherwise by its name only.
    ``detail``: the compression around an ntfsclone/partimage image, the qcow
    version, the VHD kind ("dynamic", "differencing", "fixed"), or the VMDK
    descriptor's data files.
    """

    kind: str
    confirmed: bool
    detail: str = ""


def _read_ends(path: Path) -> tuple[bytes, bytes, int]:
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEAD_BYTES)
        f.seek(max(0, size - TAIL_BYTES))
        tail = f.read(TAIL_BYTES)
    return head, tail, size


def _decompressed_head(path: Path, head: bytes) -> tuple[str, bytes] | None:
    """(compression, first bytes) of a compressed file that restore-tui can decompress."""
    from archive.decompress import ImageStream, compression_from_magic, image_files

    compression = compression_from_magic(head)
    if compression is None:
        return None
    try:
        stream = ImageStream(image_files(path))
    except (ArchiveError, OSError):
        return (compression, b"")
    try:
        return (compression, stream.read(64) or b"")
    except (ArchiveError, OSError, EOFError):
        return (compression, b"")
    finally:
        stream.close()


def _vhd_kind(footer: bytes) -> str:
    disk_type = struct.unpack_from(">I", footer, 60)[0] if len(footer) >= 64 else 0
    return {2: "fixed", 3: "dynamic", 4: "differencing"}.get(disk_type, "dynamic")


def _vmdk_extents(head: bytes) -> str:
    """The descriptor's data files as "FLAT|name;SPARSE|name" (quoted names of extent lines)."""
    text = head.decode("utf-8", errors="replace")
    found = re.findall(r'^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+(\w+)\s+"([^"]+)"', text, re.M)
    return ";".join(f"{kind}|{name}" for kind, name in found)


def identify(path: Path) -> Finding | None:
    """What other tool made ``path``, by content first and by name second; None: unknown."""
    try:
        head, tail, size = _read_ends(path)
    except OSError:
        return None
    footer = tail[-512:] if size >= 512 else b""
    if head[:8] == b"vhdxfile":
        return Finding("vhdx", True)
    if head[:8] == b"conectix":
        return Finding("vhd", True, _vhd_kind(head))
    if footer[:8] == b"conectix":
        return Finding("vhd", True, _vhd_kind(footer))
    if head[:4] == b"QFI\xfb":
        version = struct.unpack_from(">I", head, 4)[0] if len(head) >= 8 else 0
        return Finding("qcow", True, "qcow" if version == 1 else "qcow2")
    if head[:4] in (b"KDMV", b"COWD"):
        return Finding("vmdk", True)
    if head.lstrip().startswith(VMDK_DESCRIPTOR):
        return Finding("vmdk-descriptor", True, _vmdk_extents(head))
    if head.startswith(NTFSCLONE_MAGIC):
        return Finding("ntfsclone", True)
    if head.startswith(PARTIMAGE_MAGIC):
        return Finding("partimage", True)
    if head[:4] in ACRONIS_MAGICS:
        return Finding("acronis-tib", True)
    if tail.endswith(MACRIUM_X_MAGIC):
        return Finding("macrium", True, "x")
    inner = _decompressed_head(path, head)
    if inner is not None:
        compression, data = inner
        if data.startswith(NTFSCLONE_MAGIC):
            return Finding("ntfsclone", True, compression)
        if data.startswith(PARTIMAGE_MAGIC):
            return Finding("partimage", True, compression)
    name = path.name.lower()
    suffix = Path(name).suffix
    if suffix in _EXTENSIONS:
        return Finding(_EXTENSIONS[suffix], False)
    if ".ntfs-img" in name:
        return Finding("ntfsclone", False)
    if ".partimg" in name:
        return Finding("partimage", False)
    return None


# -- the words -------------------------------------------------------------------------


def _windows_image_recovery(source: str, extra: str = "") -> str:
    """What to do with a Windows system image; ``source`` is the file as the command names it."""
    return (
        "Restore a Windows system image with Windows' own System Image Recovery (start from "
        "a Windows repair disc or installation media, choose Repair your computer, then "
        "System Image Recovery; keep the WindowsImageBackup folder at the top of its disk), "
        f"or convert the file to a raw disk image with `qemu-img convert -O raw {source} "
        f"disk.img`{extra} and choose disk.img here"
    )


def refusal_message(path: Path, finding: Finding, table_problem: str | None = None) -> str:
    """The sentence for a file that another tool made: what it is and what to do instead.

    ``table_problem``: why the disk inside a fixed-size VHD could not be used.
    """
    name = path.name
    arg = shlex.quote(name)  # as a shell command names the file
    is_ = "is" if finding.confirmed else "looks like"
    kind, detail = finding.kind, finding.detail
    if kind == "acronis-tib":
        return (
            f"{name} {is_} an Acronis True Image backup (.tib). restore-tui cannot read "
            "Acronis's own format. Restore it with Acronis True Image's rescue media (the "
            "bootable USB stick or CD it makes). Or, in Windows with Acronis True Image "
            "installed, convert the backup to a .vhdx virtual disk (Acronis True Image 2021 "
            "can; its rescue media cannot), then run `qemu-img convert -O raw BACKUP.vhdx "
            "disk.img` and choose disk.img here"
        )
    if kind == "acronis-tibx":
        return (
            f"{name} {is_} an Acronis backup in Acronis's newer .tibx format. restore-tui "
            "cannot read Acronis's own formats. Restore it with the rescue media of the "
            "Acronis program that made it (the bootable USB stick or CD it makes)"
        )
    if kind == "macrium":
        text = (
            f"{name} {is_} a Macrium Reflect image{' (Reflect X)' if detail == 'x' else ''}. "
            "restore-tui cannot read Macrium's format. Restore it with Macrium Reflect's "
            "rescue media: the bootable USB stick or CD that Macrium Reflect (the free "
            "edition too) makes in Windows"
        )
        if detail == "x":
            text += (
                ". Macrium also publishes a free tool, img_to_vhdx, that turns a Reflect X "
                "image into a .vhdx virtual disk in Windows"
            )
        return text
    if kind == "vhd":
        if detail == "fixed":
            return (
                f"{name} is a Windows virtual disk (.vhd) of fixed size, but the disk in it "
                "has no partition table that restore-tui can use"
                + (f" ({table_problem}). " if table_problem else ". ")
                + _windows_image_recovery(arg)
            )
        if detail == "differencing":
            return (
                f"{name} is a differencing Windows virtual disk (.vhd): it holds only the "
                "changes made after its parent disk. restore-tui cannot read it. "
                + _windows_image_recovery(arg, " (with the parent .vhd beside it)")
            )
        if not finding.confirmed:
            return (
                f"{name} looks like a Windows virtual disk (.vhd), but not one restore-tui "
                "can read. " + _windows_image_recovery(arg)
            )
        return (
            f"{name} is a Windows virtual disk (.vhd) that grows as it fills, as Windows "
            "7's system image backup makes them. restore-tui cannot read such a .vhd. "
            + _windows_image_recovery(arg)
        )
    if kind == "vhdx":
        return (
            f"{name} {is_} a Windows virtual disk (.vhdx), as Windows 8 and later keep "
            "system image backups. restore-tui cannot read .vhdx files. "
            + _windows_image_recovery(arg)
        )
    if kind == "qcow":
        fmt = detail or "qcow2"
        return (
            f"{name} {is_} a QEMU virtual disk ({fmt}). restore-tui reads raw disk images, "
            f"not {fmt}: convert it with `qemu-img convert -O raw {arg} disk.img` "
            "(qemu-img comes with QEMU; on Debian in the qemu-utils package) and choose "
            "disk.img here"
        )
    if kind == "vmdk":
        return (
            f"{name} {is_} a VMware virtual disk (.vmdk). restore-tui reads raw disk images, "
            f"not VMware's: convert it with `qemu-img convert -O raw {arg} disk.img` "
            "(qemu-img comes with QEMU; on Debian in the qemu-utils package) and choose "
            "disk.img here"
        )
    if kind == "vmdk-descriptor":
        extents = [item.split("|", 1) for item in detail.split(";") if "|" in item]
        files = ", ".join(file for _, file in extents) or "the files it names"
        if len(extents) == 1 and extents[0][0].upper() == "FLAT":
            return (
                f"{name} only describes a VMware virtual disk; the disk itself is in "
                f"{files}, a byte-for-byte copy of it: choose {files} here instead"
            )
        return (
            f"{name} only describes a VMware virtual disk; the disk itself is in {files}. "
            f"restore-tui reads raw disk images, not VMware's: convert it with `qemu-img "
            f"convert -O raw {arg} disk.img` (with those files beside it) and choose "
            "disk.img here"
        )
    if kind == "ntfsclone":
        if detail in _COMPRESSION_COMMANDS:
            command = (
                f"{_COMPRESSION_COMMANDS[detail]} {arg} | "
                "ntfsclone --restore-image --overwrite /dev/PARTITION -"
            )
        else:
            command = f"ntfsclone --restore-image --overwrite /dev/PARTITION {arg}"
        packed = f", compressed with {detail}" if detail else ""
        return (
            f"{name} {is_} an ntfsclone image of one NTFS partition{packed}. restore-tui "
            "cannot read ntfsclone images. Restore it with ntfsclone itself (from ntfs-3g) "
            f"onto a partition at least as large: `{command}`. Check the partition's name "
            "twice: everything on it is replaced"
        )
    if kind == "partimage":
        return (
            f"{name} {is_} a partimage image of one partition. restore-tui cannot read "
            "partimage images. Restore it with partimage itself onto a partition at least "
            f"as large: `partimage restore /dev/PARTITION {arg}` (for an image split "
            "into .000, .001 and so on, give the .000 file). Check the partition's name "
            "twice: everything on it is replaced"
        )
    tools = {"ghost": "Norton Ghost", "aomei": "AOMEI Backupper", "easeus": "EaseUS Todo Backup"}
    tool = tools.get(kind, "another backup program")
    return (
        f"{name} {is_} a {tool} backup ({Path(name).suffix}). restore-tui cannot read "
        f"{tool}'s format. Restore it with {tool}'s own rescue media (the bootable USB "
        "stick or CD that the program makes)"
    )


def _content_words(path: Path, head: bytes) -> str | None:
    """What the start of an unknown file holds, for a person: a partition, a CD, ..."""
    if head[3:11] == b"NTFS    ":
        fs = "an NTFS"
    elif head[3:11] == b"EXFAT   ":
        fs = "an exFAT"
    elif head[510:512] == b"\x55\xaa" and (head[82:87] == b"FAT32" or head[54:57] == b"FAT"):
        fs = "a FAT"
    elif head[1080:1082] == b"\x53\xef":
        fs = "an ext2/ext3/ext4"
    else:
        fs = ""
    if fs:
        return (
            f"it starts with {fs} filesystem, not with a partition table: this looks like "
            "a copy of a single partition (made with dd, for example), not of a whole disk, "
            "and restore-tui cannot restore a lone partition copy"
        )
    if head[32769:32774] == b"CD001":
        return "it is a CD or DVD image (ISO 9660), not a backup of a disk"
    if head[:6] == b"LUKS\xba\xbe":
        return "it is an encrypted (LUKS) volume, not a backup of a disk"
    from archive.decompress import compression_from_magic

    compression = compression_from_magic(head)
    if compression is not None:
        command = _DECOMPRESS_TO_FILE.get(compression)
        how = f" (`{command} {shlex.quote(path.name)}`)" if command else ""
        return (
            f"it is compressed with {compression}. If it is a compressed copy of a whole "
            f"disk, decompress it first{how} and choose the decompressed file"
        )
    if head and head.count(0) == len(head):
        return (
            f"its first {min(len(head), HEAD_BYTES) // 1024} KiB are all zeros, so there "
            "is no partition table at its start"
        )
    return None


def unknown_message(path: Path, table_problem: str | None = None) -> str:
    """The sentence for a file that matches no backup format restore-tui knows."""
    try:
        head, _tail, _size = _read_ends(path)
    except OSError:
        head = b""
    words = _content_words(path, head)
    if words is None and table_problem:
        words = f"it starts like a copy of a whole disk, but {table_problem}"
    if words is None:
        words = "its first bytes match no backup format restore-tui knows"
    return (
        f"{path.name} is not a restore-tui archive, and not a backup of another kind that "
        f"restore-tui can read: {words}. restore-tui reads its own archives (made by "
        "`restore-tui backup`), Clonezilla or Rescuezilla image folders, partclone images, "
        "and raw copies of a whole disk (made with dd, for example)"
    )


def refusal(path: Path, table_problem: str | None = None) -> str:
    """Why ``path`` cannot be opened: another tool's backup, or nothing restore-tui knows."""
    finding = identify(path)
    if finding is not None:
        return refusal_message(path, finding, table_problem)
    return unknown_message(path, table_problem)


def windows_image_folder(path: Path) -> str | None:
    """The sentence for a Windows system image folder (WindowsImageBackup), else None."""
    inside = [path, *path.parents[:3]]
    named = next((p for p in inside if p.name.lower() == "windowsimagebackup"), None)
    if named is None:
        try:
            named = next(
                (c for c in path.iterdir() if c.name.lower() == "windowsimagebackup"), None
            )
        except OSError:
            named = None
    if named is None:
        return None
    return (
        f"{path.name or path} is a Windows system image (its WindowsImageBackup folder holds "
        "the disks as .vhd or .vhdx files). restore-tui cannot read Windows system images. "
        + _windows_image_recovery("DISK.vhdx", " (one of the files in it)")
    )
