"""The rescue image (rescue/build.sh), booted in QEMU under software emulation.

The image is built once per test session (rescue/build.sh caches it outside the clone
by a hash of its inputs, so an unchanged tree only copies it). Then, with virtual disks
that carry serial numbers — a backup disk (GPT, one ext4 partition holding a native
backup and a Clonezilla folder, not mounted) and blank targets:

* an unattended boot (``restore_tui.run=``, kernel and initramfs taken from the ISO)
  lists the backups, restores both onto the targets by their serials and powers off;
  the targets' bytes are compared with restores of the same backups done on the host;
* the ISO boots through its own boot loader with SeaBIOS and with UEFI (OVMF), and the
  serial console shows the wizard's first step listing the backup it found on the
  unmounted partition, which is left unchanged.

KVM is not used: ``-enable-kvm`` hangs on these machines, TCG does not. Every QEMU is
the test's own process, killed in ``finally``. No loop device is used: the disks are
image files, built with sfdisk and mke2fs at an offset.

The kernel command line parser the image uses is tested here too (no root needed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from clonezilla_fixtures import MISSING_TOOLS, FsSpec, build_disk_and_image

from archive.backup import backup
from restore_tui import sample

REPO = Path(__file__).resolve().parent.parent
RESCUE = REPO / "rescue"
CACHE = Path(os.environ.get("RESTORE_TUI_CACHE", "/var/cache/restore-tui"))
MIB = 1024 * 1024
SOURCE_MIB = 64
BACKUP_PART_MIB = 96
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
)
NATIVE_NAME = "windows-pc.rtui"
CLONEZILLA_NAME = "2024-05-01-12-img-laptop"
# Three boots side by side under TCG take about five minutes; this only stops a hung boot
# from hanging the suite.
BOOT_TIMEOUT = 720


def _load_cmdline_module() -> ModuleType:
    path = RESCUE / "overlay/usr/local/lib/restore-tui-rescue/kernel_cmdline.py"
    spec = importlib.util.spec_from_file_location("kernel_cmdline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kernel_cmdline = _load_cmdline_module()


# -- the kernel command line, split as the kernel splits it --------------------------------


def test_cmdline_value_with_spaces_and_shell_quotes() -> None:
    line = (
        'BOOT_IMAGE=/live/vmlinuz boot=live restore_tui.run="mount -o ro /dev/vda1 /mnt && '
        "echo 'a  b' | tr a A\" quiet\n"
    )
    assert kernel_cmdline.value(line, "restore_tui.run") == (
        "mount -o ro /dev/vda1 /mnt && echo 'a  b' | tr a A"
    )
    assert kernel_cmdline.value(line, "boot") == "live"
    assert kernel_cmdline.value(line, "quiet") is None  # a bare word has no value
    assert kernel_cmdline.value(line, "restore_tui") is None


def test_cmdline_inner_quotes_and_quoted_parameters() -> None:
    # The kernel toggles quoting at every '"' and drops only the pair around the value:
    # the inner quotes stay, and the space inside them does not end the value.
    line = '"foo=bar baz" restore_tui.run="echo "ab" c" empty= "w x" z x="a "b'
    assert kernel_cmdline.split(line) == [
        ("foo", "bar baz"),
        ("restore_tui.run", 'echo "ab" c'),
        ("empty", ""),
        ("w x", None),
        ("z", None),
        ("x", 'a "b'),  # only a closing quote at the very end is dropped
    ]


def test_cmdline_last_one_wins_and_unquoted_value() -> None:
    line = "restore_tui.run=true x=1 restore_tui.run=false"
    assert kernel_cmdline.value(line, "restore_tui.run") == "false"
    assert kernel_cmdline.value("restore_tui.runner=1", "restore_tui.run") is None


def test_cmdline_script_exit_codes() -> None:
    script = RESCUE / "overlay/usr/local/lib/restore-tui-rescue/kernel_cmdline.py"
    found = subprocess.run(
        [sys.executable, script, "restore_tui.run"],
        input='quiet restore_tui.run="echo hi; exit 3"\n',
        capture_output=True,
        text=True,
    )
    assert (found.returncode, found.stdout) == (0, "echo hi; exit 3\n")
    absent = subprocess.run(
        [sys.executable, script, "restore_tui.run"], input=b"quiet\n", capture_output=True
    )
    assert absent.returncode == 1


# -- booting the image ----------------------------------------------------------------------


def _ovmf() -> tuple[str, str] | None:
    for code, varstore in OVMF_PAIRS:
        if os.path.exists(code) and os.path.exists(varstore):
            return code, varstore
    return None


def _boot_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "building the rescue image needs root (mmdebstrap, chroot, mounts)"
    tools = ("qemu-system-x86_64", "mmdebstrap", "xorriso", "grub-mkrescue", "mksquashfs")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (./run.sh test installs them as root)"
    if _ovmf() is None:
        return "no OVMF firmware in /usr/share/OVMF (Debian's ovmf package)"
    if MISSING_TOOLS:
        return f"missing tools for the sample backups: {MISSING_TOOLS}"
    return None


BOOT_SKIP = _boot_skip_reason()
needs_image = pytest.mark.skipif(BOOT_SKIP is not None, reason=BOOT_SKIP or "")

ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: cursor moves, colours, modes
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: titles
    r"|\x1b[()][0-9A-Za-z]"  # character set selection
    r"|\x1b[@-Z\\-_=>]"  # other two-byte escapes
)


def plain(raw: bytes) -> str:
    """Serial console output as text: escape sequences and carriage returns removed."""
    return ANSI.sub("", raw.decode("utf-8", "replace")).replace("\r", "")


@dataclass
class Disk:
    """A virtual disk: its image file and the serial number QEMU gives it."""

    path: Path
    serial: str


@dataclass
class Boot:
    """What one QEMU run left: the serial console's text, how long it ran, its exit."""

    text: str
    seconds: float
    returncode: int | None


class Machine:
    """One QEMU guest under TCG with its serial console in a file; always the test's own
    process, killed by :meth:`stop` (the tests call it in ``finally``)."""

    def __init__(
        self,
        name: str,
        work: Path,
        disks: list[Disk],
        *,
        iso: Path,
        kernel: tuple[Path, Path, str] | None = None,
        uefi: bool = False,
    ) -> None:
        self.name = name
        self.log = work / f"serial-{name}.log"
        self.cmd = [
            "qemu-system-x86_64",
            "-accel", "tcg",
            "-machine", "pc",
            "-m", "1024",
            "-smp", "1",  # three guests share the host's cores
            "-display", "none",
            "-monitor", "none",
            "-serial", f"file:{self.log}",
            "-nic", "none",
            "-no-reboot",
            "-cdrom", str(iso),
            "-boot", "d",
        ]  # fmt: skip
        for i, disk in enumerate(disks):
            self.cmd += [
                "-drive", f"file={disk.path},if=none,id=d{i},format=raw",
                "-device", f"virtio-blk-pci,drive=d{i},serial={disk.serial}",
            ]  # fmt: skip
        if kernel is not None:
            vmlinuz, initrd, append = kernel
            self.cmd += ["-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append]
        if uefi:
            ovmf = _ovmf()
            assert ovmf is not None
            varstore = work / f"OVMF_VARS-{name}.fd"
            shutil.copyfile(ovmf[1], varstore)
            self.cmd += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf[0]}",
                "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
            ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return plain(self.log.read_bytes()) if self.log.exists() else ""

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def qemu_said(self) -> str:
        if self.proc is None or self.proc.stdout is None or self.proc.poll() is None:
            return ""
        return self.proc.stdout.read().decode(errors="replace")[-2000:]


def boot_all(
    machines: list[Machine],
    until: dict[str, Callable[[str], bool]],
    *,
    timeout: float,
    wait_exit: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Boot]:
    """Start the machines together and wait until ``until[name](serial text)`` holds for
    each — and, for the names in ``wait_exit``, until it has powered off — or fail at
    ``timeout``. Every machine is killed before this returns."""
    boots: dict[str, Boot] = {}
    try:
        for machine in machines:
            machine.start()
        start = time.monotonic()
        while len(boots) < len(machines):
            for machine in machines:
                if machine.name in boots:
                    continue
                text = machine.text()
                done = until[machine.name](text)
                if done and (machine.name not in wait_exit or machine.exited()):
                    returncode = machine.proc.poll() if machine.proc else None
                    boots[machine.name] = Boot(text, time.monotonic() - machine.started, returncode)
                    machine.stop()
                elif machine.exited() and not done:
                    pytest.fail(
                        f"{machine.name}: QEMU ended before the expected output.\n"
                        f"QEMU said: {machine.qemu_said()}\n"
                        f"serial console, last part:\n{text[-6000:]}"
                    )
            if time.monotonic() - start > timeout:
                late = [m for m in machines if m.name not in boots]
                pytest.fail(
                    "\n\n".join(
                        f"{m.name}: no expected output within {timeout:.0f} s; serial "
                        f"console, last part:\n{m.text()[-6000:]}"
                        for m in late
                    )
                )
            time.sleep(1)
    finally:
        for machine in machines:
            machine.stop()
    return boots


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def rescue_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image, built (or taken from the cache) once for this module."""
    if BOOT_SKIP:
        pytest.skip(BOOT_SKIP)
    out = tmp_path_factory.mktemp("iso") / "restore-tui-rescue.iso"
    start = time.monotonic()
    built = subprocess.run(
        ["bash", str(RESCUE / "build.sh"), str(out)], capture_output=True, text=True
    )
    assert built.returncode == 0, f"rescue/build.sh failed:\n{built.stdout}\n{built.stderr}"
    print(f"\nrescue image: {time.monotonic() - start:.0f} s, {out.stat().st_size // MIB} MiB")
    assert out.stat().st_size < 400 * MIB
    return out


@dataclass
class Backups:
    """The backup disk, and what a restore of each backup on the host gave."""

    work: Path
    backup_disk: Disk
    native_reference: Path
    clonezilla_reference: Path


def _blank(path: Path) -> Path:
    # A used disk's leftovers (seeded, so the same in the VM and on the host).
    return sample.build_blank(path, SOURCE_MIB + 8, seed=21)


def _host_restore(archive: Path, target: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "restore_tui", "restore", str(archive),
         "--target", str(target), "--yes"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Backups:
    """A GPT backup disk with one ext4 partition holding ``backups/windows-pc.rtui`` (a
    native backup of a Windows-like disk) and a Clonezilla folder of a GPT disk."""
    if BOOT_SKIP:
        pytest.skip(BOOT_SKIP)
    work = tmp_path_factory.mktemp("rescue-disks")
    content = work / "content" / "backups"
    content.mkdir(parents=True)
    source = sample.build_windows_mbr(work / "windows-pc-disk.img", SOURCE_MIB)
    backup(str(source.path), content / NATIVE_NAME)
    (work / "cz").mkdir()
    _disk, clonezilla = build_disk_and_image(
        work / "cz",
        scheme="gpt",
        disk_name="nvme0n1",
        specs=[FsSpec(1, "vfat", 16, "EFI"), FsSpec(2, "ext4", 24, "root", comp="gz")],
        disk_mib=SOURCE_MIB,
        seed=5,
    )
    shutil.copytree(clonezilla, content / CLONEZILLA_NAME)

    # The backup disk: GPT, the partition from 1 MiB, ext4 made in place by mke2fs at
    # that offset (no loop device), clean and never mounted.
    disk = work / "backup-disk.img"
    with disk.open("wb") as f:
        f.truncate((BACKUP_PART_MIB + 2) * MIB)
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)],
        input=f"label: gpt\nstart=2048, size={BACKUP_PART_MIB * 2048}, name=backups\n",
        text=True,
        check=True,
    )
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "BACKUPS", "-E", f"offset={MIB}",
         "-d", str(content.parent), str(disk), f"{BACKUP_PART_MIB * 1024}k"],
        check=True,
    )  # fmt: skip

    # The same restores on the host, onto the same leftovers, from copies of the backups
    # (a restore keeps its record beside the backup; the disk's copies stay as made).
    host = work / "host"
    shutil.copytree(content, host)
    native_reference = _blank(work / "native-reference.img")
    _host_restore(host / NATIVE_NAME, native_reference)
    clonezilla_reference = _blank(work / "clonezilla-reference.img")
    _host_restore(host / CLONEZILLA_NAME, clonezilla_reference)
    return Backups(work, Disk(disk, "BACKUP01"), native_reference, clonezilla_reference)


@pytest.fixture(scope="module")
def kernel_files(rescue_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The ISO's own kernel and initramfs, for booting with -kernel and an -append."""
    out = tmp_path_factory.mktemp("kernel")
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(rescue_iso),
         "-extract", "/live/vmlinuz", str(out / "vmlinuz"),
         "-extract", "/live/initrd.img", str(out / "initrd.img")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out / "vmlinuz", out / "initrd.img"


UNATTENDED_COMMAND = (
    "restore-tui backups"
    " && mkdir -p /mnt/backups"
    " && mount -o ro /dev/disk/by-id/virtio-BACKUP01-part1 /mnt/backups"
    f" && restore-tui restore /mnt/backups/backups/{NATIVE_NAME} --target serial:TARGET01 --yes"
    f" && restore-tui restore /mnt/backups/backups/{CLONEZILLA_NAME}"
    " --target serial:TARGET02 --yes"
)


def _wizard_first_step(text: str) -> bool:
    return "Step 1 of" in text and "Choose the backup" in text and NATIVE_NAME in text


def _powered_off(text: str) -> bool:
    return "restore-tui exit status:" in text


@dataclass
class Run:
    """One boot of the image, and the disk image files it had."""

    boot: Boot
    disks: dict[str, Path]  # by serial number


@pytest.fixture(scope="module")
def boots(
    rescue_iso: Path,
    backups: Backups,
    kernel_files: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Run]:
    """The three boots, side by side (the host's cores are shared better than one boot
    uses them): ``unattended`` (``restore_tui.run=``, -kernel from the ISO, the CD as its
    live medium), ``bios`` and ``uefi`` (the ISO's own boot loader, up to the wizard's first
    step). Each has its own copy of the backup disk (QEMU lets one process write an image)
    and its own blank targets."""
    work = tmp_path_factory.mktemp("boots")
    append = (
        "boot=live systemd.gpt_auto=0 console=tty0 console=ttyS0,115200 "
        f'restore_tui.run="{UNATTENDED_COMMAND}"'
    )
    # name: (the disks' serial numbers, -kernel/-initrd/-append or None, UEFI)
    plans: dict[str, tuple[list[str], tuple[Path, Path, str] | None, bool]] = {
        "unattended": (["BACKUP01", "TARGET01", "TARGET02"], (*kernel_files, append), False),
        "bios": (["BACKUP01", "TARGET01"], None, False),
        "uefi": (["BACKUP01", "TARGET01"], None, True),
    }
    machines: list[Machine] = []
    files: dict[str, dict[str, Path]] = {}
    for name, (serials, kernel, uefi) in plans.items():
        files[name] = {}
        for serial in serials:
            path = work / f"{name}-{serial}.img"
            if serial == "BACKUP01":
                shutil.copyfile(backups.backup_disk.path, path)
            else:
                _blank(path)
            files[name][serial] = path
        disks = [Disk(path, serial) for serial, path in files[name].items()]
        machines.append(Machine(name, work, disks, iso=rescue_iso, kernel=kernel, uefi=uefi))
    done = boot_all(
        machines,
        {"unattended": _powered_off, "bios": _wizard_first_step, "uefi": _wizard_first_step},
        timeout=BOOT_TIMEOUT,
        wait_exit={"unattended"},
    )
    for name, boot in done.items():
        print(f"\n{name}: {boot.seconds:.0f} s under TCG (three guests side by side)")
    return {name: Run(done[name], files[name]) for name in plans}


@needs_image
def test_unattended_restore_by_serial_is_byte_exact(
    boots: dict[str, Run], backups: Backups
) -> None:
    run = boots["unattended"]
    assert run.boot.returncode == 0  # it powered itself off
    status = re.findall(r"^restore-tui exit status: (\d+)$", run.boot.text, re.MULTILINE)
    assert status == ["0"], run.boot.text[-6000:]
    # Both listed by `restore-tui backups` before anything mounted the partition.
    assert NATIVE_NAME in run.boot.text and CLONEZILLA_NAME in run.boot.text
    # Restored by serial number, byte for byte what the same restore gives on the host.
    assert file_hash(run.disks["TARGET01"]) == file_hash(backups.native_reference)
    assert file_hash(run.disks["TARGET02"]) == file_hash(backups.clonezilla_reference)
    # Read-only mounts only: the backup disk is as it was built.
    assert file_hash(run.disks["BACKUP01"]) == file_hash(backups.backup_disk.path)


@needs_image
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_boots_into_the_wizard_on_the_serial_console(
    boots: dict[str, Run], backups: Backups, tmp_path: Path, firmware: str
) -> None:
    run = boots[firmware]
    # The wizard's first step, listing the backup found on the unmounted partition.
    assert _wizard_first_step(run.boot.text)
    assert "restore-tui rescue system" in run.boot.text  # the hint line before the wizard
    # Nothing was mounted for writing: the disks are byte for byte as they were.
    assert file_hash(run.disks["BACKUP01"]) == file_hash(backups.backup_disk.path)
    untouched = _blank(tmp_path / "untouched.img")
    assert file_hash(run.disks["TARGET01"]) == file_hash(untouched)
