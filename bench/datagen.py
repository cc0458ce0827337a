"""Benchmark disks: a Windows-like MBR disk and a GPT ext4 disk of any size, partly full.

Built with ``restore_tui.sample.build_disk`` (real mkntfs/mke2fs/mkfs.fat), filled with a
mix of text-like, incompressible and executable-like files; free space keeps old garbage.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from restore_tui.sample import (
    ESP_TYPE,
    GPT_DISK_GUID,
    LINUX_DATA_TYPE,
    LINUX_ROOT_X86_64_TYPE,
    MIB_LBA,
    WINDOWS_SIGNATURE,
    SampleDisk,
    SamplePartition,
    build_disk,
)

MIB = 1024 * 1024
# Each file is one blob of this size. Blobs are reused between files (memory stays
# bounded), but never closer than a blob apart, and every contender's compression
# window (zstd -3: 2 MiB; our chunks: 4 MiB) is smaller, so no tool gains from it.
BLOB = 8 * MIB
POOL_BLOBS = 24
# What the files are made of, by share of bytes: documents and logs, already
# compressed media, programs and libraries.
KINDS = (("text", 4), ("random", 4), ("binary", 2))
_EXT = {"text": "log", "random": "jpg", "binary": "dll"}


def _words(rng: random.Random, count: int = 600) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [26 - i for i in range(26)]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(count)]


def text_blob(rng: random.Random, size: int) -> bytes:
    """Log- and document-like text: a Zipf-weighted vocabulary in numbered lines (about 3:1)."""
    words = _words(rng)
    cum: list[float] = []
    total = 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1)
        cum.append(total)
    out: list[str] = []
    length = 0
    line = 0
    while length < size:
        line += 1
        text = f"{line:08d} " + " ".join(rng.choices(words, cum_weights=cum, k=12)) + "\n"
        out.append(text)
        length += len(text)
    return "".join(out).encode()[:size]


# Executable-like bytes: half of them zero, the rest from 32 values (about 2:1 with zstd).
_BINARY_TABLE = bytes(0 if i < 128 else (i & 0x1F) + 1 for i in range(256))


def binary_blob(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size).translate(_BINARY_TABLE)


def blob_pool(seed: int, count: int = POOL_BLOBS) -> list[tuple[str, bytes]]:
    """``count`` distinct blobs in the KINDS proportions, deterministic for ``seed``."""
    rng = random.Random(seed)
    order = [kind for kind, share in KINDS for _ in range(share)]
    pool = []
    for i in range(count):
        kind = order[i % len(order)]
        if kind == "text":
            data = text_blob(rng, BLOB)
        elif kind == "binary":
            data = binary_blob(rng, BLOB)
        else:
            data = rng.randbytes(BLOB)
        pool.append((kind, data))
    return pool


def files_for(
    pool: list[tuple[str, bytes]], total_bytes: int, prefix: str, *, start: int = 0
) -> dict[str, bytes]:
    """Files adding up to about ``total_bytes``, cycling through the pool from ``start``."""
    files: dict[str, bytes] = {}
    for i in range(max(0, total_bytes // BLOB)):
        kind, data = pool[(start + i) % len(pool)]
        files[f"{prefix}{i:04d}.{_EXT[kind]}"] = data
    return files


def _mib_parts(total_mib: int, *shares: float) -> Iterator[int]:
    for share in shares:
        yield max(8, int(total_mib * share))


def windows_disk(
    path: Path,
    size_mib: int,
    pool: list[tuple[str, bytes]],
    *,
    fill: float = 0.45,
    garbage: bool = True,
) -> SampleDisk:
    """MBR: System Reserved (NTFS, active, 100 MiB) + Windows (NTFS, ``fill`` used), free tail."""
    reserved_mib = min(100, max(16, size_mib // 16))
    tail_mib = max(1, size_mib // 64)
    system_mib = size_mib - 1 - reserved_mib - tail_mib
    p1 = SamplePartition(
        number=1, start_lba=MIB_LBA, length_lba=reserved_mib * MIB_LBA, fs="ntfs",
        label="System Reserved", mbr_type=0x07, bootable=True, fs_uuid="5A2E61C03E77A4F1",
        files={"bootmgr": pool[0][1][: 400 * 1024], "BCD": pool[1][1][: 24 * 1024]},
    )  # fmt: skip
    # NTFS sample files live in the root folder (ntfscp cannot make folders).
    p2 = SamplePartition(
        number=2, start_lba=p1.stop_lba, length_lba=system_mib * MIB_LBA, fs="ntfs",
        label="Windows", mbr_type=0x07, fs_uuid="C03A94F53A94E8D2",
        files=files_for(pool, int(system_mib * MIB * fill), "file"),
    )  # fmt: skip
    return build_disk(
        path, size_mib, "msdos", [p1, p2], garbage=garbage, seed=11,
        signature=WINDOWS_SIGNATURE, windows_boot_code=True,
    )  # fmt: skip


def gpt_disk(
    path: Path,
    size_mib: int,
    pool: list[tuple[str, bytes]],
    *,
    fill: float = 0.45,
    garbage: bool = True,
) -> SampleDisk:
    """GPT: EFI System (FAT, 100 MiB), ext4 root (45 %) and ext4 data (45 %), free tail."""
    esp_mib = min(100, max(16, size_mib // 16))
    root_mib, data_mib = _mib_parts(size_mib - esp_mib - 2, 0.5, 0.47)
    esp = SamplePartition(
        number=1, start_lba=MIB_LBA, length_lba=esp_mib * MIB_LBA, fs="vfat", label="EFI",
        gpt_type=ESP_TYPE, guid="1B6E2D4A-0C3F-4E58-9A71-2F8D6C5B4E31",
        name="EFI System Partition", fs_uuid="7C3A-1E55",
        files={"EFI/BOOT/BOOTX64.EFI": pool[2][1][: 900 * 1024]},
    )  # fmt: skip
    root = SamplePartition(
        number=2, start_lba=esp.stop_lba, length_lba=root_mib * MIB_LBA, fs="ext4", label="root",
        gpt_type=LINUX_ROOT_X86_64_TYPE, guid="9E4B1C7D-3A2F-4D6E-B8C5-1F0A2E3D4C5B",
        name="root", fs_uuid="2d7f4c1e-9b3a-4f6d-8e2c-5a1b0c9d8e7f",
        files=files_for(pool, int(root_mib * MIB * fill), "usr/lib/f", start=3),
    )  # fmt: skip
    data = SamplePartition(
        number=3, start_lba=root.stop_lba, length_lba=data_mib * MIB_LBA, fs="ext4",
        label="data", gpt_type=LINUX_DATA_TYPE, guid="C5D2A8E1-6F4B-4A3C-9D7E-8B1F0E2A3C4D",
        name="data", fs_uuid="61a0e3b7-2c9d-4e8f-a1b2-c3d4e5f60718",
        files=files_for(pool, int(data_mib * MIB * fill), "home/user/d", start=7),
    )  # fmt: skip
    return build_disk(
        path, size_mib, "gpt", [esp, root, data], garbage=garbage, seed=13,
        disk_guid=GPT_DISK_GUID,
    )  # fmt: skip
