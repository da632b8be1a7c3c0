"""Linux LIO (the in-kernel iSCSI target) in a QEMU guest, as an MC/S + ErrorRecoveryLevel=2 peer.

Recipe from ``shared/recipes/lio_guest_init.sh`` (docs/RESEARCH.md section 5): Debian's kernel (the same
cached package :mod:`kernel_vm` uses), an initramfs of busybox-static plus ``target_core_mod``,
``iscsi_target_mod`` and the virtio network modules, and an ``/init`` that configures LIO with ``mkdir`` and
``echo`` in configfs: an ``rd_mcp`` LUN of 64 MiB, TPG 1 with ``MaxConnections=4``,
``ErrorRecoveryLevel=2``, ``default_erl=2``, generated ACLs and no authentication. QEMU user networking
forwards ``127.0.0.1:<port>`` on the host to the guest's portal: every host TCP connection becomes a new
connection to LIO, so a session can add connections.

The LIO initramfs is built once per kernel version and kept next to the kernel in the cache.
:class:`LioVm` boots it, waits for ``LIO-VM READY`` on the console, and is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import kernel_vm
import peers

#: Modules the guest loads (dependencies are added from modules.dep, in order).
LIO_MODULES = (
    "configfs",
    "target_core_mod",
    "iscsi_target_mod",
    "virtio_pci",
    "virtio_net",
    "crc32c_generic",
)
LIO_RECIPE_VERSION = "1"
TARGET_IQN = "iqn.2026-11.test.lio:disk"
LUN_BYTES = 64 << 20

INIT = r"""#!/bin/sh
export PATH=/sbin:/bin
/bin/busybox --install -s /bin
mount -t proc none /proc; mount -t sysfs none /sys; mount -t devtmpfs none /dev
KV=$(cat /etc/cistern-kernel-version)
while read -r m kind; do insmod "/lib/modules/$KV/$m" || echo "LIO-VM insmod fail $m"; done < /etc/cistern-modules
mount -t configfs none /sys/kernel/config
ip link set lo up
n=0
until ip link set eth0 up 2>/dev/null; do n=$((n+1)); [ $n -gt 100 ] && break; sleep 0.1; done
ip addr add 10.0.2.15/24 dev eth0
T=/sys/kernel/config/target
I=__IQN__
mkdir -p $T/core/rd_mcp_0/rd0
echo rd_pages=__PAGES__ > $T/core/rd_mcp_0/rd0/control
echo 1 > $T/core/rd_mcp_0/rd0/enable
mkdir -p $T/iscsi/$I/tpgt_1/lun/lun_0
ln -s $T/core/rd_mcp_0/rd0 $T/iscsi/$I/tpgt_1/lun/lun_0/rd0
mkdir $T/iscsi/$I/tpgt_1/np/10.0.2.15:3260
A=$T/iscsi/$I/tpgt_1/attrib
echo 1 > $A/generate_node_acls; echo 1 > $A/cache_dynamic_acls; echo 0 > $A/authentication
echo 0 > $A/demo_mode_write_protect; echo 2 > $A/default_erl
P=$T/iscsi/$I/tpgt_1/param
echo 4 > $P/MaxConnections; echo 2 > $P/ErrorRecoveryLevel
echo 1 > $T/iscsi/$I/tpgt_1/enable
echo "LIO-VM params: MaxConnections=$(cat $P/MaxConnections) ERL=$(cat $P/ErrorRecoveryLevel) default_erl=$(cat $A/default_erl)"
echo "LIO-VM READY"
while true; do sleep 3600; done
"""


def _lio_initramfs(image: kernel_vm.KernelImage) -> Path:
    """Build (once) busybox + the LIO modules + /init as a gzip newc cpio in the kernel cache folder."""
    init = INIT.replace("__IQN__", TARGET_IQN).replace("__PAGES__", str(LUN_BYTES // 4096))
    key = kernel_vm.inputs_key(
        LIO_RECIPE_VERSION, image.version, ",".join(LIO_MODULES), init, files=[kernel_vm.BUSYBOX]
    )

    def build(modules_dir: Path, cpio: kernel_vm.CpioWriter) -> None:
        kernel_vm.add_busybox(cpio, ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc"))
        kernel_vm.add_modules(cpio, modules_dir, image.version, LIO_MODULES)
        cpio.file("/init", init.encode(), 0o755)

    return kernel_vm.cached_initramfs(image, "lio", key, build)


class LioVm:
    """One booted LIO guest; ``port`` on 127.0.0.1 reaches its portal. Use as a context manager."""

    def __init__(self, console_log: Path, boot_timeout: float = 180.0) -> None:
        self.console_log = console_log
        self.boot_timeout = boot_timeout
        self.port = peers.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_seconds = 0.0

    def console(self) -> str:
        return self.console_log.read_bytes().decode("utf-8", "replace") if self.console_log.exists() else ""

    def start(self) -> None:
        qemu = peers.require_tool("qemu-system-x86_64")
        image = kernel_vm.ensure_kernel_image()
        initrd = _lio_initramfs(image)
        cmd = [
            qemu, "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "512",
            "-kernel", str(image.vmlinuz), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-10.0.2.15:3260",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
            "-no-reboot", "-nodefaults",
        ]  # fmt: skip
        start = time.monotonic()
        log = open(self.console_log, "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        while time.monotonic() - start < self.boot_timeout:
            text = self.console()
            if "LIO-VM READY" in text:
                self.boot_seconds = time.monotonic() - start
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        tail = "\n".join(self.console().splitlines()[-40:])
        raise kernel_vm.VmError(f"LIO guest not ready after {time.monotonic() - start:.0f}s:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def __enter__(self) -> LioVm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
