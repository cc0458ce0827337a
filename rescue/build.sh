#!/usr/bin/env bash
# Builds the restore-tui rescue ISO: a Debian 12 live system that starts straight into
# the wizard on the screen and the serial port, hybrid BIOS+UEFI, for a USB stick or CD.
#
#   rescue/build.sh [OUT.iso]      (as root; default build/restore-tui-rescue.iso)
#
# Two layers, stacked by live-boot at boot (it mounts every /live/*.squashfs, the later
# name on top):
#   filesystem.squashfs   Debian itself (base.sh): kernel, live-boot, disk tools, Python.
#                         Cached by a hash of packages.txt and base.sh.
#   restore-tui.squashfs  restore-tui in a virtual environment at /opt/restore-tui, built
#                         with the base's own python3 from wheels of this checkout, and
#                         the live system's settings (overlay/).
# The finished ISO is cached too, by a hash of everything it is made from (rescue/, the
# sources of archive/, layout/, restore_tui/ and pyproject.toml), so building again with
# nothing changed only copies it. Cache: $RESTORE_TUI_CACHE (default /var/cache/restore-tui),
# outside the clone. The last line printed is the ISO's path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/build/restore-tui-rescue.iso}"
cache="${RESTORE_TUI_CACHE:-/var/cache/restore-tui}"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: building the rescue image needs root (mmdebstrap, chroot, mounts); run it as root" >&2
    exit 1
fi
for tool in mmdebstrap mksquashfs grub-mkrescue xorriso mformat; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing; ./run.sh rescue-image installs the image tools" >&2
        exit 1
    }
done

# A hash of the named files and folders (paths and contents), for the cache keys.
# README.md is copied into the wheel's metadata but is not hashed: it does not change
# what the image does.
inputs_hash() {
    (cd "$repo" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
base_key="$(inputs_hash rescue/packages.txt rescue/base.sh)"
image_key="$(inputs_hash rescue archive layout restore_tui pyproject.toml)"
base="$cache/base-$base_key"
iso="$cache/rescue-$image_key.iso"
mkdir -p "$cache" "$(dirname "$out")"

deliver() {
    cp "$iso" "$out.tmp" && mv "$out.tmp" "$out"
    echo "==> $(du -m "$out" | cut -f1) MB"
    echo "$out"
}
if [ -f "$iso" ]; then
    echo "==> unchanged inputs: the image built before ($iso)"
    deliver
    exit 0
fi

if [ ! -f "$base/.complete" ]; then
    # One base is kept: an older one is only taking space.
    rm -rf "$cache"/base-*
    bash "$here/base.sh" "$base.tmp"
    mv "$base.tmp" "$base"
    touch "$base/.complete"
else
    echo "==> base layer unchanged ($base)"
fi

work="$(mktemp -d "$cache/work.XXXXXX")"
merged="$work/merged"
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Wheels of this checkout and its dependencies, made by the same Python the image has
# (Debian 12's python3, so pyparted is compiled against the same Python and libparted).
echo "==> wheels of restore-tui and its dependencies"
pyenv="$cache/wheel-python"
if [ ! -x "$pyenv/bin/pip" ]; then
    /usr/bin/python3 -m venv "$pyenv"
fi
mkdir -p "$work/src" "$work/wheels"
(cd "$repo" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' \
    pyproject.toml README.md archive layout restore_tui) | tar -xf - -C "$work/src"
"$pyenv/bin/pip" wheel -q --disable-pip-version-check -w "$work/wheels" "$work/src" \
    > "$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }

# The restore-tui layer: whatever changes on top of the base while restore-tui is
# installed into it (an overlay mount keeps the cached base untouched).
echo "==> restore-tui layer"
mkdir -p "$work/upper" "$work/overlay-work" "$merged"
mount -t overlay overlay \
    -o "lowerdir=$base/root,upperdir=$work/upper,workdir=$work/overlay-work" "$merged"
mounted+=("$merged")
mount --bind /dev "$merged/dev" && mounted+=("$merged/dev")
mount -t proc proc "$merged/proc" && mounted+=("$merged/proc")
# Commands inside the image get a clean environment: the host's settings (pip's find-links,
# a constraints file, proxies) mean nothing there.
in_image() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 chroot "$merged" "$@"
}
host_py="$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
image_py="$(in_image python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$host_py" != "$image_py" ]; then
    echo "error: the wheels are built with Python $host_py but the image has $image_py" >&2
    exit 1
fi
mkdir -p "$merged/tmp/wheels"
cp "$work/wheels"/*.whl "$merged/tmp/wheels/"
in_image python3 -m venv /opt/restore-tui
in_image /opt/restore-tui/bin/pip install -q --disable-pip-version-check \
    --no-index --find-links /tmp/wheels restore-tui
# pip itself is no use without a network; the wheels were only for the install.
in_image /opt/restore-tui/bin/pip uninstall -q -y pip setuptools
rm -rf "$merged/tmp/wheels" "$merged/root/.cache"
ln -sf /opt/restore-tui/bin/restore-tui "$merged/usr/local/bin/restore-tui"
# The live system's settings: autologin into the wizard, the unattended mode, the font.
cp -r --preserve=mode,links "$here/overlay/." "$merged/"
# live-boot's initramfs writes a loopback-only interfaces file there (no network is set up).
mkdir -p "$merged/etc/network"
in_image systemctl enable -q restore-tui-run.service getty@tty2.service
in_image restore-tui --help > /dev/null
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}"; done
mounted=()
# Only what was added or changed: the overlay's own bookkeeping (xattrs) stays out.
mksquashfs "$work/upper" "$work/restore-tui.squashfs" -comp xz -noappend -no-progress \
    -quiet -no-xattrs

echo "==> ISO (grub-mkrescue: BIOS and UEFI)"
mkdir -p "$work/iso/live" "$work/iso/boot/grub"
ln "$base/filesystem.squashfs" "$work/iso/live/filesystem.squashfs" 2>/dev/null ||
    cp "$base/filesystem.squashfs" "$work/iso/live/filesystem.squashfs"
mv "$work/restore-tui.squashfs" "$work/iso/live/"
cp "$base/vmlinuz" "$base/initrd.img" "$work/iso/live/"
cp "$here/grub.cfg" "$work/iso/boot/grub/grub.cfg"
grub-mkrescue --quiet --compress=xz --locales= --themes= --fonts= \
    -o "$work/rescue.iso" "$work/iso" -- -volid RESTORE_TUI > "$work/mkrescue.log" 2>&1 ||
    { cat "$work/mkrescue.log" >&2; exit 1; }
mv "$work/rescue.iso" "$iso"
# Keep the three newest images: a few commits' worth, not every one ever built.
ls -t "$cache"/rescue-*.iso 2>/dev/null | tail -n +4 | xargs -r rm -f
deliver
