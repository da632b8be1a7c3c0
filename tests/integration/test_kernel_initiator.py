"""cistern's target under the Linux kernel iSCSI initiator (iscsi_tcp + open-iscsi's iscsistart) in a VM.

One VM boot (QEMU TCG, see ``kernel_vm``) covers:

* target A, one-way CHAP, no digests, solicited data only (InitialR2T=Yes, ImmediateData=No, 256 KiB
  bursts): a login with a wrong secret is refused, the right one works, the disk appears as /dev/sda and
  4 MiB written with O_DIRECT read back identical;
* target B, mutual CHAP, HeaderDigest=CRC32C and DataDigest=CRC32C (the only real peer here that does data
  digests), unsolicited and immediate data: a login whose expected target secret is wrong is abandoned by
  the initiator, the right one works; 64 MiB of a known pattern are written at offset 64 MiB and read back
  (O_DIRECT, md5), then an ext4 file system on the first 64 MiB is made, mounted, written, unmounted,
  checked with ``fsck.ext4 -n -f``, mounted again after dropping caches and its files read back; the
  LUN is thin, so ``blkdiscard`` (UNMAP) of 2 MiB between written data must read back as zeros.

On the host the LUN files must then hold the pattern at the right offsets and the file written in the
guest (read with ``debugfs``): the data reached the target's storage. The guest's console, the target's
log and the timings go to the test's artifacts folder.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kernel_vm
import peers
import pytest
from cistern_proc import lun_toml, target_toml

pytestmark = pytest.mark.peers

INITIATOR = "iqn.2026-11.org.cistern.test:kernel-vm"
IQN_A = "iqn.2026-11.org.cistern.test:kernel-oneway"
IQN_B = "iqn.2026-11.org.cistern.test:kernel-mutual"
CHAP_A = ("kernel-a", "secret-a-0123456789")
CHAP_B = ("kernel-b", "secret-b-0123456789")
MUTUAL_B = ("target-b", "tsecret-b-0123456789")
MIB = 1 << 20
CHUNK = MIB
A_CHUNKS = 4  # written at offset 0 of LUN A
B_CHUNKS = 64  # written at offset B_OFFSET of LUN B
B_OFFSET = 64 * MIB
DISCARD_AT = 128 * MIB  # 4 chunks written, the middle 2 MiB discarded (LUN B is 132 MiB)
HELLO = "written by the Linux kernel initiator through cistern"
VM_TIMEOUT = 240.0
#: Target A: solicited data only (InitialR2T=Yes, ImmediateData=No, 256 KiB bursts: a 1 MiB write takes
#: four R2Ts). Target B: unsolicited and immediate data in 1 MiB bursts, with digests.
PARAMS_A: dict[str, object] = {"initial_r2t": True, "immediate_data": False, "max_burst_length": 262144}
PARAMS_B: dict[str, object] = {
    "header_digest": ["CRC32C", "None"],
    "data_digest": ["CRC32C", "None"],
    "initial_r2t": False,
    "immediate_data": True,
    "first_burst_length": 262144,
    "max_burst_length": 1048576,
    "max_recv_data_segment_length": 262144,
}

SCENARIO = r"""
# a lost connection fails outstanding I/O after 20 s instead of the default 120 s
BOUND="-P node.session.timeo.replacement_timeout=20"
# $1 expected disk, rest: iscsistart arguments. Fails unless the login works and the disk appears.
login() {
    disk=$1; shift
    step "login $disk"
    timeout 60 iscsistart -i "$INITIATOR" -g 1 -a 10.0.2.100 -p 3260 $BOUND "$@" > /tmp/login.log 2>&1
    rc=$?
    [ $rc -eq 0 ] || { cat /tmp/login.log; fail "iscsistart for $disk exited $rc"; }
    n=0
    while [ ! -b /dev/$disk ]; do
        n=$((n+1)); [ $n -gt 300 ] && fail "/dev/$disk did not appear"; sleep 0.1
    done
    step "disk $disk $(cat /sys/block/$disk/size) sectors"
}
# A login that must be refused: $1 label, rest: iscsistart arguments.
refused() {
    label=$1; shift
    step "expect refusal: $label"
    timeout 60 iscsistart -i "$INITIATOR" -g 1 -a 10.0.2.100 -p 3260 $BOUND "$@" > /tmp/refused.log 2>&1
    rc=$?
    [ $rc -ne 0 ] || fail "$label: login succeeded"
    [ $rc -ne 124 ] && [ $rc -ne 143 ] || fail "$label: iscsistart hung"
    step "refused ($label): iscsistart exited $rc: $(grep -v '^$' /tmp/refused.log | tail -n 1)"
}
# $1 chunks, $2 file: chunk i is /pattern.chunk rotated left by i*16411 bytes, its first 32 bytes a label.
make_pattern() {
    i=0; : > "$2"
    while [ $i -lt $1 ]; do
        off=$(( (i * 16411) % 1048576 ))
        { printf '%-31s\n' "CISTERN-VM-CHUNK-$i"
          { tail -c +$((off + 1)) /pattern.chunk; head -c $off /pattern.chunk; } | tail -c +33; } >> "$2"
        i=$((i + 1))
    done
}
# $1 disk, $2 pattern file, $3 offset in MiB: O_DIRECT write, O_DIRECT read back, compare md5.
write_verify() {
    mib=$(( $(stat -c %s "$2") / 1048576 ))
    want=$(md5sum < "$2" | cut -d' ' -f1)
    t0=$(now)
    dd if="$2" of=/dev/$1 bs=1M seek=$3 oflag=direct conv=fsync 2>/tmp/dd.log || { cat /tmp/dd.log; fail "write $1"; }
    t1=$(now)
    dd if=/dev/$1 of=/tmp/back.img bs=1M skip=$3 count=$mib iflag=direct 2>/tmp/dd.log || { cat /tmp/dd.log; fail "read $1"; }
    t2=$(now)
    got=$(md5sum < /tmp/back.img | cut -d' ' -f1)
    rm /tmp/back.img
    [ "$got" = "$want" ] || fail "$1 read back md5 $got, wrote $want"
    step "$1 ${mib}MiB write $t0..$t1 s, read ..$t2 s, md5 $got"
    MD5=$got
}
digests() {  # $1 session number -> HeaderDigest/DataDigest of its connection (sysfs: 0 None, 1 CRC32C)
    c=/sys/class/iscsi_connection/connection$1:0
    echo "$(cat $c/header_digest)/$(cat $c/data_digest)" | sed 's/0/None/g; s/1/CRC32C/g'
}
negotiated() {  # $1 session number -> what the kernel negotiated, as key=value words
    s=/sys/class/iscsi_session/session$1; c=/sys/class/iscsi_connection/connection$1:0
    echo "InitialR2T=$(cat $s/initial_r2t) ImmediateData=$(cat $s/immediate_data)" \
        "FirstBurstLength=$(cat $s/first_burst_len) MaxBurstLength=$(cat $s/max_burst_len)" \
        "MaxRecvDataSegmentLength=$(cat $c/max_recv_dlength) MaxXmitDataSegmentLength=$(cat $c/max_xmit_dlength)"
}

# --- target A: one-way CHAP, no digests
refused wrong-secret -t "$IQN_A" -u "$USER_A" -w "wrong-secret-0123456789"
login sda -t "$IQN_A" -u "$USER_A" -w "$SECRET_A"
readlink -f /sys/block/sda | grep -q /session || fail "sda is not an iSCSI disk"
make_pattern $A_CHUNKS /tmp/a.img
write_verify sda /tmp/a.img 0
MD5_A=$MD5
rm /tmp/a.img
SESS_A=$(ls /sys/class/iscsi_session/ | sed -n 's/session//p' | sort -n | tail -1)

# --- target B: mutual CHAP, CRC32C header and data digests
DIG="-P node.conn[0].iscsi.HeaderDigest=CRC32C -P node.conn[0].iscsi.DataDigest=CRC32C"
refused wrong-target-secret -t "$IQN_B" -u "$USER_B" -w "$SECRET_B" -U "$USER_TB" -W "not-the-target-secret-0" $DIG
login sdb -t "$IQN_B" -u "$USER_B" -w "$SECRET_B" -U "$USER_TB" -W "$SECRET_TB" $DIG
SESS_B=$(ls /sys/class/iscsi_session/ | sed -n 's/session//p' | sort -n | tail -1)
DIG_A=$(digests $SESS_A)
DIG_B=$(digests $SESS_B)
step "digests A=$DIG_A B=$DIG_B"
step "session A: $(negotiated $SESS_A)"
step "session B: $(negotiated $SESS_B)"
step "crc32c driver: $(grep -A2 'name *: crc32c$' /proc/crypto | sed -n 's/driver *: //p' | tr '\n' ' ')"
make_pattern $B_CHUNKS /tmp/b.img
write_verify sdb /tmp/b.img $B_OFFSET_MIB
MD5_B=$MD5
rm /tmp/b.img

# UNMAP through the kernel's discard path: 4 chunks at DISCARD_AT_MIB, the middle 2 MiB discarded; a thin
# LU has LBPRZ=1, so they must read back as zeros while the chunks around them stay
PROV=$(cat /sys/block/sdb/device/scsi_disk/*/provisioning_mode)
step "sdb provisioning_mode=$PROV discard_max_bytes=$(cat /sys/block/sdb/queue/discard_max_bytes)"
make_pattern 4 /tmp/d.img
dd if=/tmp/d.img of=/dev/sdb bs=1M seek=$DISCARD_AT_MIB oflag=direct conv=fsync 2>/dev/null || fail "write sdb"
blkdiscard -o $((DISCARD_AT_MIB * 1048576 + 1048576)) -l 2097152 /dev/sdb || fail "blkdiscard exited $?"
{ head -c 1048576 /tmp/d.img; head -c 2097152 /dev/zero; tail -c 1048576 /tmp/d.img; } > /tmp/want.img
dd if=/dev/sdb of=/tmp/got.img bs=1M skip=$DISCARD_AT_MIB count=4 iflag=direct 2>/dev/null || fail "read sdb"
cmp -s /tmp/want.img /tmp/got.img || fail "discarded range does not read back as zeros"
rm /tmp/d.img /tmp/want.img /tmp/got.img
step "discard ok"

step mkfs
mkfs.ext4 -F -q -L cistern /dev/sdb 64M > /tmp/mkfs.log 2>&1 || { cat /tmp/mkfs.log; fail "mkfs.ext4"; }
mount -t ext4 /dev/sdb /mnt || fail "mount"
echo "$HELLO" > /mnt/hello.txt || fail "write hello.txt"
cp /pattern.chunk /mnt/chunk.bin || fail "write chunk.bin"
sync
umount /mnt || fail "umount"
step fsck
fsck.ext4 -n -f /dev/sdb > /tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck.ext4 -n exited $?"; }
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro /dev/sdb /mnt || fail "mount again"
FILE_MD5=$(md5sum < /mnt/chunk.bin | cut -d' ' -f1)
[ "$FILE_MD5" = "$(md5sum < /pattern.chunk | cut -d' ' -f1)" ] || fail "chunk.bin read back differs"
[ "$(cat /mnt/hello.txt)" = "$HELLO" ] || fail "hello.txt read back differs"
umount /mnt || fail "umount again"
step done
dmesg | grep -i -E "conn error|digest|iscsi.*(fail|error)|I/O error" | tail -n 20
# the refused logins' connections were closed by design; count errors on the two real sessions only
CONN_ERRORS=$(dmesg | grep -c -E "connection($SESS_A|$SESS_B):0: detected conn error")
S=/sys/class/iscsi_session
result ok r2t_a=$(cat $S/session$SESS_A/initial_r2t) imm_a=$(cat $S/session$SESS_A/immediate_data) \
    burst_a=$(cat $S/session$SESS_A/max_burst_len) r2t_b=$(cat $S/session$SESS_B/initial_r2t) sessions=$SESS_A,$SESS_B digests_a=$DIG_A digests_b=$DIG_B md5_a=$MD5_A md5_b=$MD5_B ext4=ok fsck=clean provisioning=$PROV discard=ok \
    conn_errors=$CONN_ERRORS io_errors=$(dmesg | grep -c "I/O error") uptime=$(now)
"""


def _pattern_chunk() -> bytes:
    return random.Random(0xC1573E).randbytes(CHUNK)


def _pattern(chunks: int, base: bytes) -> bytes:
    """What the guest's make_pattern writes: rotated copies of ``base`` with a 32-byte label each."""
    out = bytearray()
    for i in range(chunks):
        off = (i * 16411) % CHUNK
        rotated = base[off:] + base[:off]
        out += f"{'CISTERN-VM-CHUNK-' + str(i):<31}\n".encode() + rotated[32:]
    return bytes(out)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def vm_image() -> kernel_vm.KernelImage:
    for tool in ("qemu-system-x86_64", "socat", "iscsistart", "busybox", "mke2fs", "debugfs", "ip"):
        peers.require_tool(tool)
    return kernel_vm.ensure_kernel_image()


@pytest.fixture
def netns() -> Iterator[str]:
    with kernel_vm.network_namespace() as name:
        yield name


def _tls_setup(config: str, port: int, folder: Path) -> tuple[str, str]:
    """Certificates for a TLS portal (CA, target naming both IQNs, client naming INITIATOR); returns the
    config with ``[tls]`` and ``tls = true`` on the targets, and socat's OPENSSL leg (commas doubled)."""
    from cistern.security import pki

    ca, key = folder / "ca.pem", folder / "ca.key"
    pki.create_ca(ca, key)
    pki.issue(ca, key, folder / "target.pem", folder / "target.key", common_name=IQN_A, names=[IQN_B], server=True)
    pki.issue(ca, key, folder / "client.pem", folder / "client.key", common_name=INITIATOR, server=False)
    tls = f'[tls]\ncertificate = "{folder / "target.pem"}"\nkey = "{folder / "target.key"}"\nca = "{ca}"\n\n'
    portal = f'portals = ["127.0.0.1:{port}"]'
    config = tls + config.replace(portal, portal + "\ntls = true")
    leg = (
        f"OPENSSL:127.0.0.1:{port},,cafile={ca},,cert={folder / 'client.pem'},,key={folder / 'client.key'},,"
        f"commonname={IQN_A},,openssl-min-proto-version=TLS1.3,,nodelay"
    )
    return config, leg


@pytest.mark.timeout(VM_TIMEOUT + 300)  # the first run also downloads the kernel and builds the initramfs
@pytest.mark.parametrize("leg", ["tcp", "tls"])
def test_kernel_initiator_chap_digests_io_and_ext4(
    vm_image: kernel_vm.KernelImage, netns: str, tmp_path: Path, artifacts_dir: Path, leg: str
) -> None:
    """``tls``: the guest's iscsi_tcp still speaks plain TCP to QEMU, but the host-side leg QEMU's guestfwd
    opens is ``socat OPENSSL`` to a cistern TLS portal (mutual TLS, CHAP and digests inside); a tcpdump of
    that leg must contain neither the InitiatorName nor the data written."""
    port = 3260  # the namespace is ours alone
    lun_a, lun_b = tmp_path / "lun-a.img", tmp_path / "lun-b.img"
    config = target_toml(
        IQN_A,
        port,
        lun_toml(0, "file", path=lun_a, size="16M"),
        acl=[INITIATOR],
        chap=CHAP_A,
        params=PARAMS_A,
    ) + target_toml(
        IQN_B,
        port,
        lun_toml(0, "file", path=lun_b, size="132M", thin=True),
        acl=[INITIATOR],
        chap=CHAP_B,
        mutual=MUTUAL_B,
        params=PARAMS_B,
    )
    base = _pattern_chunk()
    env = {
        "INITIATOR": INITIATOR,
        "IQN_A": IQN_A,
        "IQN_B": IQN_B,
        "USER_A": CHAP_A[0],
        "SECRET_A": CHAP_A[1],
        "USER_B": CHAP_B[0],
        "SECRET_B": CHAP_B[1],
        "USER_TB": MUTUAL_B[0],
        "SECRET_TB": MUTUAL_B[1],
        "A_CHUNKS": str(A_CHUNKS),
        "B_CHUNKS": str(B_CHUNKS),
        "B_OFFSET_MIB": str(B_OFFSET // MIB),
        "DISCARD_AT_MIB": str(DISCARD_AT // MIB),
        "HELLO": HELLO,
    }
    initrd = kernel_vm.guest_initramfs(
        vm_image.base_initramfs,
        kernel_vm.init_script(SCENARIO, env),
        {"/pattern.chunk": base},
        tmp_path / "initrd.gz",
    )
    host_leg = None
    if leg == "tls":
        config, host_leg = _tls_setup(config, port, tmp_path)
    log = artifacts_dir / "cistern.log"
    log.unlink(missing_ok=True)  # the artifacts folder outlives runs; keep this run's log only
    target = kernel_vm.NetnsCisternTarget(config, tmp_path / "target", log, port=port, netns=netns)
    capture = artifacts_dir / "tls-leg.pcap"
    started = time.monotonic()
    with target:
        dump = None
        if leg == "tls":
            capture.unlink(missing_ok=True)
            dump = subprocess.Popen(
                ["ip", "netns", "exec", netns, peers.require_tool("tcpdump"), "-i", "lo", "-U", "-s", "0",
                 "-w", str(capture), "tcp", "port", str(port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(1.0)  # tcpdump is listening before the guest connects
        try:
            result = kernel_vm.run_vm(
                vm_image,
                initrd,
                netns=netns,
                target_port=port,
                console_log=artifacts_dir / "console.log",
                timeout=VM_TIMEOUT,
                host_leg=host_leg,
            )
        finally:
            if dump is not None:
                time.sleep(0.5)
                dump.send_signal(signal.SIGINT)
                dump.wait(10)
        target_cpu = _cpu_seconds(target.proc.pid) if target.proc else 0.0
    total = time.monotonic() - started
    (artifacts_dir / "timing.txt").write_text(
        f"vm {result.elapsed:.1f}s total {total:.1f}s target cpu {target_cpu:.1f}s\n"
    )
    assert result.ok, f"guest reported failure: {result.details}\n{result.console[-6000:]}"
    assert result.field("digests_a") == "None/None"
    assert result.field("digests_b") == "CRC32C/CRC32C"
    # A: solicited writes only; B: unsolicited data allowed
    assert [result.field(k) for k in ("r2t_a", "imm_a", "burst_a", "r2t_b")] == ["1", "0", "262144", "0"]
    assert result.field("ext4") == "ok" and result.field("fsck") == "clean"
    assert (result.field("conn_errors"), result.field("io_errors")) == ("0", "0"), result.console[-4000:]

    # The data reached the target's storage, at the offsets the guest wrote.
    want_a = _pattern(A_CHUNKS, base)
    want_b = _pattern(B_CHUNKS, base)
    assert result.field("md5_a") == hashlib.md5(want_a).hexdigest()
    assert result.field("md5_b") == hashlib.md5(want_b).hexdigest()
    with open(lun_a, "rb") as f:
        assert f.read(len(want_a)) == want_a
    with open(lun_b, "rb") as f:
        f.seek(B_OFFSET)
        assert f.read(len(want_b)) == want_b
    assert result.field("provisioning") == "unmap" and result.field("discard") == "ok"
    four = _pattern(4, base)
    with open(lun_b, "rb") as f:
        f.seek(DISCARD_AT)
        assert f.read(4 * MIB) == four[:MIB] + bytes(2 * MIB) + four[3 * MIB :]
    debugfs = shutil.which("debugfs") or "/usr/sbin/debugfs"
    hello = peers.run([debugfs, "-R", "cat /hello.txt", str(lun_b)], timeout=60).stdout
    assert hello.strip() == HELLO
    assert "Traceback" not in log.read_text(errors="replace")
    if leg == "tls":
        wire = capture.read_bytes()
        assert len(wire) > 8 * MIB, f"the capture holds only {len(wire)} bytes"  # the I/O went through it
        assert INITIATOR.encode() not in wire and b"InitiatorName=" not in wire
        assert HELLO.encode() not in wire and base[64:4096] not in wire and want_a[:4096] not in wire
        text = log.read_text(errors="replace")
        assert "certificate rejected" not in text and "no client certificate" not in text
        capture.unlink()  # ~140 MB; kept only when an assertion above failed
