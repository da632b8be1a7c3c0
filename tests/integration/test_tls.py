"""TLS portals with real peers (issue 12, "Must show" 1 and 3).

One ``cistern serve`` per module with a plaintext portal (tag 1) and a TLS portal (tag 2) on the same
target, mutual TLS against a private CA made by ``cistern tls`` and :mod:`cistern.security.pki`, and a CRL.
libiscsi's tools and ``iscsi-test-cu`` reach the TLS portal through a ``socat OPENSSL`` client leg (they
speak plain TCP to socat on loopback; socat speaks TLS 1.3 with the initiator certificate), and must pass
the same tests as over plaintext.  Plaintext, wrong-CA, certificate-less, revoked and expired clients are
refused before any iSCSI PDU, each with one log line naming the peer and the reason.  Our initiator speaks
TLS natively, to cistern and to tgt behind ``socat OPENSSL-LISTEN``; a certificate rotation (SIGHUP) keeps
a running session up while new connections get the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

from cistern.initiator import TlsConfig, connect, discover
from cistern.initiator.errors import IscsiError
from cistern.security import pki

ROOT = Path(__file__).resolve().parents[2]
IQN = "iqn.2024-01.org.cistern.test:tls"
INITIATOR = "iqn.2024-01.org.cistern.test:tls-client"
INITIATOR_2 = "iqn.2024-01.org.cistern.test:tls-client-2"  # iscsi-test-cu's second initiator (-I)
SUITES = "ALL.Inquiry,ALL.TestUnitReady,ALL.ReadCapacity16,ALL.Read10,ALL.Write16,ALL.iSCSIcmdsn,ALL.iSCSIResiduals"


@dataclass
class Pki:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name


@dataclass
class TlsTarget:
    proc: CisternTarget
    plain_port: int
    tls_port: int
    pki: Pki

    @property
    def log(self) -> str:
        """The target's log with the console's line wrapping undone (whitespace runs become one space)."""
        return " ".join(self.proc.log_path.read_text(errors="replace").split())


def _cli(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cistern", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The README's three commands, plus what the refusal tests need (a second CA, revoked and expired)."""
    folder = tmp_path_factory.mktemp("pki")
    _cli("tls", "ca", cwd=folder)
    _cli("tls", "target", IQN, "--host", "127.0.0.1", "--host", "localhost", cwd=folder)
    _cli("tls", "initiator", INITIATOR, cwd=folder)
    ca, key = folder / "ca.pem", folder / "ca.key"
    # libiscsi's iscsi-test-cu logs in as two initiators: one certificate naming both
    pki.issue(
        ca,
        key,
        folder / "cu.pem",
        folder / "cu.key",
        common_name=INITIATOR,
        names=[INITIATOR_2],
        server=False,
    )
    pki.issue(ca, key, folder / "revoked.pem", folder / "revoked.key", common_name=INITIATOR, server=False)
    now = datetime.datetime.now(datetime.UTC)
    pki.issue(
        ca,
        key,
        folder / "expired.pem",
        folder / "expired.key",
        common_name=INITIATOR,
        server=False,
        not_before=now - datetime.timedelta(days=10),
        not_after=now - datetime.timedelta(days=1),
    )
    _cli("tls", "revoke", "revoked.pem", cwd=folder)
    other = folder / "other"
    other.mkdir()
    _cli("tls", "ca", "--name", "someone else", cwd=other)
    _cli("tls", "initiator", INITIATOR, cwd=other)
    return Pki(folder)


@pytest.fixture(scope="module")
def target(pki_dir: Pki) -> Iterator[TlsTarget]:
    folder = ROOT / "artifacts" / "test_tls-cistern"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    plain, tls = peers.free_port(), peers.free_port()
    d = pki_dir.dir
    config = f"""
[tls]
certificate = "{d / "target.pem"}"
key = "{d / "target.key"}"
ca = "{d / "ca.pem"}"
crl = "{d / "crl.pem"}"

[[targets]]
name = "{IQN}"
open = true
[[targets.portal_groups]]
tag = 1
portals = ["127.0.0.1:{plain}"]
[[targets.portal_groups]]
tag = 2
portals = ["127.0.0.1:{tls}"]
tls = true
[[targets.luns]]
lun = 0
backend = "memory"
size = "64M"
"""
    proc = CisternTarget(config, folder / "work", folder / "cistern.log", port=plain)
    proc.start()
    try:
        peers.wait_port("127.0.0.1", tls)
        yield TlsTarget(proc, plain, tls, pki_dir)
    finally:
        proc.stop()


@contextlib.contextmanager
def socat_client(
    target_port: int, cert: Path | None, key: Path | None, ca: Path, name: str = IQN
) -> Iterator[int]:
    """``socat TCP-LISTEN:P,fork OPENSSL:127.0.0.1:target_port,...``: a plain TCP port in front of a TLS
    client leg (TLS 1.3, verifying the target certificate's name ``name``)."""
    port = peers.free_port()
    # nodelay on both legs: with Nagle on socat's TLS leg a record's last segment waits for our delayed ACK
    # (iscsi-test-cu's Write16.BeyondEol then takes ~0.3 s per command instead of 1 ms)
    leg = f"OPENSSL:127.0.0.1:{target_port},cafile={ca},commonname={name},openssl-min-proto-version=TLS1.3,nodelay"
    if cert is not None:
        leg += f",cert={cert},key={key}"
    proc = subprocess.Popen(
        ["socat", "-b", "262144", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay", leg],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        peers.wait_port("127.0.0.1", port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def _wait_log(target: TlsTarget, pattern: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(pattern, target.log)
        if found or time.monotonic() > deadline:
            return found[-1] if found else ""
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------ libiscsi


def test_libiscsi_tools_through_socat_tls_leg(target: TlsTarget) -> None:
    d = target.pki.dir
    with socat_client(target.tls_port, d / "initiator.pem", d / "initiator.key", d / "ca.pem") as port:
        url = peers.iscsi_url("127.0.0.1", port, IQN, 0)
        inq = peers.iscsi_inq(url, "-i", INITIATOR)
        assert "CISTERN" in inq.stdout
        cap = peers.iscsi_readcapacity16(url, "-i", INITIATOR)
        assert "Totalsize:67108864" in cap.stdout.replace(" ", "")
        listing = peers.iscsi_ls(peers.iscsi_url("127.0.0.1", port), "-i", INITIATOR)
        # a discovery over TLS reports the TLS portal only (docs/design.md, TLS discovery convention)
        assert f"127.0.0.1:{target.tls_port},2" in listing.stdout
        assert f":{target.plain_port}" not in listing.stdout
    plain = peers.iscsi_ls(peers.iscsi_url("127.0.0.1", target.plain_port), "-i", INITIATOR)
    assert f"127.0.0.1:{target.plain_port},1" in plain.stdout and f":{target.tls_port}" not in plain.stdout


def test_iscsi_test_cu_same_over_tls_as_plaintext(target: TlsTarget) -> None:
    d = target.pki.dir
    artifacts = ROOT / "artifacts" / "test_tls-cistern"
    plain = peers.run_iscsi_test_cu(
        peers.iscsi_url("127.0.0.1", target.plain_port, IQN, 0),
        SUITES,
        initiator_name=INITIATOR,
        initiator_name_2=INITIATOR_2,
        artifact_path=artifacts / "cu-plain.txt",
        total_timeout=150,
    )
    with socat_client(target.tls_port, d / "cu.pem", d / "cu.key", d / "ca.pem") as port:
        tls = peers.run_iscsi_test_cu(
            peers.iscsi_url("127.0.0.1", port, IQN, 0),
            SUITES,
            initiator_name=INITIATOR,
            initiator_name_2=INITIATOR_2,
            artifact_path=artifacts / "cu-tls.txt",
            total_timeout=150,
        )
    assert plain.counts()["PASS"] > 20 and not plain.stalled
    assert tls.results == plain.results, tls.report()
    assert tls.counts()["FAIL"] == 0, tls.report()


# ------------------------------------------------------------------------------------------ refusals


def test_plaintext_client_refused_before_any_pdu(target: TlsTarget) -> None:
    with pytest.raises(peers.PeerCommandError):
        peers.iscsi_inq(peers.iscsi_url("127.0.0.1", target.tls_port, IQN, 0), "-i", INITIATOR, timeout=20)
    peer = _wait_log(
        target,
        rf"(127\.0\.0\.1:\d+): connection on 127\.0\.0\.1:{target.tls_port} refused: TLS refused: not TLS",
    )
    assert peer, target.log[-2000:]
    assert not re.search(rf"{re.escape(peer)}: \S+ logged in", target.log)


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        ("other/initiator", r"certificate rejected|unknown ca|certificate verify failed"),
        (None, r"no client certificate"),
        ("revoked", r"revoked"),
        ("expired", r"expired"),
    ],
    ids=["wrong-ca", "no-certificate", "revoked", "expired"],
)
def test_bad_client_certificates_refused(target: TlsTarget, cert: str | None, reason: str) -> None:
    d = target.pki.dir
    before = target.log.count("TLS refused")
    paths = (d / f"{cert}.pem", d / f"{cert}.key") if cert else (None, None)
    with socat_client(target.tls_port, *paths, d / "ca.pem") as port, pytest.raises(peers.PeerCommandError):
        peers.iscsi_inq(peers.iscsi_url("127.0.0.1", port, IQN, 0), "-i", INITIATOR, timeout=20)
    deadline = time.monotonic() + 5
    while target.log.count("TLS refused") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    new = target.log.split("TLS refused")[before + 1 :]
    assert new, target.log[-2000:]
    assert re.search(reason, " ".join(" ".join(new).split()), re.IGNORECASE), new
    assert "logged in" not in " ".join(new)


def test_initiator_name_must_match_certificate(target: TlsTarget) -> None:
    d = target.pki.dir
    tls = TlsConfig(d / "ca.pem", d / "initiator.pem", d / "initiator.key")

    async def body() -> None:
        with pytest.raises(IscsiError, match="not authorized"):
            await connect(
                ("127.0.0.1", target.tls_port), target=IQN, tls=tls, initiator_name="iqn.2024-01.org.evil:x"
            )

    asyncio.run(body())
    assert _wait_log(target, r"is not a name of the TLS client certificate")


# ------------------------------------------------------------------------------------------ our initiator


def test_our_initiator_native_tls_and_rotation(target: TlsTarget, tmp_path: Path) -> None:
    d = target.pki.dir
    tls = TlsConfig(d / "ca.pem", d / "initiator.pem", d / "initiator.key")
    url = f"iscsis://127.0.0.1:{target.tls_port}/{IQN}/0"

    def serial_seen() -> int:
        context = ssl.create_default_context(cafile=str(d / "ca.pem"))
        context.check_hostname = False
        context.load_cert_chain(d / "initiator.pem", d / "initiator.key")
        with contextlib.closing(
            context.wrap_socket(__import__("socket").create_connection(("127.0.0.1", target.tls_port)))
        ) as sock:
            der = sock.getpeercert(binary_form=True)
        from cryptography import x509

        return x509.load_der_x509_certificate(der).serial_number

    async def body() -> None:
        found = await discover(f"iscsis://127.0.0.1:{target.tls_port}", tls=tls, initiator_name=INITIATOR)
        assert [t.portals for t in found] == [[f"127.0.0.1:{target.tls_port},2"]]
        async with await connect(url, tls=tls, initiator_name=INITIATOR) as session:
            data = os.urandom(64 * 1024)
            await session.write(0, 100, data)
            assert await session.read(0, 100, len(data) // 512) == data
            old_serial = serial_seen()
            # rotation: a new target certificate in place, then SIGHUP
            pki.issue(
                d / "ca.pem",
                d / "ca.key",
                tmp_path / "new.pem",
                tmp_path / "new.key",
                common_name=IQN,
                names=["127.0.0.1"],
                server=True,
            )
            shutil.copy(tmp_path / "new.key", d / "target.key")
            shutil.copy(tmp_path / "new.pem", d / "target.pem")
            assert target.proc.proc is not None
            os.kill(target.proc.proc.pid, signal.SIGHUP)
            assert _wait_log(target, r"TLS certificate, key, CA and CRL reloaded")
            assert serial_seen() != old_serial
            # the session opened before the rotation is still up
            assert await session.read(0, 100, len(data) // 512) == data
            async with await connect(url, tls=tls, initiator_name=INITIATOR) as second:
                assert await second.read(0, 100, 8) == data[:4096]

    asyncio.run(body())


def test_our_initiator_refuses_a_target_certificate_with_another_name(target: TlsTarget) -> None:
    d = target.pki.dir
    tls = TlsConfig(
        d / "ca.pem", d / "initiator.pem", d / "initiator.key", server_name="iqn.2024-01.org.other:x"
    )

    async def body() -> None:
        with pytest.raises(IscsiError, match=r"not iqn\.2024-01\.org\.other:x"):
            await connect(f"iscsis://127.0.0.1:{target.tls_port}/{IQN}/0", tls=tls, initiator_name=INITIATOR)

    asyncio.run(body())


def test_our_initiator_native_tls_to_tgt_behind_socat(pki_dir: Pki, tgt_disk: peers.TgtDisk) -> None:
    d = pki_dir.dir
    pki.issue(
        d / "ca.pem",
        d / "ca.key",
        d / "tgt.pem",
        d / "tgt.key",
        common_name=tgt_disk.iqn,
        names=["127.0.0.1"],
        server=True,
    )
    port = peers.free_port()
    listen = (
        f"OPENSSL-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay,cert={d / 'tgt.pem'},key={d / 'tgt.key'},"
        f"cafile={d / 'ca.pem'},verify=1,openssl-min-proto-version=TLS1.3"
    )
    front = subprocess.Popen(
        ["socat", "-b", "262144", listen, f"TCP:127.0.0.1:{tgt_disk.tgt.port},nodelay"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        peers.wait_port("127.0.0.1", port)
        tls = TlsConfig(d / "ca.pem", d / "initiator.pem", d / "initiator.key")

        async def body() -> None:
            async with await connect(
                f"iscsis://127.0.0.1:{port}/{tgt_disk.iqn}/{tgt_disk.lun}", tls=tls, initiator_name=INITIATOR
            ) as session:
                data = os.urandom(32 * 1024)
                await session.write(tgt_disk.lun, 8, data)
                assert await session.read(tgt_disk.lun, 8, len(data) // 512) == data
            with pytest.raises(IscsiError):
                await connect(
                    f"iscsis://127.0.0.1:{port}/{tgt_disk.iqn}/{tgt_disk.lun}",
                    tls=TlsConfig(d / "ca.pem"),
                    initiator_name=INITIATOR,
                )

        asyncio.run(body())
    finally:
        front.terminate()
        front.wait(5)
