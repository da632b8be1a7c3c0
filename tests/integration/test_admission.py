"""Discovery CHAP, mutual CHAP, caps, rate limits and lockouts with real clients (issue 12, "Must show" 5).

One ``cistern serve`` with discovery CHAP, a one-way CHAP target and a mutual CHAP target, and small
``[limits]`` so the caps are reached with a few hundred sockets.  Floods come from 127.0.0.2..127.0.0.12
(loopback aliases) while the well-behaved clients (libiscsi's tools, our initiator) use 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget
from targets_under_test import CisternUnderTest

from cistern.initiator import connect
from cistern.initiator.errors import AuthenticationError, ConnectionLost, LoginError

ROOT = Path(__file__).resolve().parents[2]
ONE = "iqn.2024-01.org.cistern.test:chap-one"
MUTUAL = "iqn.2024-01.org.cistern.test:chap-mutual"
INITIATOR = "iqn.2024-01.org.cistern.test:good"
DISCOVERY = ("disc-user", "discovery-secret-1")
USER = ("app-user", "app-user-secret-1")
TARGET_USER = ("target-user", "target-user-secret")
LOGIN_TIMEOUT = 2.0
LOCKOUT = 2.0


@pytest.fixture(scope="module")
def target() -> Iterator[CisternTarget]:
    folder = ROOT / "artifacts" / "test_admission-cistern"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = peers.free_port()
    config = f"""
login_timeout = {LOGIN_TIMEOUT}
portals = ["0.0.0.0:{port}"]

[limits]
max_sessions = 12
max_sessions_per_target = 8
max_sessions_per_initiator = 3
max_pending_connections = 24
max_pending_per_address = 6
login_rate = 1000
login_burst = 1000
auth_failures = 5
lockout_seconds = {LOCKOUT}

[discovery_auth.chap]
username = "{DISCOVERY[0]}"
secret = "{DISCOVERY[1]}"

[[targets]]
name = "{ONE}"
open = true
[targets.auth.chap]
username = "{USER[0]}"
secret = "{USER[1]}"
[[targets.luns]]
lun = 0
backend = "memory"
size = "16M"

[[targets]]
name = "{MUTUAL}"
open = true
[targets.auth.chap]
username = "{USER[0]}"
secret = "{USER[1]}"
mutual_username = "{TARGET_USER[0]}"
mutual_secret = "{TARGET_USER[1]}"
[[targets.luns]]
lun = 0
backend = "memory"
size = "16M"
"""
    proc = CisternTarget(config, folder / "work", folder / "cistern.log", port=port)
    with proc:
        yield proc


def log_of(target: CisternTarget) -> str:
    return " ".join(target.log_path.read_text(errors="replace").split())


def _cistern(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cistern", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# ------------------------------------------------------------------------------------------ CHAP


def test_discovery_chap_with_iscsi_ls_and_our_cli(target: CisternTarget) -> None:
    good = peers.iscsi_url("127.0.0.1", target.port, user=DISCOVERY[0], secret=DISCOVERY[1])
    listing = peers.iscsi_ls(good, "-i", INITIATOR)
    assert ONE in listing.stdout and MUTUAL in listing.stdout
    with pytest.raises(peers.PeerCommandError):
        peers.iscsi_ls(peers.iscsi_url("127.0.0.1", target.port), "-i", INITIATOR)
    done = _cistern("discover", "-i", INITIATOR, good)
    assert done.returncode == 0 and ONE in done.stdout, done.stderr
    refused = _cistern("discover", "-i", INITIATOR, peers.iscsi_url("127.0.0.1", target.port))
    assert refused.returncode == 1 and "authentication failed" in refused.stderr
    assert DISCOVERY[1] not in log_of(target)
    time.sleep(LOCKOUT)  # let the failures above age out of the lockout window


def test_our_cli_follows_a_target_without_discovery_chap(cistern_target: CisternUnderTest) -> None:
    """Credentials offered as AuthMethod=CHAP,None: a discovery without CHAP answers None and we follow."""
    url = peers.iscsi_url("127.0.0.1", cistern_target.port, user=USER[0], secret=USER[1])
    assert "iqn." in peers.iscsi_ls(url, "-i", INITIATOR).stdout
    done = _cistern("ls", "-i", INITIATOR, url)
    assert done.returncode == 0, done.stderr
    assert "disk" in done.stdout


def test_mutual_chap_configured_means_required(target: CisternTarget) -> None:
    url = peers.iscsi_url("127.0.0.1", target.port, MUTUAL, 0)
    with pytest.raises(peers.PeerCommandError):
        peers.iscsi_inq(url, "-i", INITIATOR, env=peers.chap_env(*USER))
    ok = peers.iscsi_inq(url, "-i", INITIATOR, env=peers.chap_env(*USER, *TARGET_USER))
    assert "CISTERN" in ok.stdout
    assert re.search(r"login refused: .*0x0201|status 0x0201", log_of(target))

    async def body() -> None:
        with pytest.raises(AuthenticationError):
            await connect(("127.0.0.1", target.port), target=MUTUAL, initiator_name=INITIATOR, chap=USER)
        async with await connect(
            ("127.0.0.1", target.port),
            target=MUTUAL,
            initiator_name=INITIATOR,
            chap=USER,
            mutual_chap=TARGET_USER,
        ) as session:
            await session.test_unit_ready(0)

    asyncio.run(body())
    time.sleep(LOCKOUT)  # let the failures above age out of the lockout window


# ------------------------------------------------------------------------------------------ caps


@contextlib.contextmanager
def silent_connections(port: int, sources: list[str], per_source: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for source in sources:
            for _ in range(per_source):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((source, 0))
                sock.settimeout(5)
                sock.connect(("127.0.0.1", port))
                socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _settles_at_most(socks: list[socket.socket], limit: int, timeout: float = 10.0) -> int:
    """Wait until at most ``limit`` of ``socks`` are still open (the target accepts and judges them in turn)."""
    deadline = time.monotonic() + timeout
    while (alive := peers.still_open(socks)) > limit and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_silent_flood_from_one_address_does_not_lock_others_out(target: CisternTarget) -> None:
    with silent_connections(target.port, ["127.0.0.2"], 300) as socks:
        assert _settles_at_most(socks, 6) <= 6  # max_pending_per_address
        start = time.monotonic()
        url = peers.iscsi_url("127.0.0.1", target.port, ONE, 0, *USER)
        assert "CISTERN" in peers.iscsi_inq(url, "-i", INITIATOR).stdout
        assert time.monotonic() - start < 5
    assert "6 connections from this address have not finished login" in log_of(target)


def test_pending_total_cap_evicts_the_heaviest_and_serves_a_newcomer(target: CisternTarget) -> None:
    sources = [f"127.0.0.{i}" for i in range(3, 13)]  # 10 addresses x 6 = 60 > max_pending_connections 24
    with silent_connections(target.port, sources, 6) as socks:
        assert _settles_at_most(socks, 24) <= 24

        async def body() -> None:
            for _ in range(3):
                async with await connect(
                    ("127.0.0.1", target.port),
                    target=ONE,
                    initiator_name=INITIATOR,
                    chap=USER,
                    nop_interval=0,
                ) as session:
                    await session.test_unit_ready(0)

        asyncio.run(body())
    assert "evicted: too many connections before login" in log_of(target)


def test_half_header_is_closed_at_the_login_timeout(target: CisternTarget) -> None:
    with socket.create_connection(("127.0.0.1", target.port)) as sock:
        sock.sendall(b"\x43\x87" + b"\0" * 18)  # 20 of a Login Request's 48 header bytes
        sock.settimeout(LOGIN_TIMEOUT + 3)
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert LOGIN_TIMEOUT - 0.5 < time.monotonic() - start < LOGIN_TIMEOUT + 3


def test_session_caps_answer_out_of_resources_and_others_still_log_in(target: CisternTarget) -> None:
    async def body() -> None:
        kept = []
        try:
            for _ in range(3):
                kept.append(
                    await connect(("127.0.0.1", target.port), target=ONE, initiator_name=INITIATOR, chap=USER)
                )
            with pytest.raises(LoginError) as caught:
                await connect(("127.0.0.1", target.port), target=ONE, initiator_name=INITIATOR, chap=USER)
            assert (caught.value.status_class, caught.value.status_detail) == (3, 2)

            # 20 initiators at once: the per-target cap (8) holds; the rest get 0x0302, or are closed before
            # login when more than max_pending_per_address (6) are logging in at once; nothing else
            async def one(i: int) -> str:
                try:
                    session = await connect(
                        ("127.0.0.1", target.port), target=ONE, initiator_name=f"{INITIATOR}-{i}", chap=USER
                    )
                except LoginError as exc:
                    return f"{exc.status_class:02x}{exc.status_detail:02x}"
                except ConnectionLost:  # beyond max_pending_per_address: closed before login
                    return "refused"
                kept.append(session)
                return "ok"

            results = await asyncio.gather(*(one(i) for i in range(20)))
            assert results.count("ok") == 8 - 3
            assert set(results) <= {"ok", "0302", "refused"} and "0302" in results
            assert sum(1 for s in kept if s is not None) == 8
        finally:
            for session in kept:
                with contextlib.suppress(Exception):
                    await session.logout()

    asyncio.run(body())
    assert "(max_sessions_per_initiator)" in log_of(target)
    assert "(max_sessions_per_target)" in log_of(target)


def test_failed_logins_lock_the_user_out_for_a_while(target: CisternTarget) -> None:
    wrong = (USER[0], "not-the-secret-at-all")

    async def body() -> None:
        for _ in range(5):
            with pytest.raises(AuthenticationError):
                await connect(("127.0.0.1", target.port), target=ONE, initiator_name=INITIATOR, chap=wrong)
        # locked: the right secret fails too (and the address is locked: connections close at once)
        with pytest.raises((AuthenticationError, LoginError, OSError, Exception)):
            await connect(("127.0.0.1", target.port), target=ONE, initiator_name=INITIATOR, chap=USER)
        await asyncio.sleep(LOCKOUT + 0.5)
        async with await connect(
            ("127.0.0.1", target.port), target=ONE, initiator_name=INITIATOR, chap=USER, nop_interval=0
        ) as session:
            await session.test_unit_ready(0)

    asyncio.run(body())
    text = log_of(target)
    assert f"CHAP user '{USER[0]}' locked out" in text
    assert "source address 127.0.0.1 locked out" in text
    for secret in (USER[1], wrong[1], TARGET_USER[1], DISCOVERY[1]):
        assert secret not in text
