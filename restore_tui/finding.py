"""Finding backups on every attached disk, mounted or not, without changing a byte.

On rescue media the disk that holds the backup is attached but not mounted. For each
partition (or whole-disk filesystem) of each probed disk this looks inside read-only:
a filesystem that is mounted already is scanned where it is mounted; any other is
mounted read-only (``ro,nodev,nosuid,noexec``, and without journal replay: ext2/3/4
``noload``, XFS ``norecovery``, btrfs ``rescue=nologreplay``; NTFS through ntfs-3g,
whose read-only mount never replays) under a private folder in ``/run/restore-tui``,
scanned, and unmounted again. A disk given in ``exclude`` (the one being restored) is
never looked inside.

Inside a filesystem the scan looks at the top folder, ``/home/partimag`` (Clonezilla's
place) and two folder levels down, for ``.rtui`` files and Clonezilla image folders,
bounded by a number of entries and a time, so a disk full of photos never stalls.

:class:`OpenedBackup` (or :func:`open_found`) opens a backup found on an unmounted
partition: it mounts that partition read-only for as long as the archive is in use
and unmounts it on ``close()``. Every mount made here is also unmounted when the
interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from archive import open_archive
from archive.base import Archive
from layout.fsinfo import probe_filesystem
from layout.probe import Probe, ProbedDisk, ProbeError, read_mounts, sys_partitions
from layout.units import human_size

NATIVE_MAGIC = b"RTUI-ARC"
NATIVE_SUFFIX = ".rtui"
CLONEZILLA_HOME = "home/partimag"
# Bounds on the scan: a few levels and a few thousand entries per filesystem (and a
# few seconds), so a huge disk full of photos never makes the first screen wait.
SCAN_DEPTH = 2
SCAN_MAX_ENTRIES = 5_000
SCAN_SECONDS = 15.0
# Folder roots (the mounted media of the running system) share one larger budget.
ROOTS_MAX_ENTRIES = 20_000
SKIP_TOP = {"/proc", "/sys", "/dev", "/run", "/tmp", "/var/lib", "/usr", "/boot", "/snap"}
# Folders of an installed system that never hold a backup: not worth the budget.
SKIP_NAMES = {
    "Windows",
    "Program Files",
    "Program Files (x86)",
    "ProgramData",
    "System Volume Information",
    "$Recycle.Bin",
    "$RECYCLE.BIN",
    "lost+found",
    "proc",
    "sys",
}

#: Where private mount folders are made (a tempdir inside it per mount).
RUNTIME_BASE = Path("/run/restore-tui")
SAFE_OPTIONS = "nodev,nosuid,noexec"
MOUNT_TIMEOUT = 60.0
# Filesystems that hold no files to look at: passed over without a word.
NOT_FILES = {"swap", "LVM2_member", "linux_raid_member", "zfs_member", "ddf_raid_member"}
FOLD_CASE = {"vfat", "msdos", "exfat"}
ENCRYPTED = {"BitLocker": "BitLocker", "crypto_LUKS": "LUKS"}
FS_WORDS = {
    "ntfs": "NTFS",
    "vfat": "FAT",
    "exfat": "exFAT",
    "ext2": "ext2",
    "ext3": "ext3",
    "ext4": "ext4",
    "xfs": "XFS",
    "btrfs": "btrfs",
}


class FindError(Exception):
    """A filesystem could not be looked inside; the message says why in plain words."""


# ---------------------------------------------------------------------------
# What a backup looks like


def backup_kind(path: Path) -> str | None:
    """ "restore-tui archive" / "Clonezilla image" when ``path`` looks like one, else None."""
    try:
        if path.is_file():
            with open(path, "rb") as f:
                if f.read(len(NATIVE_MAGIC)) == NATIVE_MAGIC:
                    return "restore-tui archive"
            return None
        if path.is_dir() and (
            (path / "clonezilla-img").exists()
            or ((path / "disk").is_file() and (path / "parts").is_file())
        ):
            return "Clonezilla image"
    except OSError:
        return None
    return None


def backup_size(path: Path) -> int:
    """Bytes of a backup file, or of the files directly inside a Clonezilla folder."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    except OSError:
        return 0


class _Budget:
    """Entries and seconds left for one scan."""

    def __init__(self, entries: int, seconds: float | None = None) -> None:
        self.entries = entries
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def spend(self) -> bool:
        self.entries -= 1
        if self.entries <= 0:
            return False
        return self.deadline is None or time.monotonic() < self.deadline

    @property
    def left(self) -> bool:
        return self.entries > 0 and (self.deadline is None or time.monotonic() < self.deadline)


def _walk(root: Path, depth: int, budget: _Budget, *, same_fs: int | None = None) -> Iterator[Path]:
    """Candidate backups below ``root``, ``depth`` folder levels down: breadth first (the
    top folder before the folders in it), names in order within a folder.

    One folder uses at most a quarter of the budget, so a folder of 50,000 photos does
    not hide the folders beside it. ``same_fs``: the device number of the filesystem
    being scanned; folders on another filesystem (something mounted inside it) and
    symbolic links are not followed.
    """
    level = [root]
    per_folder = max(1, budget.entries // 4)
    for _ in range(depth + 1):
        below: list[Path] = []
        for folder in level:
            if not budget.left:
                return
            try:
                with os.scandir(folder) as it:
                    entries = []
                    for entry in it:
                        entries.append(entry)
                        if len(entries) >= per_folder:
                            break
            except OSError:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                if not budget.spend():
                    return
                path = Path(entry.path)
                if str(path) in SKIP_TOP or entry.name.startswith(".") or entry.name in SKIP_NAMES:
                    continue
                try:
                    if same_fs is not None and entry.is_symlink():
                        continue
                    is_dir = entry.is_dir(follow_symlinks=False)
                    other_fs = (
                        same_fs is not None
                        and is_dir
                        and (entry.stat(follow_symlinks=False).st_dev != same_fs)
                    )
                    if other_fs:
                        continue
                except OSError:
                    continue
                if entry.name.endswith(NATIVE_SUFFIX) or (is_dir and backup_kind(path)):
                    yield path
                elif is_dir:
                    below.append(path)
        level = below


def _backups_below(
    root: Path, *, depth: int, budget: _Budget, same_fs: bool, fold_case: bool = False
) -> list[tuple[Path, str, int]]:
    """(path, kind, size) of every backup in ``root``: /home/partimag first, then the walk.

    ``fold_case``: the filesystem ignores case (FAT, exFAT), so /home/partimag and the
    walk's HOME/PARTIMAG are one folder; the name the walk listed is kept.
    """
    dev: int | None = None
    if same_fs:
        try:
            dev = os.stat(root).st_dev
        except OSError:
            return []
    found: dict[str, tuple[Path, str, int]] = {}
    starts = [(root / CLONEZILLA_HOME, 0), (root, depth)]
    for start, levels in starts:
        if start != root and not start.is_dir():
            continue
        for path in _walk(start, levels, budget, same_fs=dev):
            key = str(path).casefold() if fold_case else str(path)
            if key in found and not (fold_case and start == root):
                continue
            kind = found[key][1] if key in found else backup_kind(path)
            if kind is not None:
                size = found[key][2] if key in found else backup_size(path)
                found[key] = (path, kind, size)
    return sorted(found.values(), key=lambda item: str(item[0]))


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FoundBackup:
    """One backup found, and where it is in words a person recognises.

    ``text`` reads like "windows-pc.rtui — on WD My Book · 2.0 TB · USB,
    partition 1 "BACKUP", folder Backups".
    """

    name: str  # the file or folder name: "windows-pc.rtui"
    kind: str  # "restore-tui archive" / "Clonezilla image"
    size: int
    #: the path inside its filesystem ("/Backups/windows-pc.rtui"); for a backup found in
    #: a folder given as a root, the path below that folder
    inner_path: str
    #: the partition (or whole disk) whose filesystem holds it; None: found in a folder
    device: str | None = None
    #: where that filesystem (or the folder root) is mounted now; None: not mounted,
    #: :class:`OpenedBackup` mounts it read-only to open the backup
    mounted_at: str | None = None
    filesystem: str | None = None  # blkid's TYPE: "ext4", "ntfs", "vfat", ...
    disk: str = ""  # "WD My Book · 2.0 TB · USB"; empty when found in a folder
    disk_device: str | None = None  # the whole disk: /dev/sdb
    disk_headline: str | None = None  # "model · size · serial · bus"
    partition: int | None = None  # None: a filesystem on the whole disk, or a folder
    label: str | None = None  # the filesystem's label

    @property
    def path(self) -> Path | None:
        """Where the backup can be opened now; None while its filesystem is not mounted."""
        if self.mounted_at is None:
            return None
        return Path(self.mounted_at) / self.inner_path.lstrip("/")

    @property
    def place(self) -> str:
        """'partition 1 "BACKUP"', 'the whole disk (FAT)'; empty for a folder root."""
        if self.device is None:
            return ""
        return place_words(self.partition, self.label, self.filesystem)

    @property
    def folder(self) -> str:
        """ "folder Backups" / "top folder": where inside its filesystem."""
        parent = str(Path(self.inner_path).parent).strip("/")
        return f"folder {parent}" if parent else "top folder"

    @property
    def where(self) -> str:
        """Everything after the name: "on <disk>, <place>, <folder>" (or the folder path)."""
        if self.device is None:
            path = self.path
            return f"in {path.parent}" if path is not None else ""
        return ", ".join(p for p in (f"on {self.disk}", self.place, self.folder) if p)

    @property
    def text(self) -> str:
        return f"{self.name} — {self.where}"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "size_text": human_size(self.size),
            "device": self.device,
            "partition": self.partition,
            "path": self.inner_path,
            "filesystem": self.filesystem,
            "label": self.label,
            "disk": self.disk_headline,
            "disk_device": self.disk_device,
            "mounted_at": self.mounted_at,
            "open_path": str(self.path) if self.path is not None else None,
            "text": self.text,
        }


def keeps_record_beside(backup: FoundBackup) -> bool:
    """Whether a restore's progress record can be kept beside this backup: not when its
    filesystem is opened read-only (not mounted now, so opened here read-only; or
    mounted read-only), and then it lives in the running system's memory on rescue media."""
    path = backup.path
    if path is None:
        return False
    try:
        read_only = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False
    return not read_only and os.access(path.parent, os.W_OK)


@dataclass(frozen=True)
class Place:
    """A filesystem of an attached disk that was (or could be) looked inside."""

    words: str  # "WD My Book · 2.0 TB · USB, partition 1 "BACKUP""
    device: str
    filesystem: str
    mounted_at: str | None
    removable: bool = False
    label: str | None = None


@dataclass(frozen=True)
class Scan:
    """What one search found, and what it looked at (for "none found" to name it)."""

    backups: tuple[FoundBackup, ...] = ()
    disks: tuple[str, ...] = ()  # the disks looked inside, in words
    folders: tuple[str, ...] = ()  # the folder roots looked in
    skipped: tuple[str, ...] = ()  # "partition 2 of <disk>: <why>"
    places: tuple[Place, ...] = field(default=(), repr=False)


def disk_words(disk: ProbedDisk) -> str:
    """ "WD My Book · 2.0 TB · USB": the headline without the serial number."""
    parts = disk.headline.split(" · ")
    return " · ".join(p for p in parts if not p.startswith("serial "))


def place_words(partition: int | None, label: str | None, fstype: str | None) -> str:
    fs = FS_WORDS.get(fstype or "", fstype or "")
    where = f"partition {partition}" if partition is not None else "the whole disk"
    if label:
        return f'{where} "{label}"'
    return f"{where} ({fs})" if fs else where


# ---------------------------------------------------------------------------
# Read-only mounts


def _run(argv: Sequence[str], timeout: float = MOUNT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def mount_commands(device: str, fstype: str, point: str) -> list[list[str]]:
    """The read-only mount commands for ``fstype``, tried in order; never a read-write one.

    Raises FindError when this system cannot look inside that kind of filesystem.
    """
    if fstype in ENCRYPTED:
        raise FindError(
            f"it is encrypted with {ENCRYPTED[fstype]}; restore-tui cannot look inside it"
        )
    safe = f"ro,{SAFE_OPTIONS}"
    commands: list[list[str]] = []
    if fstype in ("ext2", "ext3", "ext4"):
        # The ext4 driver reads all three; noload: no journal replay, the disk stays as it is.
        commands.append(["mount", "-t", "ext4", "-o", f"{safe},noload", device, point])
    elif fstype == "ntfs":
        # ntfs-3g never replays NTFS's log on a read-only mount (nor removes hiberfil.sys).
        if shutil.which("mount.ntfs-3g"):
            commands.append(["mount", "-t", "ntfs-3g", "-o", safe, device, point])
        elif shutil.which("ntfs-3g"):
            commands.append(["ntfs-3g", "-o", safe, device, point])
        else:
            raise FindError("reading NTFS needs ntfs-3g, which is not installed here")
    elif fstype in ("vfat", "msdos"):
        commands.append(["mount", "-t", "vfat", "-o", safe, device, point])
        if shutil.which("fusefat"):  # kernels built without FAT: fusefat is read-only unless rw+
            # fsname: the mount table names the device, so the disk holding the backup
            # is known (and never offered as the restore target).
            commands.append(["fusefat", "-o", f"{safe},fsname={device}", device, point])
    elif fstype == "exfat":
        commands.append(["mount", "-t", "exfat", "-o", safe, device, point])
        if shutil.which("mount.exfat-fuse"):
            commands.append(["mount.exfat-fuse", "-o", safe, device, point])
    elif fstype == "xfs":
        commands.append(["mount", "-t", "xfs", "-o", f"{safe},norecovery", device, point])
    elif fstype == "btrfs":
        commands.append(["mount", "-t", "btrfs", "-o", f"{safe},rescue=nologreplay", device, point])
    else:
        raise FindError(f"restore-tui does not look inside {fstype} filesystems")
    for argv in commands:
        options = argv[argv.index("-o") + 1]
        assert options.split(",")[0] == "ro", argv  # never a read-write mount
    return commands


def mount_hint(device: str, fstype: str) -> str | None:
    """The command a person would type to mount it read-only at /mnt, or None."""
    try:
        argv = mount_commands(device, fstype, "/mnt")[0]
    except FindError:
        return None
    i = argv.index("-o")
    argv[i + 1] = ",".join(o for o in argv[i + 1].split(",") if o not in SAFE_OPTIONS.split(","))
    return " ".join(argv)


def _runtime_dir(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "disk"
    try:
        RUNTIME_BASE.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = RUNTIME_BASE
    except OSError:
        base = Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=base))


def _is_mounted(point: Path) -> bool:
    target = os.path.realpath(point)
    return any(os.path.realpath(m.mount_point) == target for m in read_mounts())


def _unmount(point: Path) -> None:
    """Unmount ``point`` (waiting a little while it is busy, lazily as a last resort), then
    remove the folder. Never raises."""
    try:
        for attempt in range(20):
            if not _is_mounted(point):
                break
            result = _run(["umount", str(point)], timeout=30)
            if result.returncode == 0:
                break
            time.sleep(0.1 if attempt < 10 else 0.3)
        else:
            _run(["umount", "-l", str(point)], timeout=30)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        if not _is_mounted(point):
            point.rmdir()
    except OSError:
        pass


@dataclass
class _Held:
    point: Path
    device: str
    refs: int


class _Registry:
    """Every mount this process made, shared per device and counted (ntfs-3g cannot mount
    one device twice), and unmounted at interpreter exit whatever happened."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.held: dict[str, _Held] = {}

    def acquire(self, device: str, fstype: str, name: str) -> _Held:
        key = os.path.realpath(device)
        with self.lock:
            held = self.held.get(key)
            if held is not None:
                held.refs += 1
                return held
            point = _mount_read_only(device, fstype, name)
            held = _Held(point, device, 1)
            self.held[key] = held
            return held

    def release(self, held: _Held) -> None:
        with self.lock:
            held.refs -= 1
            if held.refs > 0:
                return
            self.held.pop(os.path.realpath(held.device), None)
            _unmount(held.point)

    def points(self) -> set[str]:
        with self.lock:
            return {os.path.realpath(h.point) for h in self.held.values()}

    def close_all(self) -> None:
        with self.lock:
            for held in list(self.held.values()):
                held.refs = 1
                self.release(held)


_REGISTRY = _Registry()
atexit.register(_REGISTRY.close_all)


def record_mount_commands(device: str, fstype: str, point: str) -> list[list[str]]:
    """Read-write mount commands for the disk that holds the backup — only when the person
    asked for the restore's progress record to be kept beside the backup (so that a
    restart of rescue media, whose own files are in memory, does not lose it)."""
    rw = f"rw,{SAFE_OPTIONS}"
    if fstype in ("ext2", "ext3", "ext4"):
        return [["mount", "-t", "ext4", "-o", rw, device, point]]
    if fstype == "ntfs":
        # ntfs-3g refuses a hibernated or unclean Windows volume for writing: then the
        # backup stays read-only, and the person is told.
        return [["mount", "-t", "ntfs-3g", "-o", rw, device, point]]
    if fstype in ("vfat", "msdos"):
        commands = [["mount", "-t", "vfat", "-o", rw, device, point]]
        if shutil.which("fusefat"):
            commands.append(["fusefat", "-o", f"rw+,{SAFE_OPTIONS},fsname={device}", device, point])
        return commands
    if fstype == "exfat":
        return [["mount", "-t", "exfat", "-o", rw, device, point]]
    raise FindError(
        f"restore-tui writes its record only on ext2/3/4, NTFS, FAT and exFAT, not {fstype}"
    )


def _mount_read_only(device: str, fstype: str, name: str) -> Path:
    return _mount(device, fstype, name, writable=False)


def _mount(device: str, fstype: str, name: str, *, writable: bool) -> Path:
    point = _runtime_dir(name)
    reasons: list[str] = []
    commands = record_mount_commands if writable else mount_commands
    try:
        for argv in commands(device, fstype, str(point)):
            try:
                result = _run(argv)
            except FileNotFoundError:
                reasons.append(f"{argv[0]} is not installed")
                continue
            except subprocess.TimeoutExpired:
                _unmount(point)
                point.mkdir(mode=0o700, exist_ok=True)
                reasons.append("mounting it took too long (a failing disk?)")
                continue
            if result.returncode == 0 and _is_mounted(point):
                read_only = bool(os.statvfs(point).f_flag & os.ST_RDONLY)
                if read_only == writable:
                    _unmount(point)
                    got = "read-only" if read_only else "writable"
                    raise FindError(f"the system mounted it {got}, so it was unmounted again")
                return point
            text = " ".join((result.stderr or result.stdout).split()) or f"exit {result.returncode}"
            reasons.append(text.removeprefix("mount: ").strip())
    except BaseException:
        _unmount(point)
        raise
    _unmount(point)
    how = "for writing" if writable else "read-only"
    raise FindError(f"it could not be mounted {how} ({'; '.join(reasons) or 'no way'})")


class ReadOnlyMount:
    """One filesystem mounted read-only under a private folder until ``close()``.

    Two holders of the same device share one mount; the last ``close()`` unmounts it
    and removes the folder. Raises FindError (with the reason) when it cannot be mounted.
    """

    def __init__(self, device: str, fstype: str, name: str = "") -> None:
        self._held: _Held | None = _REGISTRY.acquire(device, fstype, name or Path(device).name)
        self.point = self._held.point
        self.device = device

    def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            _REGISTRY.release(held)

    @property
    def closed(self) -> bool:
        return self._held is None

    def __enter__(self) -> ReadOnlyMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WritableMount:
    """The disk holding a backup, mounted for writing under a private folder until
    ``close()`` — only when the person asked for the restore's record beside the backup."""

    def __init__(self, device: str, fstype: str, name: str = "") -> None:
        if os.path.realpath(device) in _REGISTRY.held:
            raise FindError("it is open read-only for another use right now")
        self.point: Path | None = _mount(device, fstype, name or Path(device).name, writable=True)
        _WRITABLE.add(self.point)

    def close(self) -> None:
        point, self.point = self.point, None
        if point is not None:
            _WRITABLE.discard(point)
            _unmount(point)

    @property
    def closed(self) -> bool:
        return self.point is None


_WRITABLE: set[Path] = set()


def _unmount_writable() -> None:
    for point in list(_WRITABLE):
        _unmount(point)


atexit.register(_unmount_writable)

#: filesystems a backup's disk can be opened on for writing (record_mount_commands)
RECORD_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "ntfs", "vfat", "msdos", "exfat"})


class OpenedBackup:
    """A found backup opened for use: ``archive``, and ``close()`` when done with it.

    A backup on an unmounted partition stays mounted until ``close()``, which closes the
    archive first and then unmounts: read-only, or with ``writable`` (the person asked
    for the restore's record to be kept beside the backup) for writing. Errors leave
    nothing mounted.
    """

    def __init__(self, found: FoundBackup, *, writable: bool = False) -> None:
        self.found = found
        self.mount: ReadOnlyMount | WritableMount | None = None
        path = found.path
        if path is None:
            if found.device is None or found.filesystem is None:
                raise FindError(f"{found.name}: where it is stored is unknown")
            kind = WritableMount if writable else ReadOnlyMount
            self.mount = kind(
                found.device, found.filesystem, found.label or f"part{found.partition or 0}"
            )
            assert self.mount.point is not None
            path = self.mount.point / found.inner_path.lstrip("/")
        try:
            self.archive: Archive = open_archive(path)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        archive = getattr(self, "archive", None)
        if archive is not None:
            archive.close()
        if self.mount is not None:
            self.mount.close()

    @property
    def keeps_mount(self) -> bool:
        return self.mount is not None and not self.mount.closed

    def __enter__(self) -> OpenedBackup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_found(found: FoundBackup) -> tuple[Archive, Callable[[], None]]:
    """(archive, cleanup): call ``cleanup()`` when done; it closes the archive and unmounts
    what was mounted for it. Raises ArchiveError/OSError/FindError like opening a path."""
    opened = OpenedBackup(found)
    return opened.archive, opened.close


def live_mounts() -> set[str]:
    """Mount points this process holds now (for tests and the exit check)."""
    return _REGISTRY.points()


# ---------------------------------------------------------------------------
# Finding


def media_roots(mounts_file: str = "/proc/self/mounts") -> list[Path]:
    """Mount points of real media (a /dev source), where a backup disk would be mounted."""
    roots: list[Path] = []
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return [Path(p) for p in ("/media", "/mnt", "/run/media") if Path(p).is_dir()]
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("/dev/"):
            continue
        # /proc/mounts escapes spaces as \040.
        point = Path(parts[1].replace("\\040", " "))
        if point not in roots:
            roots.append(point)
    for extra in ("/media", "/mnt", "/run/media"):
        p = Path(extra)
        if p.is_dir() and p not in roots:
            roots.append(p)
    return roots


def find_backups(
    roots: Iterable[Path], *, depth: int = SCAN_DEPTH, max_entries: int = ROOTS_MAX_ENTRIES
) -> list[FoundBackup]:
    """Backups in the folders ``roots`` and up to ``depth`` folders below them, by path."""
    found: dict[Path, FoundBackup] = {}
    budget = _Budget(max_entries)
    for root in roots:
        root = Path(root)
        for path, kind, size in _backups_below(root, depth=depth, budget=budget, same_fs=False):
            if path not in found:
                found[path] = FoundBackup(
                    name=path.name,
                    kind=kind,
                    size=size,
                    inner_path="/" + str(path.relative_to(root)),
                    mounted_at=str(root),
                )
    return sorted(found.values(), key=lambda b: str(b.path))


@dataclass(frozen=True)
class _Filesystem:
    disk: ProbedDisk
    device: str
    partition: int | None
    fstype: str
    label: str | None


def _block_devno(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _filesystems(disk: ProbedDisk) -> tuple[list[_Filesystem], list[str]]:
    """The filesystems of a disk with their device nodes, and what could not be reached."""
    skipped: list[str] = []
    table = disk.table
    if table is None:
        if disk.table_problem:
            why = f"its partition table is damaged ({disk.table_problem})"
            return [], [f"{disk_words(disk)}: {why}"]
        info = probe_filesystem(disk.device, 0, disk.identity.size_bytes)
        if info.type:
            return [_Filesystem(disk, disk.device, None, info.type, info.label)], []
        return [], []
    name = Path(os.path.realpath(disk.device)).name
    nodes = {p.number: f"/dev/{p.name}" for p in sys_partitions(name)}
    found: list[_Filesystem] = []
    for p in table.partitions:
        if p.kind == "extended" or not p.filesystem or p.filesystem in NOT_FILES:
            continue
        node = nodes.get(p.number)
        if node is None or _block_devno(node) is None:
            skipped.append(
                f"{disk_words(disk)}, {place_words(p.number, p.label, p.filesystem)}: the "
                "system has no device for this partition"
            )
            continue
        found.append(_Filesystem(disk, node, p.number, p.filesystem, p.label))
    return found, skipped


def _excluded(disk: ProbedDisk, exclude: set[str], exclude_devnos: set[tuple[int, int]]) -> bool:
    if os.path.realpath(disk.device) in exclude:
        return True
    devno = _block_devno(disk.device)
    if devno is not None and devno in exclude_devnos:
        return True
    name = Path(os.path.realpath(disk.device)).name
    for p in sys_partitions(name):
        if f"/dev/{p.name}" in exclude or (p.devno is not None and p.devno in exclude_devnos):
            return True
    return False


def find(
    probe: Probe | None = None,
    *,
    roots: Iterable[Path] = (),
    exclude: Iterable[str] = (),
    depth: int = SCAN_DEPTH,
    max_entries: int = SCAN_MAX_ENTRIES,
    seconds: float = SCAN_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> Scan:
    """Backups on every disk of ``probe`` (looked inside read-only) and in ``roots``.

    Disks that are image files, or whose device is not a block device (a recording),
    are not looked inside. ``exclude``: device paths of disks never to look inside.
    ``progress`` is told each filesystem, in words, before it is looked inside.
    """
    excluded = {os.path.realpath(d) for d in exclude}
    excluded_devnos = {n for n in (_block_devno(d) for d in excluded) if n is not None}
    backups: list[FoundBackup] = []
    looked: list[str] = []
    skipped: list[str] = []
    places: list[Place] = []
    disks: list[ProbedDisk] = []
    if probe is not None:
        try:
            disks = probe.disks()
        except ProbeError as exc:
            skipped.append(f"the disks could not be listed ({exc})")
    ours = _REGISTRY.points()
    for disk in disks:
        if disk.identity.bus == "image" or _block_devno(disk.device) is None:
            continue
        if _excluded(disk, excluded, excluded_devnos):
            continue
        looked.append(disk_words(disk))
        filesystems, unreachable = _filesystems(disk)
        skipped.extend(unreachable)
        mounts = read_mounts()
        for fs in filesystems:
            devno = _block_devno(fs.device)
            real = os.path.realpath(fs.device)
            # FUSE and btrfs mounts report an anonymous device number: match the source too.
            where = next(
                (
                    m.mount_point
                    for m in mounts
                    if (m.devno == devno or os.path.realpath(m.source or "-") == real)
                    and os.path.realpath(m.mount_point) not in ours
                ),
                None,
            )
            words = f"{disk_words(disk)}, {place_words(fs.partition, fs.label, fs.fstype)}"
            places.append(Place(words, fs.device, fs.fstype, where, disk.removable, fs.label))
            if progress is not None:
                progress(words)
            try:
                backups.extend(_scan_filesystem(fs, where, depth, max_entries, seconds))
            except FindError as exc:
                skipped.append(f"{words}: {exc}")
    seen = {str(b.path) for b in backups if b.path is not None}
    folders = [str(r) for r in roots]
    for b in find_backups([Path(r) for r in folders], depth=depth):
        if b.path is not None and str(b.path) not in seen:
            backups.append(b)
            seen.add(str(b.path))
    return Scan(tuple(backups), tuple(looked), tuple(folders), tuple(skipped), tuple(places))


def _scan_filesystem(
    fs: _Filesystem, mounted_at: str | None, depth: int, max_entries: int, seconds: float
) -> list[FoundBackup]:
    mount: ReadOnlyMount | None = None
    if mounted_at is None:
        mount = ReadOnlyMount(fs.device, fs.fstype, fs.label or f"part{fs.partition or 0}")
    try:
        root = Path(mounted_at) if mounted_at is not None else mount.point  # type: ignore[union-attr]
        budget = _Budget(max_entries, seconds)
        return [
            FoundBackup(
                name=path.name,
                kind=kind,
                size=size,
                inner_path="/" + str(path.relative_to(root)),
                device=fs.device,
                mounted_at=mounted_at,
                filesystem=fs.fstype,
                disk=disk_words(fs.disk),
                disk_device=fs.disk.device,
                disk_headline=fs.disk.headline,
                partition=fs.partition,
                label=fs.label,
            )
            for path, kind, size in _backups_below(
                root, depth=depth, budget=budget, same_fs=True, fold_case=fs.fstype in FOLD_CASE
            )
        ]
    finally:
        if mount is not None:
            mount.close()


def nothing_found_text(
    scan: Scan, next_step: str = "Plug in the disk that holds the backup, or type its path below."
) -> str:
    """The sentences for "no backup found", naming what was looked at, then ``next_step``."""
    if scan.disks:
        n = len(scan.disks)
        what = f"Looked inside {n} disk{'s' if n != 1 else ''} ({'; '.join(scan.disks)})"
        if scan.folders:
            what += f" and in {', '.join(scan.folders)}"
        text = f"{what}; no backup found."
    elif scan.folders:
        text = f"No backup found in {', '.join(scan.folders)}."
    else:
        text = "No disks to look inside were found."
    if scan.skipped:
        text += " Could not look inside: " + "; ".join(scan.skipped) + "."
    return f"{text} {next_step}"
