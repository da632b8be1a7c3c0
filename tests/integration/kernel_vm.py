"""Boot a Debian kernel under QEMU (TCG) so the Linux kernel iSCSI initiator can test cistern's target.

The host kernel here has no iSCSI modules and KVM is unusable, so the recipe (docs/PEERS.md, "Kernel
initiator in a VM") is:

* the kernel comes from Debian's ``linux-image-<version>-amd64`` package, fetched with ``apt-get download``
  and unpacked with ``dpkg -x`` into a cache folder (never installed on the host); ``depmod -b`` writes
  its ``modules.dep`` there;
* a *base* initramfs (newc cpio, gzip) holds busybox-static, the modules ``iscsi_tcp`` (with
  libiscsi_tcp, libiscsi, scsi_transport_iscsi, scsi_mod), ``sd_mod``, ``crc32c_generic`` (iSCSI digests),
  ``virtio_pci``/``virtio_net`` and ``ext4``, each with its dependencies in load order, and open-iscsi's
  ``iscsistart`` plus e2fsprogs' ``mke2fs``/``e2fsck`` with their shared libraries (from ``ldd``). It is
  built once per kernel version and recipe and kept in the cache;
* every run appends a second, small cpio archive (``/init`` and its inputs) to the base one: the kernel
  unpacks concatenated archives in order;
* the guest's network is QEMU user networking with ``restrict=on`` and a ``guestfwd`` rule whose ``cmd:``
  form starts one ``socat`` to the target per guest connection. QEMU and the target run inside a network
  namespace the caller created, so the target's 127.0.0.1 is private to the test. socat needs
  ``nodelay`` and a large buffer (``-b``): with its defaults (8 KiB, Nagle on) 64 KiB O_DIRECT reads
  stalled about 180 ms each.

The guest prints ``CISTERN-VM-RESULT ok|fail <details>`` on its serial console and powers off;
:func:`run_vm` returns that line. Every process started here is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import peers
from cistern_proc import CisternTarget

#: Bump when the base initramfs recipe changes so cached archives are rebuilt.
RECIPE_VERSION = "1"

CACHE_ROOT = Path(os.environ.get("CISTERN_TEST_VM_CACHE", Path.home() / ".cache" / "cistern-test-vm"))

#: Modules the guest loads (their dependencies are added from modules.dep).
GUEST_MODULES = (
    "virtio_pci",
    "virtio_net",
    "crc32c_generic",
    "crct10dif_generic",
    "crc64_rocksoft_generic",
    "scsi_mod",
    "sd_mod",
    "scsi_transport_iscsi",
    "libiscsi",
    "libiscsi_tcp",
    "iscsi_tcp",
    "ext4",
)
#: Loaded when the (emulated) CPU allows: SSE4.2 CRC32C, much faster than crc32c_generic under TCG.
GUEST_OPTIONAL_MODULES = ("crc32c_intel",)

#: Host programs copied into the guest with their shared libraries: guest path -> host path.
GUEST_PROGRAMS = {
    "/sbin/iscsistart": "/usr/sbin/iscsistart",
    "/sbin/mke2fs": "/usr/sbin/mke2fs",
    "/sbin/e2fsck": "/usr/sbin/e2fsck",
}
GUEST_FILES = {"/etc/mke2fs.conf": "/etc/mke2fs.conf"}
BUSYBOX = "/usr/bin/busybox"

#: The address the guest dials; QEMU forwards it to the target through socat.
GUEST_TARGET_ADDR = "10.0.2.100"
GUEST_TARGET_PORT = 3260

RESULT_RE = re.compile(r"^CISTERN-VM-RESULT (ok|fail)\b ?(.*)$", re.MULTILINE)


class VmError(RuntimeError):
    """The VM could not be prepared or did not report a result."""


# --------------------------------------------------------------------------------------------------
# newc cpio (the initramfs format, see the kernel's Documentation/driver-api/early-userspace)


class CpioWriter:
    """Writes a "newc" cpio archive: directories, regular files and symlinks, all owned by root."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._buf.write(header + encoded)
        self._buf.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._buf.write(data)
        self._buf.write(b"\0" * (-len(data) % 4))

    def directory(self, path: str) -> None:
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in self._seen:
                self._seen.add(sub)
                self._entry(sub, stat.S_IFDIR | 0o755, b"")

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        self._seen.add(path)
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        self._seen.add(path)
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        data = self._buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


# --------------------------------------------------------------------------------------------------
# The kernel: Debian package -> cache folder


@dataclasses.dataclass(frozen=True)
class KernelImage:
    """A cached kernel and its base initramfs."""

    version: str  # e.g. "6.1.0-56-amd64"
    vmlinuz: Path
    base_initramfs: Path


def resolve_kernel_package() -> str:
    """The ``linux-image-6.1.*-amd64`` package Debian's ``linux-image-amd64`` currently depends on."""
    override = os.environ.get("CISTERN_TEST_VM_KERNEL")
    if override:
        return override
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, timeout=60
    ).stdout
    found = re.findall(r"Depends:\s*(linux-image-6\.1\.\S+-amd64)", out)
    if found:
        return found[0]
    out = subprocess.run(
        ["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    names = sorted(
        (line.split()[0] for line in out.splitlines() if line.strip()),
        key=lambda n: [int(x) for x in re.findall(r"\d+", n)],
    )
    if not names:
        raise VmError("no linux-image-6.1.*-amd64 package is known to apt; run `apt-get update`")
    return names[-1]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def download_kernel(package: str, kdir: Path) -> Path:
    """``apt-get download`` the package into ``kdir`` (kept: 70 MB instead of a 400 MB unpacked tree)."""
    peers.require_tool("apt-get")
    kdir.mkdir(parents=True, exist_ok=True)
    debs = sorted(kdir.glob(f"{package}_*.deb"))
    if debs:
        return debs[-1]
    with tempfile.TemporaryDirectory(dir=kdir, prefix=".dl-") as tmp:
        done = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise VmError(f"apt-get download {package} failed: {done.stdout}{done.stderr}")
        got = list(Path(tmp).glob("*.deb"))
        if len(got) != 1:
            raise VmError(f"apt-get download {package} left {got}")
        deb = kdir / got[0].name
        got[0].rename(deb)
    return deb


@contextlib.contextmanager
def unpacked(deb: Path, version: str) -> Iterator[Path]:
    """The package unpacked (``dpkg -x``) with ``modules.dep`` made by ``depmod -b``; removed on exit."""
    with tempfile.TemporaryDirectory(dir=deb.parent, prefix=".tree-") as tmp:
        peers.run([peers.require_tool("dpkg"), "-x", str(deb), tmp], timeout=600)
        peers.run([peers.require_tool("depmod"), "-b", tmp, version], timeout=300)
        yield Path(tmp)


def module_load_order(modules_dir: Path, wanted: Iterable[str]) -> list[str]:
    """Relative paths of ``wanted`` modules and their dependencies, every dependency before its user."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.split(".ko")[0].replace("-", "_")] = path
    builtin = {
        Path(p).name.split(".ko")[0].replace("-", "_")
        for p in (modules_dir / "modules.builtin").read_text().split()
    }
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise VmError(f"kernel module {name} is neither in modules.dep nor built in")
    return order


def shared_libraries(program: str) -> list[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, timeout=30, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def add_busybox(cpio: CpioWriter, dirs: Iterable[str]) -> None:
    """The guest's top directories ``dirs``, busybox-static as ``/bin/busybox`` and ``/bin/sh``."""
    for d in dirs:
        cpio.directory(d)
    cpio.file("/bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    cpio.symlink("/bin/sh", "busybox")


def add_programs(cpio: CpioWriter, programs: Mapping[str, str]) -> None:
    """Each host program (guest path -> host path) with the shared libraries ``ldd`` names (the loader
    ``/lib64/ld-linux-x86-64.so.2`` among them, copied as a file)."""
    for guest, host in programs.items():
        cpio.file(guest, Path(host).read_bytes(), 0o755)
        for lib in shared_libraries(host):
            cpio.file(lib, Path(os.path.realpath(lib)).read_bytes(), 0o755)


def add_modules(
    cpio: CpioWriter, modules_dir: Path, version: str, wanted: Iterable[str], optional: Iterable[str] = ()
) -> None:
    """The ``wanted`` (and ``optional``) modules with their dependencies under ``/lib/modules/<version>``,
    listed in load order in ``/etc/cistern-modules`` (``<path> required|optional`` a line; the guest's
    :data:`LOAD_MODULES` loop reads it) and the version in ``/etc/cistern-kernel-version``."""
    order = module_load_order(modules_dir, wanted)
    extra = [m for m in module_load_order(modules_dir, optional) if m not in order]
    for rel in order + extra:
        cpio.file(f"/lib/modules/{version}/{rel}", (modules_dir / rel).read_bytes())
    lines = [f"{rel} {'optional' if rel in extra else 'required'}" for rel in order + extra]
    cpio.file("/etc/cistern-modules", ("\n".join(lines) + "\n").encode())
    cpio.file("/etc/cistern-kernel-version", version.encode())


#: Guest shell that loads the modules :func:`add_modules` listed; calls ``fail MESSAGE`` (which the
#: caller's prologue defines) when a required one does not load.
LOAD_MODULES = """KV=$(cat /etc/cistern-kernel-version)
while read -r m kind; do
    insmod "/lib/modules/$KV/$m" || [ "$kind" = optional ] || fail "insmod $m"
done < /etc/cistern-modules
"""


def write_gzip_cpio(cpio: CpioWriter, out: Path) -> None:
    """Finish ``cpio`` into ``out`` (gzip, atomically through ``out.tmp``)."""
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    tmp.rename(out)


def cached_initramfs(
    image: KernelImage, prefix: str, key: str, build: Callable[[Path, CpioWriter], None]
) -> Path:
    """``<prefix>-<key>.cpio.gz`` in the kernel's cache folder, built once by ``build(modules_dir,
    cpio)`` from the kernel package unpacked (under the cache lock); older ``<prefix>-*`` archives go."""
    kdir = image.vmlinuz.parent
    out = kdir / f"{prefix}-{key}.cpio.gz"
    with locked(CACHE_ROOT / ".lock"):
        if out.exists():
            return out
        deb = download_kernel(f"linux-image-{image.version}", kdir)
        with unpacked(deb, image.version) as tree:
            cpio = CpioWriter()
            build(tree / "lib" / "modules" / image.version, cpio)
            for old in kdir.glob(f"{prefix}-*.cpio.gz"):
                old.unlink()
            write_gzip_cpio(cpio, out)
    return out


def inputs_key(*parts: str, files: Iterable[str] = ()) -> str:
    """A cache key: changes with ``parts`` or the size/mtime of any of ``files``."""
    h = hashlib.sha256("|".join(parts).encode())
    for path in sorted(set(files)):
        st = os.stat(path)
        h.update(f"|{path}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _host_inputs() -> list[str]:
    programs = [BUSYBOX, *GUEST_PROGRAMS.values()]
    files = list(programs) + list(GUEST_FILES.values())
    for prog in GUEST_PROGRAMS.values():
        files += shared_libraries(prog)
    return sorted(set(files))


def _recipe_key(version: str) -> str:
    """Changes when the kernel, the module list, the recipe or any host binary copied in changes."""
    modules = ",".join(GUEST_MODULES + GUEST_OPTIONAL_MODULES)
    return inputs_key(RECIPE_VERSION, version, modules, files=_host_inputs())


def _build_base_initramfs(tree: Path, version: str, out: Path) -> None:
    for tool in ("busybox", "iscsistart", "mke2fs", "e2fsck"):
        peers.require_tool(tool)
    modules_dir = tree / "lib" / "modules" / version
    cpio = CpioWriter()
    add_busybox(
        cpio, ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "etc/iscsi", "var/lock", "root")
    )
    add_programs(cpio, GUEST_PROGRAMS)
    cpio.symlink("/sbin/mkfs.ext4", "mke2fs")
    cpio.symlink("/sbin/fsck.ext4", "e2fsck")
    for guest, host in GUEST_FILES.items():
        cpio.file(guest, Path(host).read_bytes())
    add_modules(cpio, modules_dir, version, GUEST_MODULES, GUEST_OPTIONAL_MODULES)
    guest_mod_dir = f"/lib/modules/{version}"
    for name in ("modules.dep", "modules.builtin", "modules.order", "modules.alias", "modules.symbols"):
        if (modules_dir / name).exists():
            cpio.file(f"{guest_mod_dir}/{name}", (modules_dir / name).read_bytes())
    write_gzip_cpio(cpio, out)


def ensure_kernel_image(cache_root: Path = CACHE_ROOT) -> KernelImage:
    """Fetch the kernel package and build vmlinuz + base initramfs unless the cache has them already.

    The cache folder ``<cache_root>/<version>/`` keeps the .deb, ``vmlinuz`` and ``base-<key>.cpio.gz``.
    """
    package = resolve_kernel_package()
    version = package.removeprefix("linux-image-")
    kdir = cache_root / version
    vmlinuz = kdir / f"vmlinuz-{version}"
    with locked(cache_root / ".lock"):
        base = kdir / f"base-{_recipe_key(version)}.cpio.gz"
        if not (base.exists() and vmlinuz.exists()):
            deb = download_kernel(package, kdir)
            with unpacked(deb, version) as tree:
                for old in kdir.glob("base-*.cpio.gz"):
                    old.unlink()
                _build_base_initramfs(tree, version, base)
                image = tree / "boot" / f"vmlinuz-{version}"
                if not image.exists():
                    raise VmError(f"{package} has no boot/vmlinuz-{version}")
                shutil.copyfile(image, vmlinuz)
    return KernelImage(version=version, vmlinuz=vmlinuz, base_initramfs=base)


def guest_initramfs(base: Path, init_script: str, files: Mapping[str, bytes], out: Path) -> Path:
    """``base`` followed by a second archive holding ``/init`` and ``files`` (guest path -> content)."""
    cpio = CpioWriter()
    cpio.file("/init", init_script.encode(), 0o755)
    for path, data in files.items():
        cpio.file(path, data)
    out.write_bytes(base.read_bytes() + gzip.compress(cpio.finish(), compresslevel=1, mtime=0))
    return out


# --------------------------------------------------------------------------------------------------
# Network namespace, the target inside it, and the VM


@contextlib.contextmanager
def network_namespace(name: str | None = None) -> Iterator[str]:
    """A fresh network namespace with ``lo`` up; deleted on exit."""
    peers.require_tool("ip")
    name = name or f"cistern-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)  # a stale one of ours
    peers.run(["ip", "netns", "add", name], timeout=30)
    try:
        peers.run(["ip", "-n", name, "link", "set", "lo", "up"], timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


_WAIT_PORT_SNIPPET = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.1)
"""


@dataclasses.dataclass
class NetnsCisternTarget(CisternTarget):
    """``cistern serve --config`` run with ``ip netns exec NETNS`` (so on that namespace's 127.0.0.1)."""

    netns: str = ""

    def start(self, timeout: float = 20.0) -> None:
        if self.config_text is None or not self.netns:
            raise ValueError("NetnsCisternTarget needs a config and a namespace")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "cistern.toml"
        cfg.write_text(self.config_text)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its lifetime
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                sys.executable,
                "-m",
                "cistern",
                "-v",
                "serve",
                "--config",
                str(cfg),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        waiter = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                sys.executable,
                "-c",
                _WAIT_PORT_SNIPPET,
                str(self.port),
                str(timeout),
            ],
            capture_output=True,
            timeout=timeout + 10,
        )
        if waiter.returncode != 0 or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(
                f"cistern serve did not listen on port {self.port}: {self.log_path.read_text()}"
            )


@dataclasses.dataclass(frozen=True)
class QemuRun:
    console: str  # the serial console's text (CRLF folded)
    elapsed: float  # seconds from start to exit (or kill)
    returncode: int | None


def run_qemu(cmd: list[str], console_log: Path, timeout: float) -> QemuRun:
    """Run QEMU (``cmd``) with its serial console on stdout into ``console_log``; killed by its PID
    after ``timeout`` seconds."""
    start = time.monotonic()
    with open(console_log, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
    console = console_log.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
    return QemuRun(console, time.monotonic() - start, proc.returncode)


@dataclasses.dataclass(frozen=True)
class VmResult:
    ok: bool
    details: str  # the rest of the result line
    console: str  # everything the guest printed on its serial console
    elapsed: float  # seconds from QEMU's start to its exit

    def field(self, key: str) -> str | None:
        """``key=value`` from the details."""
        m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", self.details)
        return m.group(1) if m else None


def run_vm(
    image: KernelImage,
    initrd: Path,
    *,
    netns: str,
    target_port: int,
    console_log: Path,
    timeout: float = 240.0,
    memory_mib: int = 512,
    cmdline_extra: str = "",
    host_leg: str | None = None,
) -> VmResult:
    """Boot ``image`` with ``initrd`` in ``netns``; the guest's 10.0.2.100:3260 reaches 127.0.0.1:PORT there.

    QEMU is killed (by its PID) after ``timeout`` seconds; a run without a result line raises VmError
    carrying the console text.  ``host_leg`` replaces the plain TCP leg socat opens to the target (a TLS
    portal is reached with ``OPENSSL:127.0.0.1:PORT,,cafile=...``).
    """
    qemu = peers.require_tool("qemu-system-x86_64")
    socat = peers.require_tool("socat")
    # host_leg: socat's address for the host side (commas doubled for QEMU), e.g. an OPENSSL:... TLS leg
    leg = host_leg or f"TCP:127.0.0.1:{target_port},,nodelay"
    fwd = f"guestfwd=tcp:{GUEST_TARGET_ADDR}:{GUEST_TARGET_PORT}-cmd:{socat} -b 262144 - {leg}"
    cmdline = f"console=ttyS0 panic=-1 loglevel=5 rdinit=/init {cmdline_extra}".strip()
    cmd = [
        "ip", "netns", "exec", netns, qemu,
        "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", str(memory_mib),
        "-kernel", str(image.vmlinuz), "-initrd", str(initrd), "-append", cmdline,
        "-netdev", f"user,id=n0,restrict=on,{fwd}",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
        "-no-reboot", "-nodefaults",
    ]  # fmt: skip
    run = run_qemu(cmd, console_log, timeout)
    console, elapsed = run.console, run.elapsed
    m = RESULT_RE.search(console)
    if m is None:
        tail = "\n".join(console.splitlines()[-60:])
        raise VmError(f"no CISTERN-VM-RESULT line after {elapsed:.0f}s (qemu rc {run.returncode}):\n{tail}")
    return VmResult(ok=m.group(1) == "ok", details=m.group(2).strip(), console=console, elapsed=elapsed)


# --------------------------------------------------------------------------------------------------
# The guest's /init: a common prologue, then the caller's scenario

INIT_PROLOGUE = (
    r"""#!/bin/sh
# PID 1 of the test guest (busybox sh). Prints CISTERN-VM-RESULT ok|fail ... and powers off.
export PATH=/sbin:/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
now() { cut -d' ' -f1 /proc/uptime; }
step() { echo "CISTERN-VM-STEP $(now) $*"; }
result() { echo; echo "CISTERN-VM-RESULT $*"; sync; poweroff -f; sleep 60; }
fail() { result fail "$*"; exit 1; }
step modules
"""
    + LOAD_MODULES
    + r"""ip link set lo up
n=0
until ip link set eth0 up 2>/dev/null; do
    n=$((n+1)); [ $n -gt 100 ] && fail "no eth0"; sleep 0.1
done
ip addr add 10.0.2.15/24 dev eth0 || fail "ip addr"
step network
"""
)


def init_script(scenario: str, env: Mapping[str, str]) -> str:
    """``/init``: the prologue, ``env`` as shell variables, then ``scenario`` (which calls ``result``)."""
    assigns = "".join(f"{k}='{v}'\n" for k, v in env.items() if "'" not in v)
    return INIT_PROLOGUE + assigns + scenario + '\nfail "scenario ended without a result"\n'
