"""Look inside a backup and copy files out: the small API the CLI and the wizard share.

    with look_inside("/media/usb/pc.rtui", 2) as root:   # read-only Path
        for entry in list_folder(root / "Users" / "Mike"):
            print(entry.name, entry.kind, entry.size, entry.modified)
        copy_out(root / "Users/Mike/Documents", Path("/media/usb2"), progress)

The mount is private (a folder under /run/restore-tui) and is taken down when
the ``with`` block ends, whatever happens inside it. Links inside the backup are
never followed (a link to /etc/passwd in a backup is not this machine's file):
they are listed and copied as links.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from restore_tui.errors import UserError
from restore_tui.mounting import (
    RUNTIME_BASE,
    check_can_mount,
    damage_seen,
    mount_backup,
    state_holding,
    unmount,
)

#: progress(done_bytes, total_bytes), as everywhere in restore-tui
Progress = Callable[[int, int], None]
Kind = Literal["folder", "file", "link", "other"]
BLOCK = 1024 * 1024
_ZERO_BLOCK = bytes(BLOCK)


@contextlib.contextmanager
def look_inside(archive: str | Path, partition: int | None = None) -> Iterator[Path]:
    """Mount the backup read-only in a private folder for the duration of the block.

    With ``partition``: its own files' root (for an unknown filesystem, a folder
    holding ``partition.img``). Without: a folder with one ``<n>-<label>``
    folder per partition, as `restore-tui mount` shows them.
    Raises UserError (not root, a Clonezilla folder that needs converting, ...).
    """
    check_can_mount()
    looks = RUNTIME_BASE / "looks"
    looks.mkdir(mode=0o700, parents=True, exist_ok=True)
    where = Path(tempfile.mkdtemp(prefix="look-", dir=looks))
    try:
        where.rmdir()  # mount_backup creates it, and so removes it again when done
        state = mount_backup(archive, where, partition)
    except BaseException:
        with contextlib.suppress(OSError):
            where.rmdir()
        raise
    try:
        yield Path(state.partitions[0].folder) if partition is not None else where
    finally:
        unmount(where)


@dataclass(frozen=True)
class Entry:
    """One row of a folder listing."""

    name: str
    kind: Kind
    size: int  # bytes; for a link the length of what it points to
    modified: datetime
    target: str | None = None  # what a link points to

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.kind,
            "size": self.size,
            "modified": self.modified.isoformat(),
            **({"target": self.target} if self.target is not None else {}),
        }


def entry_of(path: Path) -> Entry:
    st = path.lstat()
    kind: Kind = "other"
    target = None
    if stat.S_ISDIR(st.st_mode):
        kind = "folder"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISLNK(st.st_mode):
        kind, target = "link", os.readlink(path)
    modified = datetime.fromtimestamp(st.st_mtime, tz=UTC)
    return Entry(path.name, kind, st.st_size if kind != "folder" else 0, modified, target)


def list_folder(folder: Path) -> list[Entry]:
    """The folder's entries, folders first, then by name (case folded, as people read)."""
    with os.scandir(folder) as it:
        entries = [entry_of(Path(e.path)) for e in it]
    return sorted(entries, key=lambda e: (e.kind != "folder", e.name.casefold(), e.name))


def resolve(root: Path, wanted: str) -> Path:
    """``wanted`` ("Users/Mike", "Users\\Mike", "/etc") inside ``root``, links not followed.

    A name that differs only in case is found too (FAT and NTFS do not care about
    case, and neither does a person typing it). UserError when it is not there.
    """
    parts = wanted.replace("\\", "/").split("/") if "/" not in wanted else wanted.split("/")
    here = root
    for i, part in enumerate(p for p in parts if p not in ("", ".")):
        if part == "..":
            raise UserError(f"'..' is not allowed in {wanted!r}: give a path inside the backup")
        if here.is_symlink():
            raise UserError(
                f"{here.relative_to(root)} is a link in the backup (to {os.readlink(here)}); "
                "links are not followed: give the path it points to"
            )
        here = _child(root, here, part, wanted, first=i == 0)
    return here


def _child(root: Path, folder: Path, name: str, wanted: str, *, first: bool) -> Path:
    candidate = folder / name
    if os.path.lexists(candidate):
        return candidate
    if not folder.is_dir() or folder.is_symlink():
        raise UserError(f"{folder.relative_to(root)} is not a folder, so it has no {name!r}")
    names = os.listdir(folder)
    matches = [n for n in names if n.casefold() == name.casefold()]
    if first and not matches:  # the top level: "2" names the folder "2-Windows"
        matches = [n for n in names if n.split("-", 1)[0] == name]
    if len(matches) == 1:
        return folder / matches[0]
    shown = str(folder.relative_to(root)) if folder != root else "the top"
    raise UserError(f"there is no {wanted!r} in the backup ({name!r} is not in {shown})")


# ----------------------------------------------------------------------------- copying


@dataclass
class CopyResult:
    path: Path  # what was written: the copied file or folder
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # devices, sockets: not copied


def total_bytes(src: Path) -> int:
    """Bytes of regular files under ``src`` (links not followed): the copy's 100 %."""
    if not src.is_dir() or src.is_symlink():
        return src.lstat().st_size if src.is_file() and not src.is_symlink() else 0
    total = 0
    for folder, _dirs, files in os.walk(src):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def copy_out(src: Path, dest: Path, progress: Progress | None = None) -> CopyResult:
    """Copy a file or folder out of a mounted backup to ``dest``.

    ``dest`` an existing folder: the copy goes inside it under its own name;
    otherwise ``dest`` is the new name. Never overwrites. The copy is written
    under a ``.partial`` name and renamed when complete, so an interrupted or
    failed copy never looks finished; a damaged place in the backup is named
    (partition and offset) in the UserError.
    """
    target = dest / src.name if dest.is_dir() else dest
    if os.path.lexists(target):
        raise UserError(f"{target} already exists; choose another place or remove it first")
    if not target.parent.is_dir():
        raise UserError(f"the folder {target.parent} does not exist; create it first")
    partial = target.with_name(f".{target.name}.partial")
    if os.path.lexists(partial):
        raise UserError(f"{partial} is in the way (left by an earlier copy?); remove it first")
    result = CopyResult(target)
    total = total_bytes(src)
    if progress is not None:
        progress(0, total)
    try:
        _copy_any(src, partial, result, total, progress)
        os.rename(partial, target)
    except BaseException as exc:
        _remove(partial)
        if isinstance(exc, OSError):
            raise UserError(_copy_failed(src, exc)) from None
        raise
    return result


def _copy_any(
    src: Path, dst: Path, result: CopyResult, total: int, progress: Progress | None
) -> None:
    st = src.lstat()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISDIR(st.st_mode):
        dst.mkdir(mode=0o700)
        for child in sorted(os.listdir(src)):
            _copy_any(src / child, dst / child, result, total, progress)
        os.chmod(dst, (stat.S_IMODE(st.st_mode) & ~_umask() & 0o777) | 0o700)
    elif stat.S_ISREG(st.st_mode):
        _copy_file(src, dst, result, total, progress)
        # NTFS and FAT show every file as 0777: the umask keeps copies from being executable.
        os.chmod(dst, stat.S_IMODE(st.st_mode) & ~_umask() & 0o777)
    else:
        result.skipped.append(str(src))
        return
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_file(
    src: Path, dst: Path, result: CopyResult, total: int, progress: Progress | None
) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(BLOCK):
            # Zero blocks become holes: a sparse file in the backup stays sparse.
            if block == _ZERO_BLOCK[: len(block)]:
                fout.seek(len(block), os.SEEK_CUR)
            else:
                fout.write(block)
            result.bytes += len(block)
            if progress is not None:
                progress(result.bytes, total)
        fout.truncate()
    result.files += 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _copy_failed(src: Path, exc: OSError) -> str:
    where = exc.filename or src
    if exc.errno == errno.EIO:
        state = state_holding(src)
        damage = damage_seen(state) if state is not None else []
        if damage:
            return (
                f"could not copy {where}: the backup is damaged where its data is stored "
                f"({'; '.join(damage)}). Nothing half-copied was left; other files can still "
                "be copied. For this one, use another copy of the backup"
            )
        return f"could not copy {where}: reading it failed (input/output error)"
    return f"could not copy {where}: {exc.strerror or exc}"
