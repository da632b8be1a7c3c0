"""Our initiator machine against cistern's target machine, in memory (aioquic's ``client_and_server()``
shape): the two sans-I/O machines' outboxes are framed to bytes and fed to each other through a link that
can drop a chosen PDU, on one shared fake clock. No sockets, no event loop, no sleeping.

Covered: full-feature I/O (the login is not replayed: both machines start in full feature phase with the
same negotiated keys), a lost Data-In recovered by a Data SNACK, a lost SCSI Response by a Status SNACK, a
lost R2T by an R2T SNACK (RFC 7143 7.5, 7.8, 11.16), and the NOP keep-alive timers of both sides firing —
answered while the link works, a dead peer detected when it does not (7.1.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cistern.scsi.task import ScsiResult, Status
from cistern.wire import pdu as P
from cistern.wire.framing import Frame, PduReader, frame_pdu
from cistern.wire.initiator_session import (
    InitiatorSession,
    InitiatorTask,
    PingTimedOut,
    TaskCompleted,
)
from cistern.wire.liveness import ConnectionTimers
from cistern.wire.params import Negotiated
from cistern.wire.target_connection import TargetConnection
from cistern.wire.target_session import TargetSession
from cistern.wire.tasks import TargetTask

BLOCK = 512
NOP_INTERVAL = 5.0
NOP_TIMEOUT = 10.0

Drop = Callable[[Any], bool]


def read10(lba: int, blocks: int) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def _parse(reader: PduReader, wire: bytes) -> list[Frame]:
    out = []
    view = memoryview(wire)
    while view:
        buf = reader.get_buffer()
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        reader.buffer_filled(n)
        view = view[n:]
        while (frame := reader.next_frame()) is not None:
            out.append(frame)
    return out


class ClientAndServer:
    """One initiator session machine and one target session machine, ``connections`` connections between
    them, a shared clock :attr:`now`, and a tiny device server (READ(10)/WRITE(10) on a RAM disk)."""

    def __init__(self, erl: int = 1, connections: int = 1, **keys: Any) -> None:
        self.now = 0.0
        keys.setdefault("header_digest", True)
        keys.setdefault("data_digest", True)
        self.params = Negotiated(error_recovery_level=erl, max_connections=4, **keys)
        self.ini = InitiatorSession(
            self.params, tsih=1, expcmdsn=1, maxcmdsn=16, nop_interval=NOP_INTERVAL, nop_timeout=NOP_TIMEOUT
        )
        self.tgt = TargetSession(self.params, expcmdsn=1, queue_depth=16)
        self.targets: dict[int, TargetConnection] = {}
        self.to_target: dict[int, PduReader] = {}
        self.to_initiator: dict[int, PduReader] = {}
        self.disk = bytearray(BLOCK * 2048)
        self.events: list[Any] = []
        self.drop_to_initiator: Drop | None = None  # drops the first PDU it says True to
        self.dropped: list[Any] = []
        self.cut = False  # nothing reaches the initiator any more
        for cid in range(connections):
            self.connect(cid)

    def connect(self, cid: int) -> None:
        timers = ConnectionTimers(
            self.now, login_timeout=30, nop_interval=NOP_INTERVAL, nop_timeout=NOP_TIMEOUT
        )
        t = TargetConnection(self.tgt, cid, self.params, statsn=1, timers=timers, now=self.now)
        self.tgt.attach(t)
        t.timers.full_feature(self.now)
        self.targets[cid] = t
        self.ini.add_connection(cid, 1, self.params, self.now, expcmdsn=1, maxcmdsn=16)
        p = self.params
        self.to_target[cid] = PduReader(
            max_data_segment_length=1 << 20,
            header_digest=p.header_digest,
            data_digest=p.data_digest,
            sink=t.sink,
        )
        self.to_initiator[cid] = PduReader(
            max_data_segment_length=1 << 20, header_digest=p.header_digest, data_digest=p.data_digest
        )

    # ---- the device server

    def _execute(self, task: TargetTask) -> None:
        cdb = task.cdb
        lba, blocks = int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big")
        where = slice(lba * BLOCK, (lba + blocks) * BLOCK)
        assert task.conn is not None
        if cdb[0] == 0x28:
            task.conn.complete(task, ScsiResult(Status.GOOD, None, data_in=bytes(self.disk[where])))
        else:
            assert task.buf is not None
            self.disk[where] = task.buf
            task.conn.complete(task, ScsiResult(Status.GOOD, None))

    # ---- moving PDUs

    def pump(self) -> list[Any]:
        """Exchange PDUs until both sides are quiet; returns the initiator's events."""
        p = self.params
        events: list[Any] = []
        busy = True
        while busy:
            busy = False
            for cid, pdus in self.ini.pdus_to_send():
                busy = True
                for pdu in pdus:
                    wire = b"".join(
                        bytes(b)
                        for b in frame_pdu(pdu, header_digest=p.header_digest, data_digest=p.data_digest)
                    )
                    for frame in _parse(self.to_target[cid], wire):
                        self.targets[cid].receive(frame, self.now)
            while self.tgt.events:
                ev = self.tgt.events.pop(0)
                if isinstance(ev, TargetTask):
                    self._execute(ev)
            for cid, t in self.targets.items():
                wire = b"".join(bytes(b) for b in t.pdus_to_send())
                if not wire:
                    continue
                busy = True
                for frame in _parse(self.to_initiator[cid], wire):
                    rx = frame.pdu
                    assert rx is not None and frame.data_digest_ok
                    if self.cut or (self.drop_to_initiator is not None and self.drop_to_initiator(rx)):
                        self.drop_to_initiator = None
                        self.dropped.append(rx)
                        continue
                    rx.data = bytes(rx.data)
                    events += self.ini.receive(cid, Frame(rx, frame.header), self.now)
        self.events += events
        return events

    def tick(self, now: float) -> list[Any]:
        """Move the shared clock to ``now`` and fire what is due on both sides."""
        self.now = now
        events = self.ini.handle_timer(now)
        for t in self.targets.values():
            t.handle_timer(now)
        self.events += events
        return events + self.pump()

    def run(self, task: InitiatorTask) -> TaskCompleted:
        self.ini.submit(task)
        self.pump()
        done = [e for e in self.events if isinstance(e, TaskCompleted) and e.task is task]
        assert len(done) == 1, self.events
        return done[0]


def test_full_feature_io_and_statsn_in_step() -> None:
    cs = ClientAndServer(erl=0, max_xmit_data_segment_length=4096, immediate_data=True, initial_r2t=False,
                         first_burst_length=8192, max_burst_length=16384)  # fmt: skip
    data = bytes(range(256)) * 256  # 64 KiB: 4 KiB immediate, 4 KiB unsolicited, the rest by R2T
    write = cs.run(InitiatorTask(0, write10(100, 128), data, 0))
    assert write.status == Status.GOOD and bytes(cs.disk[100 * BLOCK : 228 * BLOCK]) == data
    read = cs.run(InitiatorTask(0, read10(100, 128), None, len(data)))
    assert read.status == Status.GOOD and bytes(read.task.read_buffer or b"") == data
    conn = cs.ini.connections[0]
    assert conn.expstatsn == cs.targets[0].statsn  # every status acknowledged, none missing
    assert cs.ini.total_snacks == 0 and not cs.ini.tasks and cs.ini.window == 16


def test_lost_data_in_is_recovered_by_a_data_snack() -> None:
    cs = ClientAndServer(max_xmit_data_segment_length=4096, max_recv_data_segment_length=4096)
    cs.disk[: 64 * BLOCK] = bytes(range(256)) * 128
    cs.drop_to_initiator = lambda pdu: isinstance(pdu, P.DataIn) and pdu.datasn == 2
    read = cs.run(InitiatorTask(0, read10(0, 64), None, 64 * BLOCK))
    assert [type(p) for p in cs.dropped] == [P.DataIn]
    assert bytes(read.task.read_buffer or b"") == bytes(cs.disk[: 64 * BLOCK])
    assert cs.ini.snacks >= 1


def test_lost_scsi_response_is_recovered_by_a_status_snack() -> None:
    cs = ClientAndServer()
    cs.disk[:BLOCK] = b"\x5a" * BLOCK
    cs.drop_to_initiator = lambda pdu: isinstance(pdu, P.ScsiResponse)
    first = InitiatorTask(0, write10(0, 1), b"\x11" * BLOCK, 0)
    cs.ini.submit(first)
    cs.pump()
    assert [type(p) for p in cs.dropped] == [P.ScsiResponse] and not first.finished
    # the next status on the connection shows the StatSN gap: Status SNACK, the status comes again
    second = cs.run(InitiatorTask(0, read10(0, 1), None, BLOCK))
    assert first.finished and bytes(second.task.read_buffer or b"") == b"\x11" * BLOCK
    assert cs.ini.connections[0].expstatsn == cs.targets[0].statsn
    assert cs.ini.connections[0].snacks == 1  # one Status SNACK (the read's DataACK is counted apart)


def test_lost_r2t_is_recovered_by_an_r2t_snack() -> None:
    cs = ClientAndServer(immediate_data=False, initial_r2t=True, max_outstanding_r2t=4,
                         first_burst_length=4096, max_burst_length=4096)  # fmt: skip
    data = bytes(range(256)) * 64  # 16 KiB: four R2Ts of 4 KiB, all outstanding at once
    cs.drop_to_initiator = lambda pdu: isinstance(pdu, P.R2T) and pdu.r2tsn == 0
    write = cs.run(InitiatorTask(0, write10(8, 32), data, 0))
    assert [(type(p), p.r2tsn) for p in cs.dropped] == [(P.R2T, 0)]
    assert write.status == Status.GOOD and bytes(cs.disk[8 * BLOCK : 40 * BLOCK]) == data
    assert cs.ini.snacks == 1


def test_keep_alive_timers_fire_on_both_sides_and_a_dead_target_is_detected() -> None:
    cs = ClientAndServer()
    assert cs.ini.next_timer() == NOP_INTERVAL and cs.targets[0].next_timer() == NOP_INTERVAL
    assert cs.tick(NOP_INTERVAL) == []  # both ping, both answer: nobody is declared dead
    assert cs.ini.connections[0].timers.ping_outstanding is None
    assert cs.tick(NOP_INTERVAL + NOP_TIMEOUT + 1) == []
    cs.cut = True  # from now on nothing reaches the initiator
    due = cs.ini.next_timer()
    assert due is not None
    cs.tick(due)  # our NOP-Out ping goes out, its NOP-In never comes back
    assert cs.ini.connections[0].timers.ping_outstanding is not None
    assert cs.tick(due + NOP_TIMEOUT) == [PingTimedOut(0)]
