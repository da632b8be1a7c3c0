#!/usr/bin/env bash
# Install what the test suite needs on Debian 12; safe to run again (installs only what is missing).
#
#   apt: libiscsi-bin (iscsi-ls, iscsi-inq, iscsi-test-cu, iscsi-perf...), qemu-utils and
#        qemu-block-extra (qemu-img/qemu-io with the iscsi:// driver), tgt (reference target),
#        iproute2 and procps; python3-venv only when the system python3 must get a .venv.
#        For the kernel-initiator VM test (tests/integration/kernel_vm.py): qemu-system-x86 (TCG),
#        busybox-static, open-iscsi (iscsistart), socat, e2fsprogs (mke2fs/e2fsck/debugfs) and kmod
#        (depmod). The Debian kernel itself is fetched by the test with `apt-get download` into
#        ~/.cache/cistern-test-vm and never installed.
#        For the tape VM test (tests/integration/tape_vm.py): mt-st, mtx and tar, copied into the guest
#        with their libraries (the guest's st/ch/sg modules come from the same kernel package).
#        For the admin tests: prometheus (promtool check metrics, a scraping server) and chromium
#        (the dashboard in headless mode, driven by Playwright from PyPI).
#   pip: the repository itself, editable, with the [test] extra.
# Runs apt-get as root (directly, or through sudo when available).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"

PACKAGES=(libiscsi-bin qemu-utils qemu-block-extra tgt iproute2 procps coreutils)
PACKAGES+=(qemu-system-x86 busybox-static open-iscsi socat e2fsprogs kmod)
PACKAGES+=(tcpdump)  # capture of the kernel VM test's TLS leg (neither InitiatorName nor data on the wire)
PACKAGES+=(prometheus chromium)  # promtool + a scraping server; headless browser for the dashboard test
# systemd-analyze verifies contrib/cistern.service; util-linux (losetup) makes loop devices for CLI tests
PACKAGES+=(systemd util-linux)
PACKAGES+=(sg3-utils)  # sg_ses decodes the SES pages of the enclosure LU (tests/unit/test_ses_pages.py)
PACKAGES+=(mt-st mtx tar)

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo --preserve-env=DEBIAN_FRONTEND "$@"
    else
        echo "install-test-deps: need root (or sudo) to install: $*" >&2
        exit 1
    fi
}

missing_packages() {
    local pkg
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != "installed" ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

apt_updated=0
apt_install() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ $apt_updated -eq 0 ]]; then
        as_root apt-get -o DPkg::Lock::Timeout=600 update
        apt_updated=1
    fi
    echo "install-test-deps: installing ${missing[*]}"
    as_root apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

apt_install "${PACKAGES[@]}"
# The kernel-initiator VM test runs `apt-get download linux-image-6.1...-amd64`: it needs apt's lists.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    as_root apt-get -o DPkg::Lock::Timeout=600 update
fi

choose_python
if [[ -z "$PYTHON" ]]; then
    apt_install python3
    choose_python
fi
if python_is_externally_managed "$PYTHON"; then
    # python3-dev and gcc: headers and compiler for the optional accelerator (setup.py; pure Python without)
    apt_install python3-venv python3-pip python3-dev gcc
fi
ensure_installable_python

cd "$REPO_ROOT"
"$PYTHON" -m pip install -e '.[test]'
echo "install-test-deps: done (python: $PYTHON)"
