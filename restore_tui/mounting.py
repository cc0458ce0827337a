"""Mount a backup read-only and take it down again, leaving nothing behind.

One place for it: `restore-tui mount`, `restore-tui files` and the wizard's
"Look inside" all call :func:`mount_backup` and :func:`unmount`. The stack, per
mount point:

    <runtime>/images/<n>.img    the FUSE server (restore_tui.imagefs), read-only
    /dev/loopN (read-only)      over <n>.img, for the kernel's ext2/3/4 driver
    MOUNTPOINT/<n>-<label>/     ext4 ro,noload | ntfs-3g ro,norecover | fusefat ro,
                                always nodev,nosuid,noexec; an unknown filesystem
                                as MOUNTPOINT/<n>-<label>/partition.img (a bind mount)

Every process, loop device and mount this code starts is written to
``<runtime>/state.json`` the moment it exists, so `umount` (even after a crash)
stops exactly those: processes by pid *and* start time, loop devices by the file
they are attached to. Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from archive import open_archive
from archive.base import Archive
from archive.errors import ArchiveError
from archive.view import NeedsConversion, open_view, readable_partitions
from layout.probe import read_mounts
from restore_tui.errors import UserError
from restore_tui.finding import RUNTIME_BASE, SAFE_OPTIONS
from restore_tui.imagefs import image_name

MOUNTS_DIR = RUNTIME_BASE / "mounts"
EXT_TYPES = ("ext2", "ext3", "ext4")
#: seconds to wait for the server or a filesystem helper to come up, or to go away
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

#: userspace drivers, kept in the foreground (no_detach, -f) so their pids are ours to
#: record. ntfs-3g: norecover, and being read-only it never replays NTFS's log nor
#: touches hiberfil.sys; fusefat is read-only unless told rw+.
FUSE_DRIVERS = {
    "ntfs": ["ntfs-3g", "-o", f"ro,norecover,{SAFE_OPTIONS},allow_other,no_detach"],
    "vfat": ["fusefat", "-f", "-o", f"ro,{SAFE_OPTIONS},allow_other,fsname=restore-tui"],
}
FUSE_DRIVERS["msdos"] = FUSE_DRIVERS["vfat"]

How = Literal["kernel", "fuse", "image"]


@dataclass
class Proc:
    """A process we started: the pid and its start time (so a reused pid is not ours)."""

    pid: int
    start: int


@dataclass
class PartitionMount:
    number: int
    folder: str
    filesystem: str | None = None
    how: How | None = None
    loop: str | None = None  # /dev/loopN while attached
    helper: Proc | None = None  # ntfs-3g or fusefat
    mounted: str | None = None  # the folder, while something is mounted on it
    note: str | None = None  # why it is shown as a partition image


@dataclass
class MountState:
    mountpoint: str
    archive: str
    runtime: str
    made_mountpoint: bool
    server: Proc | None = None
    partitions: list[PartitionMount] = field(default_factory=list)

    @property
    def images(self) -> Path:
        return Path(self.runtime) / "images"

    @property
    def damage_file(self) -> Path:
        return Path(self.runtime) / "damage.json"

    @property
    def log(self) -> Path:
        return Path(self.runtime) / "server.log"

    def save(self) -> None:
        path = Path(self.runtime) / "state.json"
        tmp = path.with_name("state.json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, runtime: Path) -> MountState:
        raw: dict[str, Any] = json.loads((runtime / "state.json").read_text())
        server = raw.pop("server")
        parts = raw.pop("partitions")
        state = cls(**raw, server=Proc(**server) if server else None)
        for p in parts:
            helper = p.pop("helper")
            state.partitions.append(PartitionMount(**p, helper=Proc(**helper) if helper else None))
        return state


class MountFailed(Exception):
    """One partition's filesystem could not be mounted; it is shown as an image instead."""


# ----------------------------------------------------------------------------- processes

#: children of this process, so they are reaped (no zombies in the wizard or in tests)
_children: dict[int, subprocess.Popen[bytes]] = {}


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks, or None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _spawn(argv: list[str], log: Path | None, **kwargs: Any) -> Proc:
    out: Any = log.open("ab") if log is not None else None
    try:
        # Own session: Ctrl+C in the terminal reaches us, and we take things down in order.
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, cwd="/", **kwargs,
        )  # fmt: skip
    finally:
        if out is not None:
            out.close()
    _children[popen.pid] = popen
    return Proc(popen.pid, _start_time(popen.pid) or 0)


def alive(proc: Proc) -> bool:
    popen = _children.get(proc.pid)
    if popen is not None and popen.poll() is not None:
        return False
    return _start_time(proc.pid) == proc.start


def _stop(proc: Proc, timeout: float = STOP_TIMEOUT) -> None:
    """Wait for our process to end by itself, then SIGTERM it, then SIGKILL: only if ours."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(proc):
            break
    popen = _children.pop(proc.pid, None)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=START_TIMEOUT
    )


def _said(result: subprocess.CompletedProcess[str]) -> str:
    text = " ".join((result.stderr or result.stdout or "").split())
    return text or f"exit code {result.returncode}"


def is_mounted(path: str | Path) -> bool:
    target = os.path.realpath(path)
    return any(m.mount_point == target for m in read_mounts())


def _wait_for(check: Any, proc: Proc | None, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if proc is not None and not alive(proc):
            said = _tail(log) if log is not None else ""
            raise MountFailed(f"{what} stopped{': ' + said if said else ''}")
        if time.monotonic() > deadline:
            raise MountFailed(f"{what} did not start within {START_TIMEOUT:.0f} seconds")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " ".join(text[-lines:])


# ----------------------------------------------------------------------------- where


def runtime_for(mountpoint: Path) -> Path:
    """The private folder that holds one mount point's state, found again from its path."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:16]
    return MOUNTS_DIR / key


def find_state(mountpoint: str | Path) -> MountState | None:
    runtime = runtime_for(Path(mountpoint))
    try:
        return MountState.load(runtime)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"restore-tui's record of what it mounted at {mountpoint} ({runtime}/state.json) "
            f"cannot be read ({exc}); unmount what is there with `umount` and remove {runtime}"
        ) from None


def state_holding(path: Path) -> MountState | None:
    """The restore-tui mount that ``path`` lies inside, if any (for damage messages)."""
    real = os.path.realpath(path)
    for runtime in sorted(MOUNTS_DIR.glob("*")) if MOUNTS_DIR.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            state = MountState.load(runtime)
            if real == state.mountpoint or real.startswith(state.mountpoint.rstrip("/") + "/"):
                return state
    return None


def damage_seen(state: MountState) -> list[str]:
    """What the server found damaged so far, one sentence per place."""
    try:
        entries = json.loads(state.damage_file.read_text())
    except (OSError, ValueError):
        return []
    return [str(e.get("message")) for e in entries if isinstance(e, dict)]


def folder_name(archive: Archive, number: int) -> str:
    """``<number>-<label or role>``: "2-Windows", "1-System Reserved", "3-data"."""
    entry = archive.manifest.table.partition(number)
    name = (entry.label or entry.gpt_name or "").strip()
    if not name:
        name = str(archive.manifest.image(number).role)
    # A label is untrusted input: no path separators, no hidden or relative names.
    safe = "".join("_" if c in "/\\\0" or ord(c) < 32 else c for c in name).strip(" .")
    return f"{number}-{safe[:80] or 'partition'}"


def convert_command(path: str | Path) -> str:
    import shlex

    src = Path(path)
    out = src.with_name(src.name.removesuffix(".img") + ".rtui")
    return f"restore-tui convert {shlex.quote(str(src))} {shlex.quote(str(out))}"


# ----------------------------------------------------------------------------- mounting


def check_can_mount() -> None:
    if os.geteuid() != 0:
        raise UserError(
            "looking inside a backup needs root (it uses loop devices and the system's "
            "filesystem drivers); run the command again with sudo"
        )
    if not Path("/dev/fuse").exists():
        raise UserError(
            "this system has no FUSE device (/dev/fuse); load it with `modprobe fuse` and try again"
        )


Wanted = tuple[int, str, str | None]  # number, folder name, filesystem as the backup recorded


def _partitions(path: str | Path, partition: int | None) -> tuple[list[Wanted], str]:
    """What to mount, and the archive's absolute path."""
    try:
        archive = open_archive(path)
    except ArchiveError as exc:
        raise UserError(str(exc)) from None
    with archive:
        numbers = readable_partitions(archive)
        if partition is not None:
            if partition not in numbers:
                listed = ", ".join(map(str, numbers)) or "none"
                raise UserError(
                    f"partition {partition} is not stored in this backup; the ones that are: "
                    f"{listed} (see `restore-tui inspect {path}`)"
                )
            numbers = [partition]
        if not numbers:
            raise UserError(f"{path} stores no partition that could be looked inside")
        try:
            open_view(archive, numbers[0]).close()
        except NeedsConversion as exc:
            raise UserError(
                f"{exc}. Convert it once into a restore-tui backup, which can: "
                f"{convert_command(path)}"
            ) from None
        table = archive.manifest.table
        found = [(n, folder_name(archive, n), table.partition(n).filesystem) for n in numbers]
        return found, str(Path(path).resolve())


def _prepare_mountpoint(mountpoint: Path) -> bool:
    """Check (or create) the mount point; True when it was created here."""
    if mountpoint.exists():
        if not mountpoint.is_dir():
            raise UserError(f"{mountpoint} is not a folder; give an empty folder to mount into")
        if is_mounted(mountpoint):
            raise UserError(f"something is already mounted at {mountpoint}; choose another folder")
        if any(mountpoint.iterdir()):
            raise UserError(f"{mountpoint} is not empty; give an empty folder to mount into")
        return False
    if not mountpoint.parent.is_dir():
        raise UserError(f"the folder {mountpoint.parent} does not exist; create it first")
    mountpoint.mkdir(mode=0o755)
    return True


def mount_backup(
    archive: str | Path,
    mountpoint: str | Path,
    partition: int | None = None,
    *,
    show_messages: bool = False,
) -> MountState:
    """Mount the backup's partitions (or one) read-only under ``mountpoint``.

    Returns when every folder is there; the server and helpers run on in the
    background until :func:`unmount`. ``show_messages``: the server's messages
    (damaged data) go to this process's stderr instead of only to its log.
    On any failure everything started so far is taken down again.
    """
    check_can_mount()
    wanted, archive_path = _partitions(archive, partition)
    point = Path(mountpoint).absolute()
    old = find_state(point)
    if old is not None:
        if old.server is not None and alive(old.server):
            raise UserError(
                f"a backup is already mounted at {point}; run `restore-tui umount {point}` first"
            )
        unmount_state(old)  # left over from a crash: clean it up first
    made = _prepare_mountpoint(point)
    runtime = runtime_for(point)
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = MountState(str(point.resolve()), archive_path, str(runtime), made)
    state.save()
    try:
        _start_server(state, [n for n, _, _ in wanted], show_messages)
        for number, name, recorded in wanted:
            _mount_partition(state, number, name, recorded)
    except BaseException:
        unmount_state(state)
        raise
    return state


def _start_server(state: MountState, numbers: list[int], show_messages: bool) -> None:
    state.images.mkdir(mode=0o700, exist_ok=True)
    read_end, write_end = os.pipe()
    argv = [
        sys.executable, "-m", "restore_tui.imagefs", state.archive, str(state.images),
        "--partitions", ",".join(map(str, numbers)), "--ready-fd", str(write_end),
        "--damage-file", str(state.damage_file),
    ]  # fmt: skip
    try:
        if show_messages:
            # The server's own stderr is ours: damage messages appear on the terminal.
            state.server = _spawn(argv, None, pass_fds=(write_end,))
        else:
            state.server = _spawn(argv, state.log, pass_fds=(write_end,))
        state.save()
    finally:
        os.close(write_end)
    try:
        said = _read_ready(read_end)
    finally:
        os.close(read_end)
    if said.strip() != "ready":
        said = said.strip().removeprefix("error: ") or _tail(state.log)
        raise UserError(f"the backup could not be served: {said or 'the server stopped'}")


def _read_ready(fd: int) -> str:
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            piece = os.read(fd, 4096)
            if not piece:
                break
            data += piece
    return data.decode(errors="replace")


def blkid_type(image: Path) -> str | None:
    """The filesystem in the image, as blkid reads it from the backup's own bytes."""
    result = _run(["blkid", "-p", "-o", "value", "-s", "TYPE", str(image)])
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _mount_partition(state: MountState, number: int, name: str, recorded: str | None) -> None:
    folder = Path(state.mountpoint) / name
    folder.mkdir(mode=0o755)
    part = PartitionMount(number, str(folder))
    state.partitions.append(part)
    state.save()
    image = state.images / image_name(number)
    # What blkid found when the backup was made; asked again only when that is unknown
    # (probing reads many places, and a damaged one must not hide a whole filesystem).
    part.filesystem = recorded or blkid_type(image)
    try:
        if part.filesystem in EXT_TYPES:
            _mount_ext(state, part, image)
        elif part.filesystem in FUSE_DRIVERS:
            _mount_fuse(state, part, [*FUSE_DRIVERS[part.filesystem], str(image), str(folder)])
        else:
            part.note = f"restore-tui does not read {part.filesystem or 'this'} filesystem"
    except MountFailed as exc:
        part.note = f"its {part.filesystem} filesystem could not be mounted ({exc})"
        _undo_partition(part)
        folder.mkdir(mode=0o755, exist_ok=True)
    if part.mounted is None:
        _bind_image(state, part)


def _mount_ext(state: MountState, part: PartitionMount, image: Path) -> None:
    result = _run(["losetup", "-f", "--show", "-r", str(image)])
    if result.returncode != 0:
        raise MountFailed(f"no read-only loop device: {_said(result)}")
    part.loop = result.stdout.strip()
    state.save()
    # noload: the journal is not replayed; the backup stays exactly as it was saved.
    options = f"ro,noload,{SAFE_OPTIONS}"
    result = _run(["mount", "-t", "ext4", "-o", options, part.loop, part.folder])
    if result.returncode != 0:
        raise MountFailed(_said(result).removeprefix("mount: "))
    part.how, part.mounted = "kernel", part.folder
    state.save()


def _mount_fuse(state: MountState, part: PartitionMount, argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise MountFailed(f"{argv[0]} is not installed")
    log = Path(state.runtime) / f"{part.number}.log"
    part.helper = _spawn(argv, log)
    state.save()
    _wait_for(lambda: is_mounted(part.folder), part.helper, argv[0], log)
    part.how, part.mounted = "fuse", part.folder
    state.save()


def _bind_image(state: MountState, part: PartitionMount) -> None:
    """The server's read-only folder holding the partition as ``partition.img``, bound here."""
    source = state.images / str(part.number)
    result = _run(["mount", "--bind", "-o", f"ro,{SAFE_OPTIONS}", str(source), part.folder])
    if result.returncode != 0:
        raise UserError(f"partition {part.number} could not be shown as an image: {_said(result)}")
    part.how, part.mounted = "image", part.folder
    state.save()


# ----------------------------------------------------------------------------- unmounting


def unmount(mountpoint: str | Path) -> MountState:
    """Take down what :func:`mount_backup` put at ``mountpoint``; UserError if busy or unknown."""
    state = find_state(mountpoint)
    if state is None:
        raise UserError(
            f"restore-tui has nothing mounted at {mountpoint}; "
            "give the folder that `restore-tui mount` was given"
        )
    unmount_state(state)
    return state


def unmount_state(state: MountState) -> None:
    """Partitions last-first, then the server, then the runtime folder; saved as it goes."""
    for part in reversed(list(state.partitions)):
        _undo_partition(part)
        with contextlib.suppress(OSError):
            Path(part.folder).rmdir()
        state.partitions.remove(part)
        state.save()
    _stop_server(state)
    shutil.rmtree(state.runtime, ignore_errors=True)
    if state.made_mountpoint:
        with contextlib.suppress(OSError):
            Path(state.mountpoint).rmdir()


def _undo_partition(part: PartitionMount) -> None:
    if is_mounted(part.folder):
        _umount(part.folder)
    part.mounted = None
    if part.helper is not None:
        _stop(part.helper)  # a FUSE helper ends by itself once unmounted
        part.helper = None
    if part.loop is not None:
        _detach(part.loop)
        part.loop = None


def _umount(folder: str) -> None:
    # A few tries over ~3 s: udev or a file manager may hold it for a moment.
    for attempt in range(20):
        result = _run(["umount", folder])
        if result.returncode == 0 or not is_mounted(folder):
            return
        time.sleep(0.1 if attempt < 10 else 0.2)
    raise UserError(
        f"{folder} is still in use ({_said(result).removeprefix('umount: ')}): close the "
        "programs and terminal windows that use files in it, then run the same command again"
    )


def _backing_file(loop: str) -> str | None:
    try:
        return Path(f"/sys/block/{Path(loop).name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def _detach(loop: str) -> None:
    """Detach our loop device and wait until it lets go of the image (udev may hold it)."""
    ours = _backing_file(loop)
    _run(["losetup", "-d", loop])
    deadline = time.monotonic() + STOP_TIMEOUT
    # Another test or program may reuse the name at once: it is free when it no longer
    # shows *our* file.
    while ours is not None and _backing_file(loop) == ours and time.monotonic() < deadline:
        time.sleep(0.05)


def _stop_server(state: MountState) -> None:
    if is_mounted(state.images):
        result = _run(["fusermount3", "-u", str(state.images)])
        if result.returncode != 0 and is_mounted(state.images):
            _run(["umount", str(state.images)])
    if state.server is not None:
        _stop(state.server)  # it ends by itself once its folder is unmounted
        state.server = None
        state.save()
