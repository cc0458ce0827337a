#!/usr/bin/env bash
# One entry point that sets everything up on a fresh Debian 12 machine (as root)
# and then runs what was asked:   ./run.sh demo   |   ./run.sh test   |   ./run.sh setup
#                                  ./run.sh rescue-image   (builds build/restore-tui-rescue.iso)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

debian_packages=(
    libparted-dev pkg-config build-essential python3-dev python3-venv
    udev util-linux fdisk gdisk parted e2fsprogs dosfstools ntfs-3g partclone
    zstd tmux mtools clonezilla fusefat fuse3 libfuse3-dev
)
# What building the rescue image and booting it in QEMU take: only for `rescue-image`, and
# for `test` as root (the boot tests in tests/test_rescue_image.py need root).
image_packages=(
    mmdebstrap squashfs-tools xorriso grub-pc-bin grub-efi-amd64-bin grub-common mtools
    qemu-system-x86 ovmf
)

install_system_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing Debian packages: ${missing[*]}; run this as root (or install them with apt-get) and try again" >&2
        exit 1
    fi
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_venv() {
    local stamp=.venv/.installed-from
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating virtual environment in .venv/"
        python3 -m venv .venv
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing restore-tui and its test tools into .venv/"
        # Build tools are chatty (setuptools warnings); keep that in a log and show
        # it only when the install fails.
        if ! { .venv/bin/python -m pip install -q --upgrade pip &&
               .venv/bin/python -m pip install -q -e ".[test]"; } > .venv/install.log 2>&1; then
            cat .venv/install.log >&2
            echo "error: installing restore-tui into .venv/ failed (output above; also in .venv/install.log)" >&2
            exit 1
        fi
        echo "$want" > "$stamp"
    fi
}

cmd="${1:-demo}"
shift || true
wanted=("${debian_packages[@]}")
if [ "$cmd" = rescue-image ] || { [ "$cmd" = test ] && [ "$(id -u)" -eq 0 ]; }; then
    wanted+=("${image_packages[@]}")
fi
install_system_packages "${wanted[@]}"
make_venv
case "$cmd" in
    setup) echo "==> ready: .venv/bin/restore-tui --help" ;;
    demo) exec .venv/bin/restore-tui demo "$@" ;;
    test) exec bash .ci/test-suite "$@" ;;
    rescue-image) exec bash rescue/build.sh "$@" ;;
    *) echo "error: unknown command '$cmd'; use: ./run.sh demo | ./run.sh test | ./run.sh setup | ./run.sh rescue-image" >&2; exit 2 ;;
esac
