#!/usr/bin/env bash
# The rescue image's base layer: a minimal Debian 12 system (mmdebstrap --variant=minbase)
# with a kernel, live-boot and the disk tools, and nothing restore-tui-specific, so that
# a change to restore-tui rebuilds only the small layer on top (see build.sh).
#
#   rescue/base.sh OUT_DIR     (as root; OUT_DIR must not exist)
#
# OUT_DIR gets: root/ (the tree, kept for building the layer on top), vmlinuz,
# initrd.img and filesystem.squashfs (the tree without /boot, xz-compressed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Kernel modules for hardware a restore never needs are never unpacked (dpkg path-exclude,
# so the initramfs is made once, from what is left): sound, TV/webcam, network (the image
# has no network services), wireless, bluetooth, InfiniBand, industrial I/O, staging, and
# amdgpu (useless without its firmware, which is not in the image: the generic
# framebuffer takes over). Smaller, and quicker to build and to boot.
unneeded_modules=(
    sound drivers/media drivers/net net/wireless net/mac80211 net/bluetooth
    drivers/bluetooth drivers/infiniband drivers/iio drivers/staging drivers/comedi
    drivers/gpu/drm/amd
)
module_excludes=()
for m in "${unneeded_modules[@]}"; do
    # bookworm's kernel package has them under /lib (merged with /usr/lib on disk).
    module_excludes+=("--dpkgopt=path-exclude=/lib/modules/*/kernel/$m/*"
        "--dpkgopt=path-exclude=/usr/lib/modules/*/kernel/$m/*")
done

out="$1"
[ ! -e "$out" ] || { echo "error: $out already exists" >&2; exit 1; }

mapfile -t packages < <(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \t' '\n' | sed '/^$/d')

# The host's own bookworm sources when it has them (its mirror, its keyring); otherwise
# mmdebstrap's default mirror for the suite.
sources=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -f "$f" ] && grep -qE '^[^#]*bookworm' "$f"; then sources=("$f"); break; fi
done

mkdir -p "$out"
echo "==> mmdebstrap: Debian 12 minbase with ${#packages[@]} packages"
# Docs, manuals and translations are of no use on a rescue stick (copyright files kept).
# RESUME=none before the kernel's initramfs is made: never resume from a swap partition
# of whatever machine this boots on (or the build host's).
mmdebstrap --variant=minbase --quiet \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo RESUME=none > "$1/etc/initramfs-tools/conf.d/resume"' \
    "${module_excludes[@]}" \
    bookworm "$out/root" "${sources[@]}"

root="$out/root"
echo restore-tui > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\trestore-tui\n' > "$root/etc/hosts"
# Nothing is mounted from the machine's disks: no fstab entries at all.
echo "# restore-tui rescue system: no disk is mounted automatically." > "$root/etc/fstab"
# A fresh machine id at every boot (systemd makes one when the file is empty).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
chroot "$root" passwd -d root >/dev/null
# Timers that would reach for a network or touch filesystems on their own.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# The kernel and initramfs go beside the squashfs on the ISO, not inside it.
cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)" "$out/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)" "$out/initrd.img"
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* "$root"/boot/System.map-* \
    "$root"/vmlinuz "$root"/vmlinuz.old "$root"/initrd.img "$root"/initrd.img.old
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old

echo "==> mksquashfs: base layer"
mksquashfs "$root" "$out/filesystem.squashfs" -comp xz -noappend -no-progress -quiet -no-xattrs
