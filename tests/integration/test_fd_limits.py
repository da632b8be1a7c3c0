"""The open-file limit, the listen backlog and a flood of silent connections (issue 12, "Must show" 4).

Two ``cistern serve`` processes started under a lower RLIMIT_NOFILE (``resource.setrlimit`` in the child
before exec):

- soft 100 / hard 160, with the pre-login caps out of the way: the target raises its soft limit to 160 and
  logs it; a flood of silent connections reaches the descriptor reserve, where every further connection is
  closed with one log line (never accepted and reset without a word), a session logged in before the flood
  keeps working, and once the flood drops back a new initiator logs in;
- 1024 / 1024 with the default ``[limits]``: 1100 back-to-back silent connections from one client take
  no SYN retransmit (listen backlog = somaxconn; each connect well under 0.9 s), and a well-behaved initiator
  on another address logs in at its first try while they are held open.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

from cistern.config.limits import somaxconn
from cistern.initiator import connect

ROOT = Path(__file__).resolve().parents[2]
IQN = "iqn.2026-11.org.cistern.test:fd"
INITIATOR = "iqn.2026-11.org.cistern.test:well-behaved"
FLOODER = "127.0.0.2"


def _nofile(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _config(port: int, limits: str) -> str:
    return f"""
portals = ["127.0.0.1:{port}"]
login_timeout = 60
{limits}
[[targets]]
name = "{IQN}"
open = true
[[targets.luns]]
lun = 0
backend = "memory"
size = "16M"
"""


@contextlib.contextmanager
def _target(name: str, limits: str, soft: int, hard: int) -> Iterator[CisternTarget]:
    folder = ROOT / "artifacts" / f"test_fd_limits-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = peers.free_port()
    proc = CisternTarget(
        _config(port, limits), folder / "work", folder / "cistern.log", port=port, preexec=_nofile(soft, hard)
    )
    with proc:
        yield proc


@pytest.fixture(scope="module", autouse=True)
def _client_descriptors() -> None:
    """This test process holds up to 1100 sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    assert want >= 1300, f"the test needs an open-file hard limit of at least 1300 (it is {hard})"
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _log(target: CisternTarget) -> str:
    return target.log_path.read_text(errors="replace")


def _settled(socks: list[socket.socket], timeout: float = 15.0) -> int:
    """Open sockets once the target has judged every one of ``socks`` (the count stops changing)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        time.sleep(0.5)
        alive = peers.still_open(socks)
        if alive == last:
            return alive
        last = alive
    return last


def _flood(count: int, port: int) -> tuple[list[socket.socket], list[float]]:
    """``count`` back-to-back silent connections from FLOODER; returns them and each connect's duration."""
    socks: list[socket.socket] = []
    took: list[float] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((FLOODER, 0))
            sock.settimeout(10)
            start = time.monotonic()
            sock.connect(("127.0.0.1", port))
            took.append(time.monotonic() - start)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks, took


def _listen_backlog(port: int) -> int:
    """The backlog of the listening socket on ``port`` as the kernel reports it (``ss``: Send-Q)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


# ------------------------------------------------------------------------------------ the fd limit


def test_at_the_descriptor_limit_connections_are_closed_with_a_log_line_and_others_keep_working() -> None:
    limits = """
[limits]
max_pending_connections = 100000
max_pending_per_address = 100000
login_rate = 100000
login_burst = 100000
"""
    with _target("low", limits, 100, 160) as target:
        assert target.proc is not None
        text = _log(target)
        assert "open-file limit (RLIMIT_NOFILE): 160 descriptors (soft limit raised from 100)" in text
        assert re.search(r"Max open files\s+160\s+160", Path(f"/proc/{target.proc.pid}/limits").read_text())
        assert _listen_backlog(target.port) == somaxconn()  # listen_backlog = 0: the system maximum

        async def body() -> None:
            url = ("127.0.0.1", target.port)
            async with await connect(url, target=IQN, initiator_name=INITIATOR, nop_interval=0) as before:
                await before.test_unit_ready(0)
                socks, _ = await asyncio.to_thread(_flood, 200, target.port)
                try:
                    alive = await asyncio.to_thread(_settled, socks)
                    closed = len(socks) - alive
                    assert 60 <= alive <= 160 - 32 and closed >= 40, (alive, closed)
                    refusals = _log(target).count("refused: open-file limit reached")
                    assert refusals == closed  # every connection closed had its line
                    await before.test_unit_ready(0)  # the session logged in before the flood is served
                    # the flood drops back: a new initiator gets in
                    for sock in socks[:100]:
                        sock.close()
                    await asyncio.sleep(0.5)
                    async with await connect(
                        url, target=IQN, initiator_name=f"{INITIATOR}-2", nop_interval=0
                    ) as after:
                        await after.test_unit_ready(0)
                finally:
                    for sock in socks:
                        sock.close()
                await before.test_unit_ready(0)

        asyncio.run(body())
        assert "Traceback" not in _log(target)


# ------------------------------------------------------- the backlog and the pre-login caps at 1024


def test_1100_silent_connections_at_fd_limit_1024_neither_retransmit_nor_lock_others_out() -> None:
    with _target("1024", "", 1024, 1024) as target:
        assert _listen_backlog(target.port) == somaxconn()
        url = peers.iscsi_url("127.0.0.1", target.port, IQN, 0)
        socks, took = _flood(300, target.port)
        try:
            # a well-behaved initiator logs in while the flood goes on: one try, no retry
            first = subprocess.Popen(
                ["iscsi-inq", "-i", INITIATOR, url],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            more, took_more = _flood(800, target.port)
            socks += more
            took += took_more
            out, err = first.communicate(timeout=30)
            assert first.returncode == 0 and "DIRECT_ACCESS" in out, err
            # no connect waited for a SYN retransmit (the first one comes after 1 s)
            assert len(took) == 1100 and sum(1 for t in took if t > 0.9) == 0, max(took)
            alive = _settled(socks)
            assert alive <= 16  # max_pending_per_address
            # with all 1100 still held on the client side, the next initiator gets in at once too
            start = time.monotonic()
            assert "DIRECT_ACCESS" in peers.iscsi_inq(url, "-i", f"{INITIATOR}-2").stdout
            assert time.monotonic() - start < 5

            async def ours() -> None:
                async with await connect(
                    ("127.0.0.1", target.port), target=IQN, initiator_name=f"{INITIATOR}-3", nop_interval=0
                ) as session:
                    await session.test_unit_ready(0)

            asyncio.run(ours())
        finally:
            for sock in socks:
                sock.close()
        text = _log(target)
        assert "16 connections from this address have not finished login" in text
        assert "open-file limit reached" not in text  # the pre-login caps hold long before the fd limit
        assert "Traceback" not in text
