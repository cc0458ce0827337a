"""Clonezilla image folders read through the Archive interface, on real filesystems.

The folders here are made with partclone + sfdisk + parted + blkid + dd + split,
called the way Clonezilla's ocs-sr calls them (see clonezilla_fixtures), not by
ocs-sr itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from clonezilla_fixtures import MISSING_TOOLS, FsSpec, build_disk_and_image, run
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.base import TRACK0, Unchecked
from archive.clonezilla import (
    looks_like_clonezilla,
    open_clonezilla,
    parse_blkdev_json,
    parse_blkid,
    parse_checksums,
    parse_dev_fs,
    parse_parted,
    parse_sfdisk,
)
from archive.errors import (
    ArchiveError,
    CorruptData,
    ManifestInvalid,
    NotAnArchive,
    TruncatedArchive,
)
from archive.manifest import Role
from archive.partclone import HEADER_V2
from layout.blockio import DiskReader
from layout.table_io import read_table
from restore_tui.cli import main
from restore_tui.commands import verify as verify_command

pytestmark = pytest.mark.skipif(bool(MISSING_TOOLS), reason=f"missing tools: {MISSING_TOOLS}")


@pytest.fixture(scope="module")
def mbr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("mbr")
    return build_disk_and_image(
        work,
        scheme="dos",
        disk_name="sda",
        specs=[
            FsSpec(1, "ntfs", 16, "System Reserved", "zst"),
            FsSpec(5, "ext4", 20, "home", "gz", split=True),
            FsSpec(6, "vfat", 16, "DATA", "xz"),
        ],
        extended=(2, 5),
    )


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("gpt")
    return build_disk_and_image(
        work,
        scheme="gpt",
        disk_name="nvme0n1",
        specs=[
            FsSpec(1, "vfat", 16, "EFI", "lz4"),
            FsSpec(2, "ext4", 24, "root", "uncomp"),
            FsSpec(3, "raw", 4, "raw", "bz2"),
        ],
        seed=2,
    )


def restore_to_file(archive_dir: Path, size: int, target: Path) -> None:
    """A full-disk restore through pieces(): sector 0, track 0, EBRs, every partition."""
    archive = open_clonezilla(archive_dir)
    with target.open("wb") as f:
        f.truncate(size)
        f.seek(0)
        f.write(archive.manifest.sector0)
        for ebr in archive.manifest.boot.ebrs:
            f.seek(ebr.lba * 512)
            f.write(bytes.fromhex(ebr.data))
        areas = [TRACK0, *(p.number for p in archive.manifest.partitions)]
        for area in areas:
            for piece in archive.pieces(area):
                assert piece.data is not None
                f.seek(piece.offset)
                f.write(piece.data)


def test_mbr_folder_maps_onto_the_manifest(mbr: tuple[Path, Path]) -> None:
    disk, folder = mbr
    assert looks_like_clonezilla(folder)
    m = open_clonezilla(folder).manifest
    assert m.creator == "Clonezilla 5.3.17"
    assert m.table.scheme == "msdos" and m.table.mbr_signature == "7490A9A7"
    assert m.source.identity.size_bytes == disk.stat().st_size
    assert m.source.device == "/dev/sda"
    assert [(p.number, p.kind) for p in m.table.partitions] == [
        (1, "primary"),
        (2, "extended"),
        (5, "logical"),
        (6, "logical"),
    ]
    p1 = m.table.partition(1)
    assert p1.label == "System Reserved" and p1.filesystem == "ntfs" and "boot" in p1.flags
    assert m.table.partition(5).label == "home" and m.table.partition(6).filesystem == "vfat"
    assert m.image(1).role == Role.SYSTEM_RESERVED
    assert m.image(2).role == Role.EXTENDED and m.image(2).capture == "none"
    assert m.image(5).capture == "used-blocks" and m.image(5).used_bytes
    assert m.boot_code == disk.read_bytes()[:440]
    # Clonezilla saves only the first EBR; the whole chain is rebuilt from the table,
    # starting at the extended partition.
    assert len(m.boot.ebrs) == 2
    assert m.boot.ebrs[0].lba == m.table.partition(2).start_lba
    assert m.table.partition(5).stop_lba <= m.boot.ebrs[1].lba < m.table.partition(6).start_lba
    # NTFS: the backup boot sector (last sector), which partclone leaves out, is restored.
    p1_stop = m.table.partition(1).stop_lba * 512
    assert m.image(1).chunks[-1].offset == p1_stop - 512
    assert m.boot.track0_stop == 2048 * 512
    assert all(
        c.length <= 4 * 1024 * 1024 and c.digest is None for p in m.partitions for c in p.chunks
    )


def test_mbr_full_restore_is_byte_exact_on_stored_blocks(
    mbr: tuple[Path, Path], tmp_path: Path
) -> None:
    disk, folder = mbr
    target = tmp_path / "target.img"
    restore_to_file(folder, disk.stat().st_size, target)
    archive = open_clonezilla(folder)
    src, out = disk.read_bytes(), target.read_bytes()
    assert out[: 2048 * 512] == src[: 2048 * 512]  # sector 0 and the hidden track 0
    for image in archive.manifest.partitions:
        for c in image.chunks:
            assert out[c.offset : c.stop] == src[c.offset : c.stop], (image.number, c.offset)
    table = archive.manifest.table
    for number, check in ((5, ["e2fsck", "-fn"]), (6, ["fsck.vfat", "-n"])):
        p = table.partition(number)
        part = tmp_path / f"p{number}.img"
        part.write_bytes(out[p.start_lba * 512 : p.stop_lba * 512])
        result = subprocess.run([*check, str(part)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    # The rebuilt EBR chain gives back every logical partition exactly.
    with DiskReader(target) as restored:
        parsed = read_table(restored.read, restored.size)
    assert parsed is not None
    geometry = [(p.number, p.start_lba, p.length_lba, p.mbr_type) for p in parsed.table.partitions]
    assert geometry == [(p.number, p.start_lba, p.length_lba, p.mbr_type) for p in table.partitions]
    # The NTFS backup boot sector equals its boot sector again.
    p1 = table.partition(1)
    assert (
        out[(p1.stop_lba - 1) * 512 : p1.stop_lba * 512]
        == out[p1.start_lba * 512 : p1.start_lba * 512 + 512]
    )
    # The restored ext4 holds the same files: sfdisk still reads the restored table.
    dumped = run("sfdisk", "-d", target).decode()
    assert "type=83" in dumped and "label-id: 0x7490a9a7" in dumped
    report = archive.verify()
    assert report.ok, report.damage
    assert report.checked_bytes == archive.manifest.stored_bytes()


def test_partclone_restore_agrees_on_a_split_gzip_image(
    mbr: tuple[Path, Path], tmp_path: Path
) -> None:
    _disk, folder = mbr
    archive = open_clonezilla(folder)
    p = archive.manifest.table.partition(5)
    size = p.length_lba * 512
    theirs = tmp_path / "theirs.img"
    theirs.write_bytes(b"\x5a" * size)
    parts = sorted(folder.glob("sda5.ext4-ptcl-img.gz.a?"))
    stream = subprocess.run(
        ["sh", "-c", 'cat "$@" | gzip -dc', "sh", *map(str, parts)], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["partclone.extfs", "-q", "-r", "-s", "-", "-O", str(theirs)],
        input=stream,
        check=True,
        capture_output=True,
    )
    ours = bytearray(b"\x5a" * size)
    base = p.start_lba * 512
    for piece in archive.pieces(5):
        assert piece.data is not None
        ours[piece.offset - base : piece.stop - base] = piece.data
    assert bytes(ours) == theirs.read_bytes()


def test_gpt_folder_with_raw_image_and_gpt_track0(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    disk, folder = gpt
    archive = open_clonezilla(folder)
    m = archive.manifest
    assert (
        m.table.scheme == "gpt" and m.table.gpt_disk_guid == "3F2A1D5C-0B7E-4C59-9D35-6B1E2A4C8F10"
    )
    assert m.image(1).role == Role.EFI_SYSTEM and "esp" in m.table.partition(1).flags
    assert m.table.partition(2).gpt_name == "root" and m.table.partition(2).label == "root"
    assert m.image(3).capture == "all-sectors"
    src = disk.read_bytes()
    track0 = b"".join(p.data or b"" for p in archive.pieces(TRACK0))
    assert track0 == src[512 : 34 * 512]
    p3 = m.table.partition(3)
    raw = b"".join(p.data or b"" for p in archive.pieces(3))
    assert raw == src[p3.start_lba * 512 : p3.stop_lba * 512]
    # Resume in the middle of partition 2: exactly the chunks after the cut.
    chunks = m.image(2).chunks
    cut = chunks[len(chunks) // 2].offset + 1
    tail = list(archive.pieces(2, start=cut))
    assert [(t.offset, t.length) for t in tail] == [
        (c.offset, c.length) for c in chunks if c.stop > cut
    ]
    assert all(t.data == src[t.offset : t.stop] for t in tail)
    assert archive.verify().ok


def test_checksum_files_are_checked(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    _disk, original = gpt
    folder = tmp_path / "img"
    shutil.copytree(original, folder)
    images = sorted(p.name for p in folder.glob("nvme0n1p*-img.*"))
    lines = [f"{hashlib.md5((folder / n).read_bytes()).hexdigest()}  {n}" for n in images]
    (folder / "MD5SUMS").write_text("\n".join(lines) + "\n")
    assert open_clonezilla(folder).verify().ok
    bad = lines[0].replace(lines[0][0], "0" if lines[0][0] != "0" else "1", 1)
    (folder / "MD5SUMS").write_text("\n".join([bad, *lines[1:]]) + "\n")
    damage = open_clonezilla(folder).verify().damage
    assert len(damage) == 1 and "MD5SUMS" in damage[0].message and damage[0].partition == 1


def test_flipped_byte_names_partition_and_block(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    _disk, original = gpt
    folder = tmp_path / "img"
    shutil.copytree(original, folder)
    image = folder / "nvme0n1p2.ext4-ptcl-img.uncomp"
    raw = bytearray(image.read_bytes())
    total = int.from_bytes(raw[60:68], "little")
    raw[HEADER_V2.size + (total + 7) // 8 + 4 + 2_000_000] ^= 0x10
    image.write_bytes(bytes(raw))
    archive = open_clonezilla(folder)
    report = archive.verify()
    assert [d.partition for d in report.damage] == [2]
    assert "partition 2 (nvme0n1p2)" in report.damage[0].message
    assert "blocks" in report.damage[0].message
    with pytest.raises(CorruptData) as err:
        list(archive.pieces(2))
    assert err.value.partition == 2


def test_damaged_folders_are_refused_clearly(mbr: tuple[Path, Path], tmp_path: Path) -> None:
    _disk, original = mbr

    def fresh(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(original, folder)
        return folder

    no_parts = fresh("no-parts")
    (no_parts / "parts").unlink()
    with pytest.raises(NotAnArchive, match="no `parts` file"):
        open_clonezilla(no_parts)

    cut = fresh("cut")
    ab = cut / "sda5.ext4-ptcl-img.gz.ab"
    ab.write_bytes(ab.read_bytes()[:1000])
    with pytest.raises(TruncatedArchive, match=r"gz\.ab"):
        open_clonezilla(cut)

    shrunk = fresh("shrunk")
    sf = shrunk / "sda-pt.sf"
    sf.write_text(sf.read_text().replace("size=       32768, type=7", "size=       20000, type=7"))
    with pytest.raises(ManifestInvalid, match="does not belong to these images"):
        open_clonezilla(shrunk)

    stranger = fresh("stranger")
    (stranger / "parts").write_text("sda1 sda5 sda6 sda7\n")
    with pytest.raises(ManifestInvalid, match="sda7"):
        open_clonezilla(stranger)

    lzo = fresh("lzo")
    (lzo / "sda6.vfat-ptcl-img.xz").unlink()
    (lzo / "sda6.vfat-ptcl-img.lzo").write_bytes(b"\x89LZO\x00\r\n\x1a\n" + bytes(64))
    with pytest.raises(NotAnArchive, match="lzop"):
        open_clonezilla(lzo)

    missing = fresh("missing")
    (missing / "sda6.vfat-ptcl-img.xz").unlink()
    with pytest.raises(NotAnArchive, match="no image file for it"):
        open_clonezilla(missing)


# ---------------------------------------------------------------- what no checksum covers


def _flipped(original: Path, tmp_path: Path, name: str, offset: int, mask: int = 0x01) -> Path:
    """A copy of the folder with one bit of ``name`` flipped at ``offset``."""
    folder = tmp_path / f"flip-{name}-{offset}"
    shutil.copytree(original, folder)
    raw = bytearray((folder / name).read_bytes())
    raw[offset] ^= mask
    (folder / name).write_bytes(bytes(raw))
    return folder


def verify_output(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = verify_command.run(argparse.Namespace(archive=str(folder)))
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (446 + 8, "sda-mbr's partition entry 1 says start 2049, sda-pt.sf says start 2048"),
        (462 + 12, "sda-mbr's partition entry 2 says size 96257, sda-pt.sf says size 96256"),
        (462 + 4, "sda-mbr's partition entry 2 says type 0x04, sda-pt.sf says type 0x05"),
        (446, "sda-mbr's partition entry 1 says not bootable, sda-pt.sf says bootable"),
        (478 + 4, "sda-mbr's partition entry 3 holds a partition (type 0x01, start 0)"),
        (440, "sda-mbr's disk signature says 0x7490a9a6, sda-pt.sf says 0x7490a9a7"),
        (511, "sda-mbr does not end with the 55 AA mark"),
    ],
)
def test_first_sector_that_disagrees_with_the_table_is_refused(
    mbr: tuple[Path, Path], tmp_path: Path, offset: int, message: str
) -> None:
    _disk, original = mbr
    folder = _flipped(original, tmp_path, "sda-mbr", offset)
    with pytest.raises(ManifestInvalid) as err:
        open_clonezilla(folder)
    assert message in str(err.value)
    assert "damaged or from another disk" in str(err.value)


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (446 + 8, "sda2-ebr's entry for partition 5 says start 36865, sda-pt.sf says 36864"),
        (446 + 4, "sda2-ebr's entry for partition 5 says type 0x82, sda-pt.sf says 0x83"),
        (462 + 8, "sda2-ebr's link to partition 6 says sectors"),
        (462 + 4, "sda2-ebr's link to the next extended boot record is missing"),
    ],
)
def test_saved_ebr_that_disagrees_with_the_table_is_refused(
    mbr: tuple[Path, Path], tmp_path: Path, offset: int, message: str
) -> None:
    _disk, original = mbr
    folder = _flipped(original, tmp_path, "sda2-ebr", offset)
    with pytest.raises(ManifestInvalid, match="damaged or from another disk") as err:
        open_clonezilla(folder)
    assert message in str(err.value)


def test_gpt_first_sector_must_be_a_protective_mbr(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    _disk, original = gpt
    folder = _flipped(original, tmp_path, "nvme0n1-mbr", 446 + 4)  # 0xEE -> 0xEF
    with pytest.raises(ManifestInvalid, match=r"nvme0n1-mbr has no protective entry \(type 0xEE"):
        open_clonezilla(folder)


def test_flipped_boot_code_byte_is_not_detectable_and_verify_says_so(
    mbr: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _disk, original = mbr
    folder = _flipped(original, tmp_path, "sda-mbr", 100)
    archive = open_clonezilla(folder)
    assert archive.manifest.boot_code != open_clonezilla(original).manifest.boot_code
    assert archive.verify().ok  # nothing can tell
    assert archive.unchecked() == (
        Unchecked(area="boot-code", reason="format-keeps-no-checksum"),
        Unchecked(area="track0", reason="format-keeps-no-checksum"),
        Unchecked(area="ebrs", reason="format-keeps-no-checksum"),
    )
    code, out = verify_output(folder, capsys)
    assert code == 0
    result, unchecked = out.strip().splitlines()[-2:]
    assert result.startswith("The backup is sound")
    assert unchecked.startswith(
        "Not covered by any checksum: the boot code, the 1.0 MiB before the first partition "
        "and the records that link the logical partitions (Clonezilla keeps no checksum for "
        "these); restore-tui restores them as stored."
    )
    assert "the space before the first partition" in unchecked


def test_gpt_unchecked_is_the_boot_code_and_the_raw_copy(
    gpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _disk, original = gpt
    archive = open_clonezilla(original)
    # Track 0 of a GPT disk is its header and entries, under the GPT's own CRC32s.
    assert archive.unchecked() == (
        Unchecked(area="boot-code", reason="format-keeps-no-checksum"),
        Unchecked(area="partition", partition=3, reason="raw-copy"),
    )
    code, out = verify_output(original, capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-2] == (
        "Not covered by any checksum: the boot code (Clonezilla keeps no checksum for this); "
        "restore-tui restores it as stored. The boot code is the start-up code in the disk's "
        "first sector."
    )
    assert lines[-1].startswith("Not covered by any checksum: the data of partition 3 (")
    assert "saved as a raw copy, which Clonezilla keeps no checksum for" in lines[-1]

    # A damaged GPT header: its CRC no longer vouches for track 0.
    damaged = _flipped(original, tmp_path, "nvme0n1-gpt-1st", 512 + 40)
    areas = [u.area for u in open_clonezilla(damaged).unchecked()]
    assert areas == ["boot-code", "track0", "partition"]


def test_files_under_checksum_files_are_covered(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    """``md5sum * > MD5SUMS``, as ocs-sr -gmf does: verify checks every file, so all is covered."""
    _disk, original = gpt
    folder = tmp_path / "img"
    shutil.copytree(original, folder)
    names = sorted(p.name for p in folder.iterdir())
    lines = [f"{hashlib.md5((folder / n).read_bytes()).hexdigest()}  {n}" for n in names]
    (folder / "MD5SUMS").write_text("\n".join(lines) + "\n")
    archive = open_clonezilla(folder)
    assert archive.unchecked() == ()
    assert archive.verify().ok


# ---------------------------------------------------------------- text parsers


def test_sfdisk_dump_parsing() -> None:
    dump = parse_sfdisk(
        "label: gpt\nlabel-id: 3F2A1D5C-0B7E-4C59-9D35-6B1E2A4C8F10\ndevice: /dev/nvme0n1\n"
        "unit: sectors\nfirst-lba: 34\nlast-lba: 131038\nsector-size: 512\n\n"
        "/dev/nvme0n1p1 : start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
        'uuid=DEB47F2F-3DA1-4CC5-9968-D48EE32F0699, name="EFI, \\"system\\"", attrs="GUID:63"\n'
    )
    assert dump.label == "gpt" and dump.last_lba == 131038
    (e,) = dump.entries
    assert (e.number, e.start, e.size, e.name, e.attrs) == (
        1,
        2048,
        16384,
        'EFI, "system"',
        "GUID:63",
    )
    with pytest.raises(ManifestInvalid, match="not a number"):
        parse_sfdisk("label: dos\n/dev/sda1 : start=x, size=1, type=83\n")
    with pytest.raises(ManifestInvalid, match="'dos'"):
        parse_sfdisk("label: sun\n")
    assert parse_blkid('/dev/sda1: LABEL="System Reserved" TYPE="ntfs"\n') == {
        "sda1": {"LABEL": "System Reserved", "TYPE": "ntfs"}
    }
    assert parse_dev_fs("# c\n/dev/sda1 ntfs 100M\n") == {"sda1": "ntfs"}
    assert parse_parted("Disk /dev/sda: 131072s\nSector size (logical/physical): 512B/4096B\n") == (
        131072,
        512,
        4096,
    )
    assert (
        parse_blkdev_json('{"blockdevices":[{"NAME":"sda","MODEL":"WDC","SERIAL":"X1"}]}', "sda")[
            "serial"
        ]
        == "X1"
    )
    assert parse_checksums("d41d8cd98f00b204e9800998ecf8427e  sda1.ntfs-ptcl-img.zst\n") == [
        ("d41d8cd98f00b204e9800998ecf8427e", "sda1.ntfs-ptcl-img.zst")
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzzed_text_files_never_crash(text: str) -> None:
    try:
        parse_sfdisk(text)
    except ManifestInvalid as exc:
        assert str(exc)
    parse_blkid(text)
    parse_dev_fs(text)
    parse_parted(text)
    parse_blkdev_json(text, "sda")
    parse_checksums(text)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 9),
            st.integers(0, 300_000),
            st.integers(0, 300_000),
            st.sampled_from(["7", "83", "5", "zz", "ef", "1ff"]),
        ),
        max_size=5,
    ),
    st.sampled_from(["dos", "gpt", "aix"]),
)
def test_hostile_table_files_give_clear_errors(
    mbr: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
    entries: list[tuple[int, int, int, str]],
    label: str,
) -> None:
    _disk, original = mbr
    folder = tmp_path_factory.mktemp("hostile") / "img"
    for name in ("disk", "parts", "sda-mbr", "sda-pt.parted", "blkid.list"):
        folder.mkdir(exist_ok=True)
        shutil.copyfile(original / name, folder / name)
    for image in original.glob("sda*-ptcl-img*"):
        (folder / image.name).symlink_to(image)
    lines = [f"label: {label}", "label-id: 0x1234", ""] + [
        f"/dev/sda{n} : start={s}, size={z}, type={t}" for n, s, z, t in entries
    ]
    (folder / "sda-pt.sf").write_text("\n".join(lines) + "\n")
    try:
        open_clonezilla(folder)
    except ArchiveError as exc:
        assert str(exc)


# ---------------------------------------------------------------- the real ocs-sr

OCS_SR = shutil.which("ocs-sr")
OCS_SCRIPT = """set -e
mount -t tmpfs none /dev
mknod /dev/null c 1 3; mknod /dev/zero c 1 5; mknod /dev/urandom c 1 9; mknod /dev/random c 1 8
chmod 666 /dev/null /dev/zero /dev/urandom /dev/random
{nodes}
mkdir -p /dev/pts /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
ocs-sr -b -q2 -j2 -z9p -i 1 -sfsck -scs -senc -noabo -nogui -p true -or {repo} savedisk real {disk}
"""


def ocs_savedisk(loop_device, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A disk (System Reserved NTFS + ext4, a few files) saved by the real ocs-sr.

    ocs-sr probes every disk it can see, so it runs in a mount namespace whose
    /dev holds only this test's loop device and its partitions. Returns the disk
    image and the image folder.
    """
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(48 * 1024 * 1024))
    run("sfdisk", "-q", disk, stdin=b"label: dos\n2048,16384,7,*\n18432,,83\n")
    device = loop_device(disk)
    content = tmp_path / "content"
    content.mkdir()
    (content / "bootmgr").write_bytes(bytes(range(256)) * 300)
    (content / "hello.txt").write_text("saved by ocs-sr\n")
    run("mkntfs", "-q", "-F", "-f", "-L", "System Reserved", f"{device}p1")
    run("ntfscp", "-q", f"{device}p1", content / "bootmgr", "bootmgr")
    run("mkfs.ext4", "-q", "-F", "-L", "win", "-d", content, f"{device}p2")
    run("sync")
    nodes = []
    for node in (device, f"{device}p1", f"{device}p2"):
        major, minor = run("stat", "-c", "%Hr %Lr", node).decode().split()
        nodes.append(f"mknod {node} b {major} {minor}")
    repo = tmp_path / "repo"
    repo.mkdir()
    script = OCS_SCRIPT.format(nodes="\n".join(nodes), repo=repo, disk=Path(device).name)
    # ocs-sr leaves mktemp files in /tmp (parttable-ocs.*); remove the ones this run made.
    before = set(Path("/tmp").glob("parttable-ocs.*"))
    try:
        result = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for leftover in set(Path("/tmp").glob("parttable-ocs.*")) - before:
            leftover.unlink(missing_ok=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return disk, repo / "real"


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(OCS_SR is None, reason="Debian's clonezilla package (ocs-sr) is not installed")
def test_image_made_by_the_real_ocs_sr(loop_device, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An image made by Clonezilla's own ocs-sr (5.3.x), on a loop device, in a private /dev."""
    disk, folder = ocs_savedisk(loop_device, tmp_path)
    archive = open_clonezilla(folder)
    m = archive.manifest
    assert m.creator.startswith("Clonezilla 5.")
    assert m.table.partition(1).label == "System Reserved"
    assert m.image(1).role == Role.SYSTEM_RESERVED and m.image(2).capture == "used-blocks"
    assert archive.verify().ok
    src = disk.read_bytes()
    for area in (TRACK0, 1, 2):
        for piece in archive.pieces(area):
            assert piece.data == src[piece.offset : piece.stop]


def test_the_plan_says_what_no_checksum_covers(
    mbr: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before anything is written, the preview names what is restored unchecked; a
    one-partition restore does not mention the boot code it does not write."""
    disk, folder = mbr
    target = tmp_path / "target.img"
    target.write_bytes(bytes(disk.stat().st_size))
    capsys.readouterr()
    assert main(["plan", str(folder), "--target", str(target), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    (said,) = [w for w in plan["warnings"] if w["code"] == "not-checksummed"]
    assert said["text"].startswith("Not covered by any checksum: the boot code, the 1.0 MiB")
    assert main(["plan", str(folder), "--target", str(target)]) == 0
    assert "Not covered by any checksum: the boot code" in capsys.readouterr().out
