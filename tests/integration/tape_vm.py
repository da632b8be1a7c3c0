"""Linux's own tape stack (``st``, ``sg``, ``ch`` + ``mt-st``, ``mtx``, GNU ``tar``) in a QEMU guest.

The acceptance harness of the tape drive and medium changer (research note §1, test T1). The guest sees
a target's tape and changer LUNs through QEMU's own iSCSI driver (libiscsi) as SCSI pass-through
devices (``-device virtio-scsi-pci -drive file=iscsi://...,if=none -device scsi-generic,...``): every CDB
``st``/``ch``/``mtx`` send reaches the target unchanged, and every sense byte comes back to them.

* The kernel is kernel_vm's cached Debian image (same ``.deb``, same ``vmlinuz``); this module builds its
  own *tape* initramfs next to kernel_vm's base one (``tape-<key>.cpio.gz`` in the same cache folder),
  so the kernel-initiator test's cache is untouched. It holds busybox-static, the modules ``virtio_pci``,
  ``virtio_scsi``, ``st``, ``sg``, ``ch`` (with their dependencies in load order) and the host's
  ``mt-st``, ``mtx`` and GNU ``tar`` (as ``/bin/gtar``) with the shared libraries ``ldd`` names.
* The guest has no network: QEMU itself is the iSCSI initiator, on the host's 127.0.0.1.
* :data:`T1_SCENARIO` is the T1 sequence. Every step prints ``TAPE-RC <name> <rc> [detail]`` on the
  serial console; :func:`run_tape_vm` returns them in order (:class:`TapeRun`). A step that does not end
  within its bound is killed (rc 137) so one hang cannot stall the whole run.

Each process started here is stopped by its own PID.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import kernel_vm
import peers

#: Bump when the tape initramfs recipe changes so cached archives are rebuilt.
TAPE_RECIPE_VERSION = "2"
TAPE_MODULES = ("virtio_pci", "scsi_mod", "virtio_scsi", "st", "sg", "ch")
#: guest path -> host path (Debian packages mt-st, mtx, tar)
TAPE_PROGRAMS = {"/bin/mt-st": "/usr/bin/mt-st", "/bin/mtx": "/usr/sbin/mtx", "/bin/gtar": "/usr/bin/tar"}

#: Under TCG on a busy host the kernel's IO-APIC timer check can miss its ticks and panic ("IO-APIC +
#: timer doesn't work!", seen once here while other tests loaded both cores): the tape guest skips it.
#: (Not for every guest: with it, the LIO guest's kernel oopsed in iscsit_stop_session during the
#: MC/S logout tests, 2 runs of 2; without it 2 of 2 passed.)
NO_TIMER_CHECK = "no_timer_check"

STEP_RE = re.compile(r"^TAPE-RC (\S+) (-?\d+)(?: (.*))?$", re.MULTILINE)
DONE_RE = re.compile(r"^TAPE-DONE\b", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class TapeImage:
    kernel: kernel_vm.KernelImage
    initramfs: Path  # the tape base archive (modules + programs), without /init


def ensure_tape_image() -> TapeImage:
    """kernel_vm's cached kernel plus a cached tape initramfs built from the same ``.deb``."""
    for tool in ("qemu-system-x86_64", "busybox", "mt-st", "mtx", "tar", "dpkg", "depmod"):
        peers.require_tool(tool)
    kernel = kernel_vm.ensure_kernel_image()
    files = [kernel_vm.BUSYBOX, *TAPE_PROGRAMS.values()]
    for prog in TAPE_PROGRAMS.values():
        files += kernel_vm.shared_libraries(prog)
    key = kernel_vm.inputs_key(TAPE_RECIPE_VERSION, kernel.version, ",".join(TAPE_MODULES), files=files)

    def build(modules_dir: Path, cpio: kernel_vm.CpioWriter) -> None:
        kernel_vm.add_busybox(cpio, ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "data", "etc"))
        kernel_vm.add_programs(cpio, TAPE_PROGRAMS)
        kernel_vm.add_modules(cpio, modules_dir, kernel.version, TAPE_MODULES)

    return TapeImage(kernel=kernel, initramfs=kernel_vm.cached_initramfs(kernel, "tape", key, build))


# --------------------------------------------------------------------------------------------------
# The guest's /init

INIT_PROLOGUE = (
    r"""#!/bin/busybox sh
# PID 1 of the tape guest. Prints TAPE-RC lines, then TAPE-DONE, and powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev; mount -t tmpfs tmpfs /tmp
now() { cut -d' ' -f1 /proc/uptime; }
finish() { echo; echo "TAPE-DONE $*"; sync; poweroff -f; sleep 60; }
fail() { echo "TAPE-VM $*"; }
"""
    + kernel_vm.LOAD_MODULES
    + r"""n=0
while [ $n -lt 100 ]; do
    ls /dev/nst$((DRIVES - 1)) >/dev/null 2>&1 && ls /sys/class/scsi_changer/* >/dev/null 2>&1 && break
    n=$((n+1)); sleep 0.1
done
for g in /sys/class/scsi_generic/*; do
    echo "TAPE-VM $(basename $g) type=$(cat $g/device/type) $(cat $g/device/vendor) $(cat $g/device/model)"
done
T=/dev/nst0
CH=$(for g in /sys/class/scsi_generic/*; do [ "$(cat $g/device/type)" = 8 ] && basename $g; done | head -n 1)
[ -c "$T" ] || finish "no /dev/nst0"
[ -n "$CH" ] || finish "no changer"
CH=/dev/$CH
"""
)

#: The T1 sequence of docs/RESEARCH.md §1. Environment: STEP_TIMEOUT (s) and the files under /data.
T1_SCENARIO = r"""
out() { tr '\r' '\n' < /tmp/out | sed 's/^/    /' | tail -n 25; }
# s NAME CMD...: one step, killed after STEP_TIMEOUT s; prints its output and TAPE-RC NAME rc
s() {
    name=$1; shift
    echo "TAPE-STEP $name: $*"
    t0=$(now)
    timeout -s KILL $STEP_TIMEOUT "$@" > /tmp/out 2>&1
    rc=$?; t1=$(now); out
    echo "TAPE-RC $name $rc ms=$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%d", (b-a)*1000}')"; return $rc
}
# v NAME OK DETAIL: a verdict step (rc 0 when OK is "0")
v() { echo "TAPE-RC $1 $2 $3"; }
# tellis NAME WANT: mt-st tell must say "At block WANT."
tellis() {
    timeout -s KILL $STEP_TIMEOUT mt-st -f $T tell > /tmp/out 2>&1; rc=$?; out
    got=$(sed -n 's/^At block \([0-9]*\)\..*/\1/p' /tmp/out)
    [ $rc -eq 0 ] && [ "$got" = "$2" ] && rc=0 || [ $rc -ne 0 ] || rc=1
    v "$1" $rc "want=$2 got=$got"
}
# readsum NAME BS WANT_SHA: dd from the current position up to the next filemark, sha256 must be WANT_SHA
readsum() {
    timeout -s KILL $STEP_TIMEOUT dd if=$T of=/tmp/rd bs=$2 > /tmp/out 2>&1; rc=$?; out
    got=$(sha256sum < /tmp/rd | cut -c1-16); rm -f /tmp/rd
    [ $rc -eq 0 ] && [ "$got" = "$3" ] && rc=0 || [ $rc -ne 0 ] || rc=1
    v "$1" $rc "want=$3 got=$got"
}
# readone NAME BS WANT_SHA: one block (dd count=1) must hash to WANT_SHA
readone() {
    timeout -s KILL $STEP_TIMEOUT dd if=$T of=/tmp/rd bs=$2 count=1 > /tmp/out 2>&1; rc=$?; out
    got=$(sha256sum < /tmp/rd | cut -c1-16); rm -f /tmp/rd
    [ $rc -eq 0 ] && [ "$got" = "$3" ] && rc=0 || [ $rc -ne 0 ] || rc=1
    v "$1" $rc "want=$3 got=$got"
}
# blankread NAME: a read at EOD/blank medium returns no data within 2 s (BLANK CHECK, never a hang)
blankread() {
    t0=$(now)
    timeout -s KILL 10 dd if=$T of=/tmp/rd bs=65536 count=1 > /tmp/out 2>&1; rc=$?; out
    t1=$(now); bytes=$(stat -c %s /tmp/rd 2>/dev/null || echo none); rm -f /tmp/rd
    ms=$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%d", (b-a)*1000}')
    ok=1; [ "$bytes" = 0 ] && [ $ms -lt 2000 ] && ok=0
    v "$1" $ok "dd_rc=$rc bytes=$bytes ms=$ms"
}
sha() { sha256sum < "$1" | cut -c1-16; }
blk() { dd if="$1" bs=$2 skip=$3 count=1 2>/dev/null | sha256sum | cut -c1-16; }
# the archives the tape must hold, made on tmpfs first (same inputs: byte-identical to tar's tape output)
cd /data
gtar cf /tmp/a.tar -b 20 f0.bin f1.bin;  N0=$(( $(stat -c %s /tmp/a.tar) / 10240 ))
gtar cf /tmp/b.tar -b 128 f1.bin f2.bin; N1=$(( $(stat -c %s /tmp/b.tar) / 65536 ))
gtar cf /tmp/c.tar -b 512 f2.bin f3.bin; N2=$(( $(stat -c %s /tmp/c.tar) / 262144 ))
gtar cf /tmp/d.tar -b 20 f0.bin f3.bin;  N3=$(( $(stat -c %s /tmp/d.tar) / 512 ))
gtar cf /tmp/t.tar -b 128 text.bin;     NT=$(( $(stat -c %s /tmp/t.tar) / 65536 ))
cd /
echo "TAPE-VM blocks a=$N0x10k b=$N1x64k c=$N2x256k d=$N3x512"

# --- the library: which cartridge is where
mtx_slots() {  # prints "slot state barcode" per storage slot (no import/export) from /tmp/mtx
    sed -n 's/^ *Storage Element \([0-9]*\):\(Full\|Empty\)\( *:VolumeTag *= *\([^ ]*\)\)\{0,1\}.*/\1 \2 \4/p' /tmp/mtx
}
s mtx-inquiry mtx -f $CH inquiry
s mtx-status mtx -f $CH status; cp /tmp/out /tmp/mtx
echo "TAPE-BARCODES $(sed -n 's/.*VolumeTag *= *\([^ ]*\).*/\1/p' /tmp/mtx | tr '\n' ' ')"
if grep -q "Data Transfer Element 0:Full" /tmp/mtx; then
    A=$(sed -n 's/.*Data Transfer Element 0:Full (Storage Element \([0-9]*\) Loaded).*/\1/p' /tmp/mtx)
    [ -n "$A" ] || A=$(mtx_slots | awk '$2=="Empty"{print $1; exit}')
else
    A=$(mtx_slots | awk '$2=="Full"{print $1; exit}')
    s mtx-load-first mtx -f $CH load $A 0
fi
B=$(mtx_slots | awk -v a=$A '$2=="Full" && $1!=a {print $1; exit}')
E=$(mtx_slots | awk -v a=$A '$2=="Empty" && $1!=a {print $1; exit}')
echo "TAPE-VM slots: A=$A (in the drive) B=$B (blank) E=$E (empty)"

# --- cartridge A: archives at 10 KiB, 64 KiB, 256 KiB variable blocks and 512-byte fixed blocks
s status-bot mt-st -f $T status && { grep -q ' BOT ' /tmp/out; v status-at-bot $? ""; }
s rewind mt-st -f $T rewind
s tar-10k gtar cf $T -b 20 -C /data f0.bin f1.bin
tellis tell-10k $((N0 + 1))
s tar-64k gtar cf $T -b 128 -C /data f1.bin f2.bin
tellis tell-64k $((N0 + N1 + 2))
s tar-256k gtar cf $T -b 512 -C /data f2.bin f3.bin
tellis tell-256k $((N0 + N1 + N2 + 3))
s setblk-512 mt-st -f $T setblk 512
s tar-fixed512 gtar cf $T -b 20 -C /data f0.bin f3.bin
tellis tell-fixed512 $((N0 + N1 + N2 + N3 + 4))
s setblk-0 mt-st -f $T setblk 0
s eod mt-st -f $T eod
tellis tell-eod $((N0 + N1 + N2 + N3 + 4))
s rewind-read mt-st -f $T rewind
readsum read-10k 10240 $(sha /tmp/a.tar)
readsum read-64k 65536 $(sha /tmp/b.tar)
readsum read-256k 262144 $(sha /tmp/c.tar)
s setblk-512-read mt-st -f $T setblk 512
readsum read-fixed512 10240 $(sha /tmp/d.tar)
s setblk-0-read mt-st -f $T setblk 0
s rewind-extract mt-st -f $T rewind
s fsf-extract mt-st -f $T fsf 1
mkdir -p /tmp/x
s extract-64k gtar xf $T -b 128 -C /tmp/x
cmp -s /tmp/x/f1.bin /data/f1.bin && cmp -s /tmp/x/f2.bin /data/f2.bin; v extract-64k-equal $? ""
rm -rf /tmp/x
# LOCATE: block K of the tape is block 2 of the 64 KiB archive, block 5 of the 10 KiB one
s seek-64k mt-st -f $T seek $((N0 + 1 + 2))
tellis tell-after-seek $((N0 + 1 + 2))
readone seek-read-64k 65536 $(blk /tmp/b.tar 65536 2)
s seek-10k mt-st -f $T seek 5
readone seek-read-10k 10240 $(blk /tmp/a.tar 10240 5)
# SPACE: filemarks and blocks, forward and back
s rewind-space mt-st -f $T rewind
s fsf-2 mt-st -f $T fsf 2
tellis tell-fsf-2 $((N0 + N1 + 2))
s bsf-1 mt-st -f $T bsf 1
tellis tell-bsf-1 $((N0 + N1 + 1))
s fsf-1 mt-st -f $T fsf 1
s fsr-3 mt-st -f $T fsr 3
tellis tell-fsr-3 $((N0 + N1 + 2 + 3))
s bsr-2 mt-st -f $T bsr 2
tellis tell-bsr-2 $((N0 + N1 + 2 + 1))
readone bsr-read-256k 262144 $(blk /tmp/c.tar 262144 1)
s offline-a mt-st -f $T offline
s status-offline mt-st -f $T status
grep -q 'DR_OPEN' /tmp/out; v offline-no-tape $? ""
s mtx-unload-a mtx -f $CH unload $A 0

# --- cartridge B: blank when loaded; written, erased, read again
s mtx-load-b mtx -f $CH load $B 0
s status-b mt-st -f $T status; grep -q ' BOT ' /tmp/out; v status-b-at-bot $? ""
blankread blank-read-b
s rewind-b mt-st -f $T rewind
s tar-b gtar cf $T -b 128 -C /data f1.bin f2.bin
tellis tell-b $((N1 + 1))
s rewind-b2 mt-st -f $T rewind
readsum read-b 65536 $(sha /tmp/b.tar)
# data compression (mode page 0x0F DCE): a compressible archive written compressed reads back the same
s compression-on mt-st -f $T compression 1
s tar-compressed gtar cf $T -b 128 -C /data text.bin
tellis tell-compressed $((N1 + 1 + NT + 1))
s compression-off mt-st -f $T compression 0
s rewind-compressed mt-st -f $T rewind
s fsf-compressed mt-st -f $T fsf 1
readsum read-compressed 65536 $(sha /tmp/t.tar)
s rewind-erase mt-st -f $T rewind
s erase mt-st -f $T erase
s rewind-after-erase mt-st -f $T rewind
blankread erase-read
s offline-b mt-st -f $T offline
s mtx-unload-b mtx -f $CH unload $B 0

# --- cartridge A moved to another slot, loaded again: its archives are intact
s mtx-transfer-a mtx -f $CH transfer $A $E
s mtx-load-a mtx -f $CH load $E 0
s status-a2 mt-st -f $T status; grep -q ' BOT ' /tmp/out; v status-a2-at-bot $? ""
readsum reload-read-10k 10240 $(sha /tmp/a.tar)
readsum reload-read-64k 65536 $(sha /tmp/b.tar)
s offline-a2 mt-st -f $T offline
s mtx-unload-a2 mtx -f $CH unload $E 0
# --- the changer through the ch driver, and its second drive (the target's next tape LUN, /dev/nst1)
s mtx-status-sch0 mtx -f /dev/sch0 status
s mtx-load-drive1 mtx -f $CH load $E 1
T=/dev/nst1
s status-drive1 mt-st -f $T status; grep -q ' BOT ' /tmp/out; v status-drive1-at-bot $? ""
readsum drive1-read-10k 10240 $(sha /tmp/a.tar)
s offline-drive1 mt-st -f $T offline
T=/dev/nst0
s mtx-unload-drive1 mtx -f $CH unload $E 1
s mtx-status-end mtx -f $CH status
echo "TAPE-BARCODES-END $(sed -n 's/.*VolumeTag *= *\([^ ]*\).*/\1/p' /tmp/out | tr '\n' ' ')"
finish ok
"""


def init_script(scenario: str, env: Mapping[str, str]) -> str:
    """``/init``: the prologue, ``env`` as shell variables, then ``scenario``."""
    assigns = "".join(f"{k}='{v}'\n" for k, v in env.items() if "'" not in v)
    shebang, _, prologue = INIT_PROLOGUE.partition("\n")
    return f'{shebang}\n{assigns}{prologue}{scenario}\nfinish "scenario ended early"\n'


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    rc: int
    detail: str


@dataclasses.dataclass(frozen=True)
class TapeRun:
    steps: list[Step]
    console: str
    elapsed: float
    done: bool  # the guest reached the end of its scenario

    def rc(self, name: str) -> int | None:
        for step in self.steps:
            if step.name == name:
                return step.rc
        return None

    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.rc != 0]

    def line(self, prefix: str) -> str:
        m = re.search(rf"^{re.escape(prefix)} ?(.*)$", self.console, re.MULTILINE)
        return m.group(1).strip() if m else ""

    def report(self) -> str:
        return "\n".join(f"{s.rc:4d} {s.name} {s.detail}".rstrip() for s in self.steps)


def run_tape_vm(
    image: TapeImage,
    urls: Sequence[str],
    files: Mapping[str, bytes],
    work: Path,
    console_log: Path,
    *,
    scenario: str = T1_SCENARIO,
    step_timeout: int = 60,
    timeout: float = 300.0,
    initiator_name: str = "iqn.2026-11.org.cistern.test:tape-vm",
) -> TapeRun:
    """Boot the tape guest with one ``scsi-generic`` device per ``iscsi://`` URL, in order: the drives
    (``/dev/nst0``, ``/dev/nst1``...) then the changer.

    ``files`` (guest path -> bytes) go into the guest's initramfs (e.g. ``/data/f0.bin``). QEMU is killed
    by its PID after ``timeout`` seconds; the steps the guest reported until then are returned.
    """
    qemu = peers.require_tool("qemu-system-x86_64")
    env = {"STEP_TIMEOUT": str(step_timeout), "DRIVES": str(max(1, len(urls) - 1))}
    initrd = kernel_vm.guest_initramfs(
        image.initramfs, init_script(scenario, env), files, work / "tape-initrd.gz"
    )
    devices: list[str] = []
    for i, url in enumerate(urls):
        devices += ["-drive", f"file={url},if=none,id=lu{i},format=raw,cache=none"]
        devices += ["-device", f"scsi-generic,drive=lu{i},bus=vs0.0"]
    cmd = [
        qemu, "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "512",
        "-kernel", str(image.kernel.vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 loglevel=4 {NO_TIMER_CHECK} rdinit=/init",
        "-iscsi", f"initiator-name={initiator_name}",
        "-device", "virtio-scsi-pci,id=vs0,romfile=", *devices,
        "-nic", "none", "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
        "-no-reboot", "-nodefaults",
    ]  # fmt: skip
    run = kernel_vm.run_qemu(cmd, console_log, timeout)
    console, elapsed = run.console, run.elapsed
    steps = [Step(m.group(1), int(m.group(2)), (m.group(3) or "").strip()) for m in STEP_RE.finditer(console)]
    return TapeRun(steps=steps, console=console, elapsed=elapsed, done=DONE_RE.search(console) is not None)


#: Every step name of :data:`T1_SCENARIO` (the test asserts each one ran and ended with rc 0), except
#: ``mtx-load-first``, which runs only when the drive starts empty.
T1_STEPS = tuple(
    dict.fromkeys(
        m.group(2)
        for m in re.finditer(
            r"(?:^|[;&{|]|\s)(s|tellis|readsum|readone|blankread|v) ([a-z][a-z0-9-]+)", T1_SCENARIO, re.M
        )
        if m.group(2) != "mtx-load-first"
    )
)


# --------------------------------------------------------------------------------------------------
# tgt's virtual tape library, the reference (fujita/tgt doc/README.vtl, recipe in the research note)

TGT_VTL_IQN = "iqn.2026-11.org.cistern.test:tgt-vtl"


def tgt_vtl(
    tgt: peers.Tgt, media: Path, barcodes: Sequence[str], size_mib: int = 64, *, create: bool = True
) -> tuple[str, str]:
    """A VTL on a running ``tgt``: LUN 1 a tape drive holding ``barcodes[0]``, LUN 2 the changer.

    Changer elements: drive at address 1 (tid 1 LUN 1), picker at 2, storage slots from 3: slot 3 empty
    (the loaded cartridge's home), then ``barcodes[1:]``, then one empty slot. ``create=False`` reuses the
    cartridge files of an earlier run (a restart). Returns the drive's and the changer's ``iscsi://`` URLs.
    """
    tgtimg = peers.require_tool("tgtimg")
    media.mkdir(parents=True, exist_ok=True)
    for code in barcodes if create else ():
        peers.run(
            [tgtimg, "--op", "new", "--device-type", "tape", "--barcode", code, "--size", str(size_mib),
             "--type", "data", "--file", str(media / code)],
            timeout=60,
        )  # fmt: skip
    smc = media / "smc"
    smc.write_bytes(bytes(1024))
    tid = tgt.new_target(TGT_VTL_IQN)
    lu = ["--mode", "logicalunit", "--tid", str(tid)]
    tgt.tgtadm(*lu, "--op", "new", "--lun", "1", "-b", str(media / barcodes[0]), "--device-type=tape")
    tgt.tgtadm(*lu, "--op", "new", "--lun", "2", "-b", str(smc), "--device-type=changer")
    upd = [*lu, "--op", "update", "--lun", "2", "--params"]
    tgt.tgtadm(*upd, f"media_home={media}")
    tgt.tgtadm(*upd, "element_type=4,start_address=1,quantity=1")
    tgt.tgtadm(*upd, f"element_type=4,address=1,tid={tid},lun=1")
    tgt.tgtadm(*upd, "element_type=1,start_address=2,quantity=1")
    tgt.tgtadm(*upd, f"element_type=2,start_address=3,quantity={len(barcodes) + 1}")
    for i, code in enumerate(barcodes[1:]):
        tgt.tgtadm(*upd, f"element_type=2,address={4 + i},barcode={code},sides=1")
    tgt.bind_all(tid)
    return tgt.url(TGT_VTL_IQN, 1), tgt.url(TGT_VTL_IQN, 2)
