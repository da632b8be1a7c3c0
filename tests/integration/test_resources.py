"""Memory under abuse (issue 12, "Must show" 4): write buffers held by many sessions at once, and read data
queued for a client that stops reading.

A raw client (the sans-I/O login machine over a plain socket) opens 16 sessions and sends, in each,
8 WRITE(16) commands of 32 MiB with W=1 and no data, then never sends the data — before the budget this
pinned 16 x 256 MiB = 4 GiB.  With ``max_write_buffers = "256M"`` the target answers TASK SET FULL once
the target-wide budget is taken, its resident memory grows by no more than the budget, our initiator still
reads, and the budget is given back when the hostile sessions go away.  A client that sends 128 READ(16) of
32 MiB and then stops reading pinned 128 x 32 MiB = 4 GiB within seconds before read data was produced as
the connection takes it; now the target holds about one read's data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

from cistern.initiator import connect
from cistern.initiator.cdb import read as read_cdb
from cistern.initiator.cdb import write as write_cdb
from cistern.wire import pdu as P
from cistern.wire.constants import CMD_READ, CMD_WRITE, FLAG_FINAL
from cistern.wire.framing import PduReader, frame_pdu
from cistern.wire.login import InitiatorLogin

ROOT = Path(__file__).resolve().parents[2]
IQN = "iqn.2024-01.org.cistern.test:resources"
EDTL = 32 * 1024 * 1024
BUDGET = 256 * 1024 * 1024
TASK_SET_FULL = 0x28


@pytest.fixture(scope="module")
def target() -> Iterator[CisternTarget]:
    folder = ROOT / "artifacts" / "test_resources-cistern"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = peers.free_port()
    config = f"""
[limits]
max_write_buffers = "256M"
login_rate = 10000
login_burst = 10000

[[targets]]
name = "{IQN}"
open = true
portals = ["127.0.0.1:{port}"]
[[targets.luns]]
lun = 0
backend = "file"
path = "{folder / "lun.img"}"
size = "64M"
"""
    with CisternTarget(config, folder / "work", folder / "cistern.log", port=port) as proc:
        yield proc


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RawSession:
    """A logged-in session on a plain socket, for sending PDUs our initiator would never send."""

    def __init__(self, port: int, initiator: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = PduReader(max_data_segment_length=1 << 20)
        self.isid = b"\x80" + os.urandom(5)
        machine = InitiatorLogin(initiator, IQN)
        request = machine.start()
        expstatsn = 0
        while request is not None:
            flags = P.login_flags(request.transit, False, request.csg, request.nsg if request.transit else 0)
            self.send(
                P.LoginRequest(
                    flags, 0, 0, self.isid, 0, 1, 0, 0, expstatsn, immediate=True, data=request.text
                )
            )
            rsp = self.next_pdu()
            assert isinstance(rsp, P.LoginResponse)
            expstatsn = rsp.statsn + 1
            request = machine.receive(
                rsp.csg,
                rsp.nsg,
                rsp.transit,
                rsp.cont,
                rsp.status_class,
                rsp.status_detail,
                bytes(rsp.data),
                rsp.tsih,
            )
        self.expstatsn = expstatsn
        self.cmdsn = rsp.expcmdsn
        self._frames: list[P.PDU] = []

    def send(self, pdu: P.PDU) -> None:
        self.sock.sendall(b"".join(bytes(b) for b in frame_pdu(pdu)))

    def next_pdu(self) -> P.PDU:
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                assert frame.pdu is not None
                return frame.pdu
            buf = self.reader.get_buffer()
            n = self.sock.recv_into(buf)
            assert n, "target closed the connection"
            self.reader.buffer_filled(n)

    def write_without_data(self, itt: int) -> None:
        self.send(
            P.ScsiCommand(
                flags=FLAG_FINAL | CMD_WRITE | 1,
                lun=0,
                itt=itt,
                expected_data_transfer_length=EDTL,
                cmdsn=self.cmdsn,
                expstatsn=self.expstatsn,
                cdb16=write_cdb(0, EDTL // 512).ljust(16, b"\0"),
            )
        )
        self.cmdsn += 1

    def read_and_never_collect(self, itt: int) -> None:
        self.send(
            P.ScsiCommand(
                flags=FLAG_FINAL | CMD_READ | 1,
                lun=0,
                itt=itt,
                expected_data_transfer_length=EDTL,
                cmdsn=self.cmdsn,
                expstatsn=self.expstatsn,
                cdb16=read_cdb(0, EDTL // 512).ljust(16, b"\0"),
            )
        )
        self.cmdsn += 1


def test_write_buffers_of_all_sessions_are_bounded(target: CisternTarget) -> None:
    assert target.proc is not None
    pid = target.proc.pid
    time.sleep(0.5)
    before = rss(pid)
    sessions = [RawSession(target.port, f"iqn.2024-01.org.cistern.test:hostile-{i}") for i in range(16)]
    answers = {"r2t": 0, "task set full": 0}
    try:
        for session in sessions:
            for itt in range(8):
                session.write_without_data(0x100 + itt)
        for session in sessions:
            for _ in range(8):
                pdu = session.next_pdu()
                if isinstance(pdu, P.R2T):
                    answers["r2t"] += 1
                else:
                    assert isinstance(pdu, P.ScsiResponse) and pdu.status == TASK_SET_FULL, pdu
                    answers["task set full"] += 1
        grown = rss(pid) - before
        assert answers == {"r2t": BUDGET // EDTL, "task set full": 16 * 8 - BUDGET // EDTL}
        assert grown < BUDGET + 64 * 1024 * 1024, (
            f"RSS grew {grown >> 20} MiB for a {BUDGET >> 20} MiB budget"
        )

        async def reader_still_served() -> None:
            async with await connect(f"iscsi://127.0.0.1:{target.port}/{IQN}/0", nop_interval=0) as s:
                assert len(await s.read(0, 0, 64)) == 64 * 512

        asyncio.run(reader_still_served())
    finally:
        for session in sessions:
            session.sock.close()

    async def writer_after() -> None:
        # the hostile sessions are gone: their buffers went back to the budget, a 32 MiB write fits again
        deadline = time.monotonic() + 10
        async with await connect(f"iscsi://127.0.0.1:{target.port}/{IQN}/0", nop_interval=0) as s:
            while True:
                try:
                    await s.write(0, 0, bytes(EDTL))
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

    asyncio.run(writer_after())


def test_idle_sessions_hold_no_staging_buffer(target: CisternTarget) -> None:
    """An idle logged-in session costs at most 16 KiB of target memory (it was ~70 KB: a 64 KiB receive
    staging buffer per connection; now readers borrow one from a shared pool only while bytes are staged)."""
    assert target.proc is not None
    pid = target.proc.pid
    warm = [RawSession(target.port, f"iqn.2024-01.org.cistern.test:warm-{i}") for i in range(20)]
    time.sleep(0.3)
    before = rss(pid)
    idle = [RawSession(target.port, f"iqn.2024-01.org.cistern.test:idle-{i}") for i in range(300)]
    try:
        time.sleep(0.5)
        per_session = (rss(pid) - before) / len(idle)
        assert per_session <= 16 * 1024, f"{per_session / 1024:.1f} KiB per idle session"
    finally:
        for session in warm + idle:
            session.sock.close()


def test_read_data_for_a_client_that_stops_reading_is_bounded(target: CisternTarget) -> None:
    assert target.proc is not None
    pid = target.proc.pid
    time.sleep(0.5)
    before = rss(pid)
    slow = RawSession(target.port, "iqn.2024-01.org.cistern.test:never-reads")
    try:
        for itt in range(128):
            slow.read_and_never_collect(0x200 + itt)
        time.sleep(4)  # before the gate, RSS passed 4 GiB within this time
        grown = rss(pid) - before
        assert grown < 3 * EDTL, f"RSS grew {grown >> 20} MiB for a client that reads nothing"

        async def reader_still_served() -> None:
            async with await connect(f"iscsi://127.0.0.1:{target.port}/{IQN}/0", nop_interval=0) as s:
                assert len(await s.read(0, 0, 64)) == 64 * 512
                assert len(await s.read(0, 0, EDTL // 512)) == EDTL  # a large read of its own is not held up

        asyncio.run(reader_still_served())
        # the slow client's reads were queued, not refused: when it reads again, Data-In comes (after the
        # CHECK CONDITION that reports the new nexus' unit attention on its first command)
        for _ in range(4):
            pdu = slow.next_pdu()
            if isinstance(pdu, P.DataIn):
                break
            assert isinstance(pdu, P.ScsiResponse) and pdu.status != TASK_SET_FULL, pdu
        assert isinstance(pdu, P.DataIn) and pdu.itt >= 0x200, pdu
    finally:
        slow.sock.close()
