"""Realistic sample disk images built with the real tools, for the demo and for tests.

No root and no loop devices: filesystems are made inside image files at byte offsets
(mke2fs/mkfs.fat offsets, NTFS via a temporary file) and the table is written by sfdisk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from layout.models import Partition, PartitionFlag, PartitionTable

SECTOR = 512
MIB = 1024 * 1024
MIB_LBA = MIB // SECTOR
GPT_ENTRY_SECTORS = 32  # 128 entries of 128 bytes
GPT_AREA_SECTORS = 1 + GPT_ENTRY_SECTORS  # header + entry array, at each end of the disk

WINDOWS_SIGNATURE = "7490A9A7"
LOGICALS_SIGNATURE = "1D2C3B4A"
GPT_DISK_GUID = "6A1F93C2-2E4B-4C7A-9D0E-5B8F17A3C401"

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
LINUX_DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

FsKind = Literal["ntfs", "vfat", "ext4"]
PartitionKind = Literal["primary", "extended", "logical"]

# mtools refuses images whose geometry looks odd unless told not to check; we
# always address the filesystem by offset, so its geometry check only gets in the way.
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": ""}
# File times inside the samples, so two builds give the same listings.
_FILE_TIME = 1_700_000_000


class SampleError(RuntimeError):
    """A tool needed to build or read a sample disk is missing or failed."""


@dataclass(frozen=True)
class SamplePartition:
    """One partition of a sample disk, as intended (and as sfdisk must report it)."""

    number: int
    start_lba: int
    length_lba: int
    fs: FsKind | None
    label: str | None
    files: Mapping[str, bytes] = field(default_factory=dict)
    kind: PartitionKind = "primary"
    mbr_type: int | None = None  # MBR type byte (0x07 NTFS, 0x05 extended, ...)
    gpt_type: str | None = None  # GPT type GUID, upper case
    bootable: bool = False
    guid: str | None = None  # GPT partition GUID
    name: str | None = None  # GPT partition name
    fs_uuid: str | None = None  # as blkid prints it (ext4 UUID, FAT volume id, NTFS serial)

    @property
    def offset(self) -> int:
        return self.start_lba * SECTOR

    @property
    def size(self) -> int:
        return self.length_lba * SECTOR

    @property
    def stop_lba(self) -> int:
        """First sector after the partition."""
        return self.start_lba + self.length_lba


@dataclass(frozen=True)
class SampleDisk:
    """A built sample disk image: its path, table and the files put in each filesystem."""

    path: Path
    size_bytes: int
    scheme: Literal["msdos", "gpt"]
    partitions: tuple[SamplePartition, ...]
    files: dict[int, dict[str, bytes]]
    signature: str | None = None  # MBR disk signature, 8 upper-case hex digits
    disk_guid: str | None = None  # GPT disk GUID
    boot_code: bytes = b""  # the first 440 bytes of sector 0
    ebr_lbas: tuple[int, ...] = ()  # MBR: sectors holding extended boot records, chain order
    garbage: bool = True
    seed: int = 0  # seed of the garbage fill

    @property
    def size_lba(self) -> int:
        return self.size_bytes // SECTOR

    def partition(self, number: int) -> SamplePartition:
        for p in self.partitions:
            if p.number == number:
                return p
        raise KeyError(f"no partition {number} on {self.path}")

    @property
    def data_partitions(self) -> tuple[SamplePartition, ...]:
        return tuple(p for p in self.partitions if p.kind != "extended")

    def to_table(self) -> PartitionTable:
        """The intended table as the shared model, with filesystem type, label and UUID."""
        partitions = []
        for p in self.partitions:
            # libparted's names for what the table itself says (the active flag,
            # LBA type bytes, the ESP type GUID), as layout.table_io reads them.
            flags: list[PartitionFlag] = []
            if p.bootable or p.gpt_type == ESP_TYPE:
                flags.append("boot")
            if p.mbr_type in (0x0C, 0x0E, 0x0F):
                flags.append("lba")
            if p.gpt_type == ESP_TYPE:
                flags.append("esp")
            partitions.append(
                Partition(
                    number=p.number,
                    start_lba=p.start_lba,
                    length_lba=p.length_lba,
                    kind=p.kind,
                    mbr_type=p.mbr_type,
                    gpt_type=p.gpt_type,
                    gpt_guid=p.guid,
                    gpt_name=p.name,
                    flags=tuple(flags),
                    filesystem=p.fs,
                    label=p.label,
                    fs_uuid=p.fs_uuid,
                )
            )
        gpt = self.scheme == "gpt"
        return PartitionTable(
            scheme=self.scheme,
            sector_size=SECTOR,
            disk_size_lba=self.size_lba,
            mbr_signature=self.signature,
            gpt_disk_guid=self.disk_guid,
            gpt_first_usable_lba=GPT_AREA_SECTORS + 1 if gpt else None,
            gpt_last_usable_lba=self.size_lba - GPT_AREA_SECTORS - 1 if gpt else None,
            gpt_entry_count=128 if gpt else None,
            gpt_entry_size=128 if gpt else None,
            partitions=tuple(partitions),
        )

    def table_extents(self) -> tuple[tuple[int, int], ...]:
        """Byte [start, stop) of every table structure: sector 0, GPT areas, EBRs."""
        extents = [(0, SECTOR)]
        if self.scheme == "gpt":
            extents.append((SECTOR, (1 + GPT_AREA_SECTORS) * SECTOR))
            extents.append((self.size_bytes - GPT_AREA_SECTORS * SECTOR, self.size_bytes))
        extents.extend((lba * SECTOR, (lba + 1) * SECTOR) for lba in self.ebr_lbas)
        return tuple(sorted(extents))

    def unused_extents(self) -> tuple[tuple[int, int], ...]:
        """Byte [start, stop) not in any data partition nor table structure.

        On a disk built with ``garbage=True`` these hold the fill, like the unused
        areas of a disk that has been in use for years.
        """
        taken = sorted(
            [(p.offset, p.offset + p.size) for p in self.data_partitions]
            + list(self.table_extents())
        )
        gaps: list[tuple[int, int]] = []
        pos = 0
        for start, stop in taken:
            if start > pos:
                gaps.append((pos, start))
            pos = max(pos, stop)
        if pos < self.size_bytes:
            gaps.append((pos, self.size_bytes))
        return tuple(gaps)

    def unallocated(self) -> tuple[tuple[int, int], ...]:
        """(start_lba, length_lba) of 1 MiB-aligned free spans of at least 1 MiB.

        Counted outside the data partitions, after the first MiB and before the
        GPT backup area; a span inside the MBR extended partition is included.
        """
        last = self.size_lba - (GPT_AREA_SECTORS if self.scheme == "gpt" else 0)
        # An EBR sector counts as taken: the MiB that holds a logical partition's
        # EBR is not free space for data.
        taken = sorted(
            [(p.start_lba, p.stop_lba) for p in self.data_partitions]
            + [(lba, lba + 1) for lba in self.ebr_lbas]
        )
        spans: list[tuple[int, int]] = []
        pos = MIB_LBA
        for start, stop in taken:
            spans.extend(_aligned_span(pos, start))
            pos = max(pos, stop)
        spans.extend(_aligned_span(pos, last))
        return tuple(spans)


def _aligned_span(start_lba: int, stop_lba: int) -> list[tuple[int, int]]:
    start = -(-start_lba // MIB_LBA) * MIB_LBA
    stop = stop_lba // MIB_LBA * MIB_LBA
    return [(start, stop - start)] if stop - start >= MIB_LBA else []


# --------------------------------------------------------------------------- tools


# mkfs, sfdisk and friends live in sbin, which a normal user's PATH often lacks;
# they work on image files without root all the same.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """Full path of a command-line tool, looking in the sbin folders too."""
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path=os.pathsep.join(_SBIN))
    return found


def have_tool(name: str) -> bool:
    return find_tool(name) is not None


def _run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("LC_ALL", "C")
    program = find_tool(str(cmd[0]))
    if program is None:
        raise SampleError(
            f"{cmd[0]} is not installed; run ./run.sh setup as root to install the tools it needs"
        )
    try:
        proc = subprocess.run(
            [program, *(str(c) for c in cmd[1:])],
            input=input_text,
            capture_output=True,
            text=True,
            env=full_env,
            check=False,
        )
    except OSError as exc:
        raise SampleError(f"{cmd[0]} could not be started: {exc}") from exc
    if check and proc.returncode != 0:
        raise SampleError(
            f"{Path(str(cmd[0])).name} failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc


# ------------------------------------------------------------------ raw image work


def garbage_blocks(seed: int, size_bytes: int) -> Iterator[bytes]:
    """The fill of a ``garbage=True`` disk: seeded pseudo-random bytes, 1 MiB at a time."""
    rng = random.Random(seed)
    left = size_bytes
    while left:
        # A fresh block per MiB: repeating one block would let compressors with a
        # long window shrink the "garbage", unlike the leftovers on a real used disk.
        n = min(MIB, left)
        yield rng.randbytes(n)
        left -= n


def _fill(path: Path, size_bytes: int, *, garbage: bool, seed: int) -> None:
    """Create ``path`` of ``size_bytes``: seeded garbage, or a sparse all-zero file."""
    with open(path, "wb") as f:
        if garbage:
            for block in garbage_blocks(seed, size_bytes):
                f.write(block)
        else:
            f.truncate(size_bytes)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of the parts of a file that hold data, skipping holes."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            return
        try:
            stop = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError:
            stop = size
        yield start, min(stop, size) - start
        pos = stop


def _copy_written(src: Path, dst: Path, dst_offset: int) -> None:
    """Copy what was written into ``src`` to ``dst`` at ``dst_offset``, skipping holes.

    The holes are areas mkntfs never touched (free clusters), so the garbage the
    disk held there stays, as on a real disk.
    """
    size = src.stat().st_size
    with open(src, "rb") as s, open(dst, "r+b") as d:
        for start, length in _data_extents(s.fileno(), size):
            done = 0
            while done < length:
                chunk = os.pread(s.fileno(), min(4 * MIB, length - done), start + done)
                if not chunk:
                    break
                os.pwrite(d.fileno(), chunk, dst_offset + start + done)
                done += len(chunk)


def _extract(image: str | os.PathLike[str], offset: int, size: int, out: Path) -> None:
    """Copy ``size`` bytes at ``offset`` of a disk (image or device) into a sparse file."""
    zero = bytes(4 * MIB)
    with open(image, "rb") as s, open(out, "wb") as d:
        done = 0
        while done < size:
            chunk = os.pread(s.fileno(), min(4 * MIB, size - done), offset + done)
            if not chunk:
                raise SampleError(f"{image} ends before byte {offset + size}")
            if chunk != zero[: len(chunk)]:
                os.pwrite(d.fileno(), chunk, done)
            done += len(chunk)
        d.truncate(size)


def _write_tree(root: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.utime(target, (_FILE_TIME, _FILE_TIME))
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        os.utime(d, (_FILE_TIME, _FILE_TIME))


def _read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# ------------------------------------------------------------------ filesystems


def _make_ext4(image: Path, part: SamplePartition, work: Path) -> None:
    tree = work / f"tree{part.number}"
    tree.mkdir()
    _write_tree(tree, part.files)
    extended = [
        f"offset={part.offset}",
        # Written out in full: on a garbage-filled disk, "lazy" inode tables and
        # journal would hold the garbage and e2fsck would rightly complain.
        "lazy_itable_init=0",
        "lazy_journal_init=0",
        "nodiscard",
        "root_owner=0:0",
    ]
    if part.fs_uuid:
        extended.append(f"hash_seed={part.fs_uuid}")
    cmd: list[str | os.PathLike[str]] = [
        "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-E", ",".join(extended),
        "-d", tree,
    ]  # fmt: skip
    if part.label:
        cmd += ["-L", part.label]
    if part.fs_uuid:
        cmd += ["-U", part.fs_uuid]
    cmd += [image, f"{part.size // 1024}k"]
    _run(cmd, env={"E2FSPROGS_FAKE_TIME": str(_FILE_TIME)})


def _make_vfat(image: Path, part: SamplePartition) -> bool:
    """Make a FAT16 filesystem in place; returns whether its files were copied in."""
    # FAT16 needs 4085..65524 clusters: the smallest cluster that keeps under the
    # limit, as mkfs.fat would pick for a partition of this size.
    per_cluster = 1
    while part.length_lba // per_cluster > 65000:
        per_cluster *= 2
    cmd: list[str | os.PathLike[str]] = [
        "mkfs.fat", "-F", "16", "-s", str(per_cluster), "--offset", str(part.start_lba),
        # The boot sector's "hidden sectors" is the partition's start, as Windows writes it.
        "-h", str(part.start_lba), "--invariant",
    ]  # fmt: skip
    if part.label:
        cmd += ["-n", part.label]
    if part.fs_uuid:
        cmd += ["-i", part.fs_uuid.replace("-", "")]
    cmd += [image, str(part.size // 1024)]
    _run(cmd)
    if not part.files:
        return True
    if not have_tool("mcopy"):
        return False
    with tempfile.TemporaryDirectory(prefix="restore-tui-fat-") as tmp:
        tree = Path(tmp)
        _write_tree(tree, part.files)
        _run(
            ["mcopy", "-s", "-m", "-i", f"{image}@@{part.offset}",
             *sorted(tree.iterdir()), "::/"],
            env=_MTOOLS_ENV,
        )  # fmt: skip
    return True


def _make_ntfs(image: Path, part: SamplePartition, work: Path) -> bool:
    """Make NTFS in a temporary file and copy it in; returns whether files were copied."""
    tmp = work / f"ntfs{part.number}.img"
    with open(tmp, "wb") as f:
        f.truncate(part.size)
    cmd: list[str | os.PathLike[str]] = [
        "mkntfs", "-F", "-f", "-q", "-s", "512", "-c", "4096",
        # Hidden sectors and the old BIOS geometry, as Windows setup writes them.
        "-p", str(part.start_lba), "-H", "255", "-S", "63",
    ]  # fmt: skip
    if part.label:
        cmd += ["-L", part.label]
    cmd += [tmp]
    _run(cmd)
    if part.fs_uuid:
        _run(["ntfslabel", f"--new-serial={part.fs_uuid}", tmp, part.label or ""])
    copied = True
    if part.files:
        if have_tool("ntfscp"):
            src_dir = work / f"ntfs{part.number}-files"
            src_dir.mkdir()
            for rel, data in part.files.items():
                if "/" in rel:
                    # ntfscp cannot create directories, and nothing else can without FUSE.
                    raise ValueError(f"NTFS sample files must be in the root directory: {rel}")
                src = src_dir / rel
                src.write_bytes(data)
                _run(["ntfscp", "-q", tmp, src, rel])
        else:
            copied = False
    _copy_written(tmp, image, part.offset)
    tmp.unlink()
    return copied


# ------------------------------------------------------------------ partition table


def _sfdisk_script(
    scheme: str, parts: Sequence[SamplePartition], signature: str | None, disk_guid: str | None
) -> str:
    lines = ["unit: sectors", "sector-size: 512"]
    if scheme == "msdos":
        lines.insert(0, "label: dos")
        lines.append(f"label-id: 0x{(signature or '0').lower()}")
    else:
        lines.insert(0, "label: gpt")
        lines += [f"label-id: {disk_guid}", "first-lba: 34", "table-length: 128"]
    lines.append("")
    for p in sorted(parts, key=lambda q: (q.kind == "logical", q.number)):
        kind = f"{p.mbr_type:x}" if p.mbr_type is not None else p.gpt_type
        fields = [f"start={p.start_lba}", f"size={p.length_lba}", f"type={kind}"]
        if p.bootable:
            fields.append("bootable")
        if p.guid:
            fields.append(f"uuid={p.guid}")
        if p.name:
            fields.append(f'name="{p.name}"')
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def _write_table(path: Path, disk: SampleDisk) -> None:
    script = _sfdisk_script(disk.scheme, disk.partitions, disk.signature, disk.disk_guid)
    _run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "never",
         "--wipe-partitions", "never", "-q", path],
        input_text=script,
    )  # fmt: skip
    # sfdisk leaves the boot code area zeroed; a used disk has boot code there,
    # and restores must carry it over without touching the table after it.
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(disk.boot_code)


def _ebr_chain(path: Path, parts: Sequence[SamplePartition]) -> tuple[int, ...]:
    """Sectors of the EBRs, found by walking the chain sfdisk wrote."""
    extended = [p for p in parts if p.kind == "extended"]
    if not extended:
        return ()
    ext_start = extended[0].start_lba
    chain: list[int] = []
    lba = ext_start
    with open(path, "rb") as f:
        while len(chain) < 128:
            chain.append(lba)
            sector = os.pread(f.fileno(), SECTOR, lba * SECTOR)
            link = sector[446 + 16 : 446 + 32]
            next_rel = int.from_bytes(link[8:12], "little")
            if link[4] == 0 or next_rel == 0:
                break
            lba = ext_start + next_rel
    return tuple(chain)


def _boot_code(seed: int, windows: bool) -> bytes:
    # Starts like the real code (xor ax,ax; mov ss,ax; mov sp,7C00h for Windows,
    # GRUB's jump otherwise); the rest is seeded bytes so a lost or shifted copy shows.
    head = bytes.fromhex("33c08ed0bc007c") if windows else bytes.fromhex("eb6390")
    return head + random.Random(seed ^ 0xB007).randbytes(440 - len(head))


def build_disk(
    path: str | os.PathLike[str],
    size_mib: int,
    scheme: Literal["msdos", "gpt"],
    parts: Sequence[SamplePartition],
    *,
    garbage: bool = True,
    seed: int = 0,
    signature: str | None = None,
    disk_guid: str | None = None,
    windows_boot_code: bool = False,
) -> SampleDisk:
    """Build any layout: fill, make each filesystem with its files, then write the table.

    The named builders below are layouts of this; tests that need another one
    (an odd alignment, a single partition) describe it with ``SamplePartition``.
    """
    target = Path(path)
    size_bytes = size_mib * MIB
    last = size_bytes // SECTOR - (GPT_AREA_SECTORS if scheme == "gpt" else 0)
    for part in parts:
        if part.start_lba < 1 or part.stop_lba > last:
            raise ValueError(
                f"partition {part.number} (sectors {part.start_lba}-{part.stop_lba - 1}) "
                f"does not fit on a {size_mib} MiB {scheme} disk"
            )
    _fill(target, size_bytes, garbage=garbage, seed=seed)
    built: list[SamplePartition] = []
    with tempfile.TemporaryDirectory(prefix="restore-tui-sample-") as tmp:
        work = Path(tmp)
        for part in parts:
            copied = True
            if part.fs == "ext4":
                _make_ext4(target, part, work)
            elif part.fs == "vfat":
                copied = _make_vfat(target, part)
            elif part.fs == "ntfs":
                copied = _make_ntfs(target, part, work)
            # A missing optional tool (mcopy/ntfscp) leaves the filesystem empty:
            # record that, so tests compare against what is really there.
            built.append(part if copied else dataclasses.replace(part, files={}))
    disk = SampleDisk(
        path=target,
        size_bytes=size_bytes,
        scheme=scheme,
        partitions=tuple(built),
        files={p.number: dict(p.files) for p in built if p.fs is not None},
        signature=signature,
        disk_guid=disk_guid,
        boot_code=_boot_code(seed, windows_boot_code),
        garbage=garbage,
        seed=seed,
    )
    _write_table(target, disk)
    return dataclasses.replace(disk, ebr_lbas=_ebr_chain(target, built))


# ------------------------------------------------------------------ sample contents


def _blob(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def _text(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _check_size(size_mib: int, minimum: int) -> None:
    if size_mib < minimum:
        raise ValueError(f"a sample disk of this layout needs at least {minimum} MiB")


def build_windows_mbr(
    path: str | os.PathLike[str], size_mib: int = 256, *, garbage: bool = True, seed: int = 1
) -> SampleDisk:
    """MBR disk like a Windows 7-10 install: System Reserved + Windows, both NTFS.

    Signature 7490A9A7. Partition 1 "System Reserved" (active, type 07, 50 MiB on a
    256 MiB disk), partition 2 "Windows" fills the rest but for a free tail.
    """
    _check_size(size_mib, 32)
    rng = random.Random(seed)
    reserved_mib = min(50, size_mib // 4)
    tail_mib = max(1, size_mib // 32)
    p1_start = MIB_LBA
    p1_len = reserved_mib * MIB_LBA
    p2_start = p1_start + p1_len
    p2_len = (size_mib - 1 - reserved_mib - tail_mib) * MIB_LBA
    p1 = SamplePartition(
        number=1, start_lba=p1_start, length_lba=p1_len, fs="ntfs", label="System Reserved",
        mbr_type=0x07, bootable=True, fs_uuid="5A2E61C03E77A4F1",
        files={
            "bootmgr": _blob(rng, 96 * 1024),
            "BOOTNXT": b"\x00",
            "BOOTSECT.BAK": _blob(rng, 8 * 1024),
        },
    )  # fmt: skip
    p2 = SamplePartition(
        number=2, start_lba=p2_start, length_lba=p2_len, fs="ntfs", label="Windows",
        mbr_type=0x07, fs_uuid="C03A94F53A94E8D2",
        files={
            "pagefile.sys": _blob(rng, 512 * 1024),
            "hiberfil.sys": bytes(128 * 1024),  # zeros, as a cleared hibernation file
            "readme.txt": _text("Family photos are in the Pictures folder.", "Do not delete."),
            "bootmgr": _blob(rng, 64 * 1024),
        },
    )  # fmt: skip
    return build_disk(
        path, size_mib, "msdos", [p1, p2], garbage=garbage, seed=seed,
        signature=WINDOWS_SIGNATURE, windows_boot_code=True,
    )  # fmt: skip


def build_mbr_with_logicals(
    path: str | os.PathLike[str], size_mib: int = 256, *, garbage: bool = True, seed: int = 2
) -> SampleDisk:
    """MBR disk with logical partitions: 1 ext4 "root", 2 extended, 5 FAT "SHARED", 6 ext4 "home".

    The end of the extended partition is left unallocated (room for one more logical).
    """
    _check_size(size_mib, 48)
    rng = random.Random(seed)
    root_len = size_mib * 3 // 8 * MIB_LBA
    shared_len = size_mib // 8 * MIB_LBA
    home_len = size_mib // 4 * MIB_LBA
    p1_start = MIB_LBA
    ext_start = p1_start + root_len
    ext_len = size_mib * MIB_LBA - ext_start
    # Each logical starts 1 MiB after its EBR, as fdisk and Windows align them.
    l5_start = ext_start + MIB_LBA
    l6_start = l5_start + shared_len + MIB_LBA
    root = SamplePartition(
        number=1, start_lba=p1_start, length_lba=root_len, fs="ext4", label="root",
        mbr_type=0x83, bootable=True, fs_uuid="3f1b2a6c-7d4e-4b1a-9c2d-0e5f6a7b8c91",
        files={
            "etc/hostname": b"oldpc\n",
            "etc/fstab": _text(
                "UUID=3f1b2a6c-7d4e-4b1a-9c2d-0e5f6a7b8c91 / ext4 errors=remount-ro 0 1",
                "UUID=8b4c2e1f-5a6d-4e7b-8f90-1a2b3c4d5e6f /home ext4 defaults 0 2",
                "LABEL=SHARED /mnt/shared vfat defaults 0 0",
            ),
            "boot/vmlinuz-6.1.0-18-amd64": _blob(rng, 300 * 1024),
            "var/lib/zeros.bin": bytes(200 * 1024),
        },
    )  # fmt: skip
    extended = SamplePartition(
        number=2, start_lba=ext_start, length_lba=ext_len, fs=None, label=None,
        kind="extended", mbr_type=0x05,
    )  # fmt: skip
    shared = SamplePartition(
        number=5, start_lba=l5_start, length_lba=shared_len, fs="vfat", label="SHARED",
        kind="logical", mbr_type=0x0e, fs_uuid="4E21-9A07",
        files={
            "Documents/letter.txt": _text("Dear Sir,", "the disk is fine again."),
            "Photos/IMG_0001.JPG": _blob(rng, 150 * 1024),
            "notes.txt": _text("shared between both systems"),
        },
    )  # fmt: skip
    home = SamplePartition(
        number=6, start_lba=l6_start, length_lba=home_len, fs="ext4", label="home",
        kind="logical", mbr_type=0x83, fs_uuid="8b4c2e1f-5a6d-4e7b-8f90-1a2b3c4d5e6f",
        files={
            "user/.bashrc": _text("export EDITOR=nano"),
            "user/Music/song.ogg": _blob(rng, 400 * 1024),
            "user/empty.txt": b"",
        },
    )  # fmt: skip
    return build_disk(
        path, size_mib, "msdos", [root, extended, shared, home], garbage=garbage, seed=seed,
        signature=LOGICALS_SIGNATURE,
    )  # fmt: skip


def build_gpt_linux(
    path: str | os.PathLike[str], size_mib: int = 256, *, garbage: bool = True, seed: int = 3
) -> SampleDisk:
    """GPT disk of a UEFI Linux install: 1 EFI System (FAT), 2 ext4 root, 3 ext4 "data".

    Fixed disk and partition GUIDs; some unallocated space is left at the end.
    """
    _check_size(size_mib, 48)
    rng = random.Random(seed)
    esp_len = min(32, size_mib // 4) * MIB_LBA
    root_len = size_mib * 3 // 8 * MIB_LBA
    data_len = size_mib // 4 * MIB_LBA
    esp = SamplePartition(
        number=1, start_lba=MIB_LBA, length_lba=esp_len, fs="vfat", label="EFI",
        gpt_type=ESP_TYPE, guid="1B6E2D4A-0C3F-4E58-9A71-2F8D6C5B4E31", name="EFI System Partition",
        fs_uuid="7C3A-1E55",
        files={
            "EFI/BOOT/BOOTX64.EFI": _blob(rng, 120 * 1024),
            "EFI/debian/grubx64.efi": _blob(rng, 90 * 1024),
            "EFI/debian/grub.cfg": _text(
                "search.fs_uuid 2d7f4c1e-9b3a-4f6d-8e2c-5a1b0c9d8e7f root",
                "set prefix=($root)'/boot/grub'",
                "configfile $prefix/grub.cfg",
            ),
        },
    )  # fmt: skip
    root = SamplePartition(
        number=2, start_lba=esp.stop_lba, length_lba=root_len, fs="ext4", label="root",
        gpt_type=LINUX_ROOT_X86_64_TYPE, guid="9E4B1C7D-3A2F-4D6E-B8C5-1F0A2E3D4C5B", name="root",
        fs_uuid="2d7f4c1e-9b3a-4f6d-8e2c-5a1b0c9d8e7f",
        files={
            "etc/hostname": b"laptop\n",
            "etc/os-release": _text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"'),
            "boot/vmlinuz-6.1.0-18-amd64": _blob(rng, 300 * 1024),
            "boot/grub/grub.cfg": _text("menuentry 'Debian' { linux /boot/vmlinuz }"),
            "usr/share/zeros.bin": bytes(256 * 1024),
        },
    )  # fmt: skip
    data = SamplePartition(
        number=3, start_lba=root.stop_lba, length_lba=data_len, fs="ext4", label="data",
        gpt_type=LINUX_DATA_TYPE, guid="C5D2A8E1-6F4B-4A3C-9D7E-8B1F0E2A3C4D", name="data",
        fs_uuid="61a0e3b7-2c9d-4e8f-a1b2-c3d4e5f60718",
        files={
            "backup/archive.tar": _blob(rng, 512 * 1024),
            "README": _text("Data kept apart from the system."),
        },
    )  # fmt: skip
    return build_disk(
        path, size_mib, "gpt", [esp, root, data], garbage=garbage, seed=seed,
        disk_guid=GPT_DISK_GUID,
    )  # fmt: skip


def build_blank(
    path: str | os.PathLike[str], size_mib: int, *, garbage: bool = True, seed: int = 9
) -> Path:
    """A target disk image with no table: seeded garbage (a disk that was used), or zeros."""
    target = Path(path)
    _fill(target, size_mib * MIB, garbage=garbage, seed=seed)
    return target


# ------------------------------------------------------------------ reading back


def read_files_ext4(image: str | os.PathLike[str], offset: int, size: int) -> dict[str, bytes]:
    """Every regular file of the ext2/3/4 filesystem at ``offset``, read with debugfs."""
    with tempfile.TemporaryDirectory(prefix="restore-tui-read-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        source = _ext_source(image, offset, size, Path(tmp))
        proc = _run(["debugfs", "-R", f"rdump / {out}", source])
        # debugfs exits 0 even when a file could not be dumped; anything on stderr
        # besides its version banner is such a complaint, except that a normal user
        # cannot give the dumped files their owners (which we do not compare).
        complaints = [
            line
            for line in proc.stderr.splitlines()
            if line and not line.startswith("debugfs 1.") and "while changing ownership" not in line
        ]
        if complaints:
            raise SampleError(f"debugfs could not read every file: {'; '.join(complaints)}")
        return _read_tree(out)


def read_files_vfat(image: str | os.PathLike[str], offset: int, size: int) -> dict[str, bytes]:
    """Every file of the FAT filesystem at ``offset``, read with mtools (no mount)."""
    del size  # mtools takes the filesystem's size from its boot sector
    with tempfile.TemporaryDirectory(prefix="restore-tui-read-") as tmp:
        out = Path(tmp)
        listing = _run(
            ["mdir", "-b", "-i", f"{image}@@{offset}", "::/"], env=_MTOOLS_ENV, check=False
        )
        if listing.returncode != 0 and "No files" not in (listing.stdout + listing.stderr):
            raise SampleError(f"mtools could not read the FAT filesystem: {listing.stderr.strip()}")
        if listing.stdout.strip():
            _run(
                ["mcopy", "-s", "-n", "-m", "-i", f"{image}@@{offset}", "::/*", out],
                env=_MTOOLS_ENV,
            )
        return _read_tree(out)


def read_files_ntfs(image: str | os.PathLike[str], offset: int, size: int) -> dict[str, bytes]:
    """Every user file of the NTFS filesystem at ``offset``, read with ntfsls and ntfscat."""
    with tempfile.TemporaryDirectory(prefix="restore-tui-read-") as tmp:
        part = Path(tmp) / "part.img"
        _extract(image, offset, size, part)
        listing = _run(["ntfsls", "-R", "-F", "-p", "/", part]).stdout
        files: dict[str, bytes] = {}
        directory = ""
        for line in listing.splitlines():
            if not line.strip():
                continue
            if line.startswith("/") and line.endswith(":"):
                directory = line[1:-1].strip("/")
                continue
            if line.endswith("/"):
                continue  # a directory; its contents are listed under its own header
            name = line.rstrip("*@|=")  # -F classification marks
            rel = f"{directory}/{name}" if directory else name
            data = subprocess.run(
                [find_tool("ntfscat") or "ntfscat", str(part), "/" + rel],
                capture_output=True,
                check=False,
            )
            if data.returncode != 0:
                raise SampleError(f"ntfscat could not read {rel}: {data.stderr.decode().strip()}")
            files[rel] = data.stdout
        return files


def read_files(fs: str, image: str | os.PathLike[str], offset: int, size: int) -> dict[str, bytes]:
    """Dispatch to the reader for ``fs`` ("ext4"/"ext3"/"ext2", "vfat", "ntfs")."""
    if fs in ("ext2", "ext3", "ext4"):
        return read_files_ext4(image, offset, size)
    if fs == "vfat":
        return read_files_vfat(image, offset, size)
    if fs == "ntfs":
        return read_files_ntfs(image, offset, size)
    raise ValueError(f"no file reader for filesystem {fs!r}")


def _ext_source(image: str | os.PathLike[str], offset: int, size: int, tmp: Path) -> str:
    # e2fsprogs open "path?offset=N" directly; a path that itself holds "?" is copied out.
    name = os.fspath(image)
    if "?" not in name:
        return f"{name}?offset={offset}"
    part = tmp / "part.img"
    _extract(image, offset, size, part)
    return str(part)


def fsck_clean(fs: str, image: str | os.PathLike[str], offset: int, size: int) -> tuple[bool, str]:
    """Check the filesystem at ``offset`` read-only: (clean?, the checker's output).

    ext2/3/4: ``e2fsck -fn``; vfat: ``fsck.vfat -n``; ntfs: ``ntfsfix -n``.
    """
    with tempfile.TemporaryDirectory(prefix="restore-tui-fsck-") as tmp:
        work = Path(tmp)
        if fs in ("ext2", "ext3", "ext4"):
            cmd: list[str] = ["e2fsck", "-fn", _ext_source(image, offset, size, work)]
        elif fs in ("vfat", "ntfs"):
            part = work / "part.img"
            _extract(image, offset, size, part)
            cmd = ["fsck.vfat", "-n", str(part)] if fs == "vfat" else ["ntfsfix", "-n", str(part)]
        else:
            raise ValueError(f"no checker for filesystem {fs!r}")
        proc = _run(cmd, check=False)
        output = (proc.stdout + proc.stderr).strip()
        return proc.returncode == 0, output


def sfdisk_json(image: str | os.PathLike[str]) -> dict[str, object]:
    """The table as ``sfdisk -J`` reports it (its "partitiontable" object)."""
    proc = _run(["sfdisk", "-J", image])
    table = json.loads(proc.stdout).get("partitiontable")
    if not isinstance(table, dict):
        raise SampleError(f"sfdisk found no partition table on {image}")
    return table
