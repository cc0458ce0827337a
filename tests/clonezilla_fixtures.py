"""Build small disks and Clonezilla image folders with the real tools, the way ocs-sr does.

These helpers call partclone, sfdisk, parted, blkid, dd, split and the
compressors exactly as Clonezilla's ocs-sr calls them (``partclone.<fs> -c -z
10485760 -a 1 -s SRC -O IMG``), on image files, so no root is needed.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
TOOLS = (
    "partclone.extfs",
    "partclone.fat",
    "partclone.ntfs",
    "sfdisk",
    "parted",
    "mkfs.ext4",
    "mkfs.vfat",
    "mkntfs",
    "blkid",
    "zstd",
    "gzip",
    "xz",
    "lz4",
    "bzip2",
    "split",
    "mcopy",
    "ntfscp",
)
MISSING_TOOLS = [t for t in TOOLS if shutil.which(t) is None]

COMPRESS = {
    "zst": ["zstd", "-q", "-3", "-c"],
    "gz": ["gzip", "-c"],
    "xz": ["xz", "-c", "-0"],
    "bz2": ["bzip2", "-c"],
    "lz4": ["lz4", "-q", "-c"],
}


def run(*cmd: str | Path, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        [str(c) for c in cmd], input=stdin, check=True, capture_output=True
    ).stdout


@dataclass
class FsSpec:
    number: int
    fs: str  # "ext4", "vfat", "ntfs", "raw"
    size_mib: int
    label: str
    comp: str = "zst"  # zst, gz, xz, bz2, lz4, uncomp
    split: bool = False


def make_fs(path: Path, spec: FsSpec, rng: random.Random) -> None:
    """A filesystem image holding a few files of random bytes, free space left as it was."""
    size = spec.size_mib * MiB
    with path.open("r+b" if path.exists() else "wb") as f:
        f.truncate(size)
    content = path.parent / f"content{spec.number}"
    content.mkdir(exist_ok=True)
    (content / "big.bin").write_bytes(rng.randbytes(2 * MiB + 12345))
    (content / "note.txt").write_text(f"partition {spec.number}\n")
    if spec.fs == "ext4":
        run("mkfs.ext4", "-q", "-F", "-L", spec.label, "-d", content, path)
    elif spec.fs == "vfat":
        run("mkfs.vfat", "-n", spec.label, path)
        for name in ("big.bin", "note.txt"):
            run("mcopy", "-i", path, content / name, f"::{name}")
    elif spec.fs == "ntfs":
        run("mkntfs", "-q", "-F", "-f", "-L", spec.label, path)
        for name in ("big.bin", "note.txt"):
            run("ntfscp", "-q", path, content / name, name)
    elif spec.fs == "raw":
        with path.open("r+b") as f:
            f.write(rng.randbytes(size // 2))
    shutil.rmtree(content)


def partclone_image(fs_image: Path, fs: str, out: Path) -> None:
    """``partclone.<fs> -c -z 10485760 -a 1``: Clonezilla's call (CRC32, 10 MiB buffer)."""
    tool = {"ext4": "partclone.extfs", "vfat": "partclone.fat", "ntfs": "partclone.ntfs"}[fs]
    run(tool, "-q", "-c", "-z", "10485760", "-a", "1", "-s", fs_image, "-O", out)


def store(raw: Path, target: Path, comp: str, split: bool) -> None:
    """Compress ``raw`` into ``target`` (``<name>.<comp>``), split at 1 MB like ``-i 1``."""
    whole = target
    if comp == "uncomp":
        shutil.copyfile(raw, whole)
    else:
        with raw.open("rb") as src, whole.open("wb") as dst:
            subprocess.run(COMPRESS[comp], stdin=src, stdout=dst, check=True)
    if split:
        run("split", "-a", "2", "-b", "1MB", whole, f"{whole}.")
        whole.unlink()


def build_disk_and_image(
    work: Path,
    *,
    scheme: str,
    disk_name: str,
    specs: list[FsSpec],
    disk_mib: int = 64,
    seed: int = 1,
    extended: tuple[int, int] | None = None,
) -> tuple[Path, Path]:
    """A disk image full of random bytes with real filesystems, and its Clonezilla folder.

    ``extended`` = (number, first logical's number) makes an MBR extended partition
    holding the specs numbered >= 5 as logical partitions.
    """
    rng = random.Random(seed)
    disk = work / "disk.img"
    with disk.open("wb") as f:
        for _ in range(disk_mib):
            f.write(rng.randbytes(MiB))
    # Partition layout: 1 MiB aligned, each logical 1 MiB after its EBR.
    lines: list[str] = []
    starts: dict[int, int] = {}
    lba = 2048
    for spec in specs:
        if extended and spec.number >= 5 and extended[0] not in starts:
            starts[extended[0]] = lba
            lines.append(f"{extended[0]} : start={lba}, type=5")
            lba += 2048
        elif extended and spec.number >= 5:
            lba += 2048
        starts[spec.number] = lba
        size = spec.size_mib * 2048
        if scheme == "dos":
            ptype = {"ext4": "83", "vfat": "c", "ntfs": "7", "raw": "da"}[spec.fs]
            boot = ", bootable" if spec.number == 1 else ""
            lines.append(f"{spec.number} : start={lba}, size={size}, type={ptype}{boot}")
        else:
            ptype = {
                "ext4": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                "vfat": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                "ntfs": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
                "raw": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            }[spec.fs]
            lines.append(
                f'{spec.number} : start={lba}, size={size}, type={ptype}, name="{spec.label}"'
            )
        lba += size
    header = (
        "label: dos\nlabel-id: 0x7490a9a7\n"
        if scheme == "dos"
        else ("label: gpt\nlabel-id: 3F2A1D5C-0B7E-4C59-9D35-6B1E2A4C8F10\n")
    )
    script = header + "\n".join(sorted(lines, key=lambda s: int(s.split()[0]))) + "\n"
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk, stdin=script.encode())
    # Boot code like a real MBR's, over the random bytes sfdisk left alone.
    with disk.open("r+b") as f:
        f.write(bytes(range(256)) + bytes(range(184)))

    image = work / "img"
    image.mkdir()
    dev = f"/dev/{disk_name}"
    sep = "p" if disk_name[-1].isdigit() else ""
    blkid_lines: list[str] = []
    devfs_lines: list[str] = ["# <Device name>   <File system>   <Size>"]
    for spec in specs:
        fs_image = work / f"fs{spec.number}.img"
        make_fs(fs_image, spec, rng)
        start = starts[spec.number] * 512
        run(
            "dd",
            f"if={fs_image}",
            f"of={disk}",
            "bs=1M",
            f"seek={start}",
            "oflag=seek_bytes",
            "conv=notrunc",
            "status=none",
        )
        part = f"{disk_name}{sep}{spec.number}"
        if spec.fs == "raw":
            raw = fs_image
            target = image / f"{part}.dd-img.{spec.comp}"
        else:
            raw = work / f"{part}.pcl"
            partclone_image(fs_image, spec.fs, raw)
            target = image / f"{part}.{spec.fs}-ptcl-img.{spec.comp}"
            # blkid's own output line, with the device renamed as on the source machine.
            probe = run("blkid", fs_image).decode().strip()
            blkid_lines.append(probe.replace(f"{fs_image}:", f"/dev/{part}:", 1))
            devfs_lines.append(f"/dev/{part} {spec.fs} {spec.size_mib}M")
        store(raw, target, spec.comp, spec.split)
        if raw != fs_image:
            raw.unlink()
        fs_image.unlink()

    parts = [f"{disk_name}{sep}{s.number}" for s in specs]
    (image / "disk").write_text(disk_name + "\n")
    (image / "parts").write_text(" ".join(parts) + "\n")
    dump = run("sfdisk", "-d", disk).decode()
    # Partition devices as the kernel names them: sda1, but nvme0n1p1.
    dump = re.sub(rf"{re.escape(str(disk))}(\d+)", rf"{dev}{sep}\1", dump).replace(str(disk), dev)
    (image / f"{disk_name}-pt.sf").write_text(dump)
    parted = run("parted", "-s", disk, "unit", "s", "print").decode()
    (image / f"{disk_name}-pt.parted").write_text(parted.replace(str(disk), dev))
    run(
        "dd", f"if={disk}", f"of={image / (disk_name + '-mbr')}", "bs=512", "count=1", "status=none"
    )
    first = min(starts.values())
    if scheme == "dos":
        run(
            "dd",
            f"if={disk}",
            f"of={image / (disk_name + '-hidden-data-after-mbr')}",
            "bs=512",
            "skip=1",
            f"count={first - 1}",
            "status=none",
        )
        if extended:
            ext = f"{disk_name}{sep}{extended[0]}"
            run(
                "dd",
                f"if={disk}",
                f"of={image / (ext + '-ebr')}",
                "bs=512",
                f"skip={starts[extended[0]]}",
                "count=1",
                "status=none",
            )
    else:
        run(
            "dd",
            f"if={disk}",
            f"of={image / (disk_name + '-gpt-1st')}",
            "bs=512",
            "count=34",
            "status=none",
        )
    (image / "blkid.list").write_text("\n".join(blkid_lines) + "\n")
    (image / "dev-fs.list").write_text("\n".join(devfs_lines) + "\n")
    (image / "clonezilla-img").write_text("Made by restore-tui's tests like clonezilla-5.3.17\n")
    (image / "Info-packages.txt").write_text(
        "Image was saved by these Clonezilla-related packages:\n drbl-5.2.7 clonezilla-5.3.17\n"
    )
    os.sync()
    return disk, image


def write_ocs_log(folder: Path, saved_at: str = "2024-05-01 12:34:56 UTC") -> None:
    """``clonezilla-img`` and ``Info-img-id.txt`` dated as ocs-sr writes them after a save.

    ocs-sr's first line is ``date +%F' '%T' '%Z``; its log's last line is the
    local time to the minute (``date +%Y-%m%d-%H%M``).
    """
    day, clock = saved_at.split()[:2]
    minute = f"{day[:7]}{day[8:10]}-{clock[:2]}{clock[3:5]}"
    log = (
        f"This image was saved by Clonezilla at {saved_at}.\n"
        "The log during saving:\n"
        "----------------------------------------------------------\n"
        f"Starting /usr/sbin/ocs-sr at {saved_at}...\n"
        "Made by restore-tui's tests like clonezilla-5.3.17\n"
        "### End of log ###\n"
        f"### Image created time: {minute}\n"
    )
    (folder / "clonezilla-img").write_text(log)
    digest = hashlib.sha512(log.encode()).hexdigest()
    (folder / "Info-img-id.txt").write_text(
        "# This checksum is only for identifying the image. Created by the command: "
        f"sha512sum clonezilla-img\nIMG_ID={digest}\n"
    )
