"""The target's sans-I/O session and connection machines (wire/target_session.py, wire/target_connection.py)
driven with PDUs and ``now`` values: no sockets, no event loop, no sleeping.

Every input is a real framed PDU (encoded, then framed by :class:`~cistern.wire.framing.PduReader`, digests
included) and every output is parsed back from the machine's outbox, so what is checked is what an initiator
would receive: NOP-In ping and its timeout, DefaultTime2Retain, CmdSN ordering across two connections,
Reject reasons (RFC 7143 11.17.1), the ERL 1 recovery paths (7.2-7.4, 11.16) and Logout of another CID.
"""

from __future__ import annotations

from typing import Any

import pytest

from cistern.scsi.task import ScsiResult, Status
from cistern.wire import pdu as P
from cistern.wire.constants import (
    DATAIN_ACK,
    FLAG_FINAL,
    RESERVED_TAG,
    LogoutReason,
    LogoutResponse,
    RejectReason,
    SnackType,
    TmfFunction,
    TmfResponse,
)
from cistern.wire.errors import LocalProtocolError
from cistern.wire.framing import Frame, PduReader, frame_pdu
from cistern.wire.liveness import ConnectionTimers, TimerEvent
from cistern.wire.params import Negotiated
from cistern.wire.target_connection import TargetConnection
from cistern.wire.target_session import Logout, OutboxReady, TargetSession
from cistern.wire.tasks import TargetTask

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]).ljust(16, b"\0")
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0]).ljust(16, b"\0")


class Side:
    """One connection machine with its framers (ours for input, the initiator's for output)."""

    def __init__(self, session: TargetSession, cid: int, params: Negotiated, now: float = 0.0) -> None:
        timers = ConnectionTimers(now, login_timeout=30, nop_interval=5, nop_timeout=10)
        self.m = TargetConnection(session, cid, params, statsn=1, timers=timers, now=now)
        session.attach(self.m)
        self.params = params
        self.rx = PduReader(
            max_data_segment_length=1 << 20,
            header_digest=params.header_digest,
            data_digest=params.data_digest,
            sink=self.m.sink,
        )

    def frames(self, pdu: P.PDU, *, corrupt: bool = False) -> list[Frame]:
        wire = bytearray(b"".join(bytes(p) for p in frame_pdu(
            pdu, header_digest=self.params.header_digest, data_digest=self.params.data_digest
        )))  # fmt: skip
        if corrupt:
            wire[48 + (4 if self.params.header_digest else 0)] ^= 0xFF  # first data byte
        out = []
        view = memoryview(wire)
        while view:
            buf = self.rx.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self.rx.buffer_filled(n)
            view = view[n:]
            while (frame := self.rx.next_frame()) is not None:
                out.append(frame)
        return out

    def receive(self, pdu: P.PDU, now: float = 0.0, *, corrupt: bool = False) -> None:
        for frame in self.frames(pdu, corrupt=corrupt):
            self.m.receive(frame, now)

    def sent(self) -> list[Any]:
        """What the machine queued, parsed as the initiator would."""
        wire = b"".join(bytes(p) for p in self.m.pdus_to_send())
        reader = PduReader(
            max_data_segment_length=1 << 20,
            header_digest=self.params.header_digest,
            data_digest=self.params.data_digest,
        )
        out: list[Any] = []
        view = memoryview(wire)
        while view:
            buf = reader.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            reader.buffer_filled(n)
            view = view[n:]
            while (frame := reader.next_frame()) is not None:
                assert frame.pdu is not None and frame.data_digest_ok
                frame.pdu.data = bytes(frame.pdu.data)
                out.append(frame.pdu)
        return out


def command(itt: int, cmdsn: int, *, read: int = 0, write: int = 0, data: bytes = b"") -> P.ScsiCommand:
    flags = FLAG_FINAL | (0x40 if read else 0) | (0x20 if write else 0) | 1
    return P.ScsiCommand(
        flags=flags,
        itt=itt,
        expected_data_transfer_length=read or write,
        cmdsn=cmdsn,
        cdb16=READ10 if read else WRITE10,
        data=data,
    )


def events(session: TargetSession) -> list[Any]:
    out: list[Any] = list(session.events)
    session.events.clear()
    return out


def new_session(erl: int = 0, **flat: Any) -> tuple[TargetSession, Negotiated]:
    params = Negotiated(error_recovery_level=erl, max_connections=4, immediate_data=False, **flat)
    return TargetSession(params, expcmdsn=1, queue_depth=16), params


ERL1 = {"header_digest": True, "data_digest": True, "max_xmit_data_segment_length": 4096}


def test_nop_in_ping_then_peer_dead_on_the_fake_clock() -> None:
    session, params = new_session()
    a = Side(session, 1, params, now=100.0)
    assert a.m.next_timer() == 105.0  # nop_interval after the last PDU
    a.receive(P.NopOut(itt=RESERVED_TAG, immediate=True), now=103.0)
    assert a.m.next_timer() == 108.0 and a.m.handle_timer(107.9) is None
    assert a.m.handle_timer(108.0) is TimerEvent.SEND_PING
    (ping,) = a.sent()
    assert isinstance(ping, P.NopIn) and ping.itt == RESERVED_TAG and ping.ttt != RESERVED_TAG
    assert a.m.next_timer() == 118.0  # nop_timeout after the ping
    # the answer (NOP-Out echoing the TTT) stops the dead-peer timer
    a.receive(P.NopOut(itt=RESERVED_TAG, ttt=ping.ttt, immediate=True), now=110.0)
    assert a.m.next_timer() == 115.0 and not a.sent()
    assert a.m.handle_timer(115.0) is TimerEvent.SEND_PING
    a.sent()
    assert a.m.handle_timer(124.9) is None
    assert a.m.handle_timer(125.0) is TimerEvent.PEER_DEAD


def test_time2retain_ends_the_session_only_after_its_last_connection_is_gone_that_long() -> None:
    session, params = new_session(default_time2retain=20)
    a, b = Side(session, 1, params), Side(session, 2, params)
    assert a.m.close(10.0) is False and session.next_timer() is None  # one connection is left
    assert b.m.close(11.0) is False
    assert session.next_timer() == 31.0
    assert session.handle_timer(30.9) is False
    # the initiator returns in time (a login continuing the session): the deadline goes
    c = Side(session, 1, params, now=25.0)
    assert session.next_timer() is None and session.handle_timer(40.0) is False
    assert c.m.close(50.0) is False and session.next_timer() == 70.0
    assert session.handle_timer(70.0) is True
    # DefaultTime2Retain 0: the loss of the last connection ends the session at once
    s0, p0 = new_session(default_time2retain=0)
    assert Side(s0, 1, p0).m.close(1.0) is True


def test_cmdsn_gap_is_held_then_delivered_in_order_across_two_connections() -> None:
    session, params = new_session()
    a, b = Side(session, 1, params), Side(session, 2, params)
    b.receive(command(0x20, 2, read=4096))
    b.receive(command(0x30, 3, read=4096))
    assert events(session) == [] and set(session.held) == {2, 3}
    assert session.maxcmdsn == 16  # held commands take window slots, and MaxCmdSN never goes back
    a.receive(command(0x10, 1, read=4096))
    ready = events(session)
    tasks = [e for e in ready if isinstance(e, TargetTask)]
    assert [t.cmdsn for t in tasks] == [1, 2, 3]
    assert [t.conn for t in tasks] == [a.m, b.m, b.m]  # allegiance: the connection that carried it
    assert any(isinstance(e, OutboxReady) and e.conn is b.m for e in ready)
    assert session.expcmdsn == 4 and not session.held
    # a duplicate (already delivered CmdSN) and one beyond MaxCmdSN are dropped silently
    a.receive(command(0x40, 2, read=4096))
    a.receive(command(0x41, 4 + 100, read=4096))
    assert events(session) == [] and a.sent() == [] and session.expcmdsn == 4


def test_data_out_with_unknown_itt_or_ttt_is_rejected_invalid_pdu_field() -> None:
    session, params = new_session()
    a = Side(session, 1, params)
    a.receive(P.DataOut(flags=FLAG_FINAL, itt=0x99, ttt=0x1234, data=bytes(512)))
    (rej,) = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.INVALID_PDU_FIELD == 0x09
    a.receive(command(0x10, 1, write=4096))
    (r2t,) = a.sent()
    assert isinstance(r2t, P.R2T) and r2t.desired_data_transfer_length == 4096
    a.receive(P.DataOut(flags=FLAG_FINAL, itt=0x10, ttt=r2t.ttt ^ 0x5555, data=bytes(4096)))
    rej, rsp = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == 0x09
    # at ErrorRecoveryLevel 0 nothing can resend the burst: the command ends, CHECK CONDITION, medium untouched
    assert isinstance(rsp, P.ScsiResponse) and rsp.itt == 0x10 and rsp.status == Status.CHECK_CONDITION
    assert events(session) == [] and 0x10 not in session.tasks
    # its late Data-Out is discarded, not rejected
    a.receive(P.DataOut(flags=FLAG_FINAL, itt=0x10, ttt=r2t.ttt, data=bytes(4096)))
    assert a.sent() == []


def test_corrupted_data_out_gets_a_reject_and_a_recovery_r2t_at_erl1() -> None:
    session, params = new_session(erl=1, max_burst_length=8192, first_burst_length=8192, **ERL1)
    a = Side(session, 1, params)
    a.receive(command(0x10, 1, write=8192))
    (r2t,) = a.sent()
    first = b"\x11" * 4096
    second = b"\x22" * 4096
    a.receive(P.DataOut(itt=0x10, ttt=r2t.ttt, datasn=0, buffer_offset=0, data=first))
    a.receive(
        P.DataOut(flags=FLAG_FINAL, itt=0x10, ttt=r2t.ttt, datasn=1, buffer_offset=4096, data=second),
        corrupt=True,
    )
    rej, again = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.DATA_DIGEST_ERROR
    assert isinstance(again, P.R2T) and (again.buffer_offset, again.desired_data_transfer_length) == (
        4096,
        4096,
    )
    assert again.ttt != r2t.ttt and again.r2tsn == 1
    assert events(session) == []  # not all data intact yet
    a.receive(P.DataOut(flags=FLAG_FINAL, itt=0x10, ttt=again.ttt, datasn=0, buffer_offset=4096, data=second))
    (task,) = events(session)
    assert isinstance(task, TargetTask) and task.buf == bytearray(first + second)
    task.conn.complete(task, ScsiResult(Status.GOOD, b""))  # type: ignore[union-attr]
    (rsp,) = a.sent()
    assert isinstance(rsp, P.ScsiResponse) and rsp.status == 0 and rsp.itt == 0x10


def _read(a: Side, session: TargetSession, itt: int, cmdsn: int, data: bytes) -> list[Any]:
    a.receive(command(itt, cmdsn, read=len(data)))
    (task,) = events(session)
    assert isinstance(task, TargetTask)
    a.m.complete(task, ScsiResult(Status.GOOD, b"", data_in=data))
    return a.sent()


def test_status_snack_resends_the_status_and_expstatsn_forgets_it() -> None:
    session, params = new_session(erl=1, **ERL1)
    a = Side(session, 1, params)
    a.receive(command(0x10, 1))  # no data: just a status
    (task,) = events(session)
    a.m.complete(task, ScsiResult(Status.GOOD, b""))
    (rsp,) = a.sent()
    assert isinstance(rsp, P.ScsiResponse)
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.STATUS, begrun=rsp.statsn, runlength=1))
    (again,) = a.sent()
    assert isinstance(again, P.ScsiResponse) and again.statsn == rsp.statsn and again.itt == 0x10
    # acknowledged (ExpStatSN past it): no longer kept, a SNACK for it is a SNACK Reject
    a.receive(P.NopOut(itt=RESERVED_TAG, expstatsn=rsp.statsn + 1, immediate=True))
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.STATUS, begrun=rsp.statsn, runlength=1))
    (rej,) = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.SNACK_REJECT


def test_data_snack_dataack_and_rdata_snack() -> None:
    session, params = new_session(erl=1, **ERL1)
    a = Side(session, 1, params)
    data = bytes(range(256)) * 48  # 12 KiB: three Data-In of 4 KiB
    out = _read(a, session, 0x10, 1, data)
    data_in = [p for p in out if isinstance(p, P.DataIn)]
    assert [d.datasn for d in data_in] == [0, 1, 2] and isinstance(out[-1], P.ScsiResponse)
    last = data_in[-1]
    assert last.flags & DATAIN_ACK and last.ttt != RESERVED_TAG  # asks for a DataACK
    # Data SNACK: DataSN 1 only
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.DATA_R2T, itt=0x10, begrun=1, runlength=1))
    (one,) = a.sent()
    assert isinstance(one, P.DataIn) and one.datasn == 1 and one.data == data[4096:8192]
    # R-Data SNACK after a smaller MaxRecvDataSegmentLength: all of it, resegmented
    a.m.set_max_xmit(2048)
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.RDATA, itt=0x10))
    again = a.sent()
    assert [d.datasn for d in again] == list(range(6)) and b"".join(d.data for d in again) == data
    # DataACK for all of it frees the data: a later Data SNACK is rejected
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.DATA_ACK, ttt=last.ttt, begrun=6))
    assert a.sent() == []
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.DATA_R2T, itt=0x10, begrun=0))
    (rej,) = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.SNACK_REJECT
    # a DataACK naming no kept data: Invalid DataACK
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.DATA_ACK, ttt=0x7777, begrun=1))
    (rej,) = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.INVALID_DATA_ACK


def test_snack_at_erl0_is_a_protocol_error_and_read_segmentation_follows_the_keys() -> None:
    session, params = new_session(
        max_burst_length=8192, first_burst_length=8192, max_xmit_data_segment_length=4096
    )
    a = Side(session, 1, params)
    data = bytes(range(256)) * 80  # 20 KiB: bursts of 8 KiB, PDUs of at most 4 KiB
    out = _read(a, session, 0x10, 1, data)
    assert [(d.buffer_offset, len(d.data), bool(d.flags & FLAG_FINAL)) for d in out] == [
        (0, 4096, False), (4096, 4096, True), (8192, 4096, False), (12288, 4096, True), (16384, 4096, True),
    ]  # fmt: skip
    assert out[-1].flags & 0x01 and out[-1].statsn == 1  # status collapsed into the last Data-In
    a.receive(P.SnackRequest(flags=FLAG_FINAL | SnackType.STATUS))
    (rej,) = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.PROTOCOL_ERROR


def test_logout_of_one_connection_sent_on_another_cid() -> None:
    session, params = new_session()
    a, b = Side(session, 1, params), Side(session, 2, params)
    b.receive(P.LogoutRequest(flags=FLAG_FINAL | LogoutReason.CLOSE_CONNECTION, itt=0x50, cid=1, cmdsn=1))
    (event,) = events(session)
    assert isinstance(event, Logout) and event.conn is b.m and event.cid == 1
    assert event.response == LogoutResponse.SUCCESS
    (rsp,) = b.sent()
    assert isinstance(rsp, P.LogoutResponse) and rsp.response == 0 and rsp.itt == 0x50
    assert a.sent() == []
    # the I/O layer closes CID 1; CID 2 stays and the session with it
    assert a.m.close(5.0) is False and list(session.connections) == [2]
    b.receive(P.LogoutRequest(flags=FLAG_FINAL | LogoutReason.CLOSE_CONNECTION, itt=0x51, cid=7, cmdsn=2))
    (event,) = events(session)
    assert isinstance(event, Logout) and event.response == LogoutResponse.CID_NOT_FOUND
    (rsp,) = b.sent()
    assert isinstance(rsp, P.LogoutResponse) and rsp.response == LogoutResponse.CID_NOT_FOUND


def test_connection_loss_ends_its_tasks_and_frees_their_itts_and_buffers() -> None:
    session, params = new_session(default_time2retain=20)
    a, b = Side(session, 1, params), Side(session, 2, params)
    a.receive(command(0x10, 1, write=4096))  # collecting data
    a.receive(command(0x11, 2, read=4096))  # executing
    (task,) = events(session)
    assert session.write_buffered == 4096 and session.outstanding == 2
    a.m.close(1.0)
    assert session.write_buffered == 0 and session.outstanding == 0 and not session.tasks
    a.m.complete(task, ScsiResult(Status.GOOD, b"", data_in=bytes(4096)))  # the device server returns late
    assert a.m.out == [] and session.outstanding == 0
    b.receive(command(0x11, 3, read=4096))  # the ITT is free again, on another connection
    assert [type(e) for e in events(session)] == [TargetTask]


def test_wrong_opcode_is_rejected_and_misuse_is_a_local_error() -> None:
    session, params = new_session()
    a = Side(session, 1, params)
    # a target opcode sent by the initiator: Reject, protocol error
    a.receive(P.NopIn(itt=5))
    (rej,) = a.sent()
    assert isinstance(rej, P.Reject) and rej.reason == RejectReason.PROTOCOL_ERROR
    # our own misuse is a LocalProtocolError, never answered on the wire
    with pytest.raises(LocalProtocolError):
        TargetSession(params, 1, queue_depth=0)


ERL2 = {**ERL1, "default_time2wait": 2, "default_time2retain": 20}


def reassign(itt: int, cmdsn: int, expdatasn: int = 0) -> P.TaskMgmtRequest:
    return P.TaskMgmtRequest(
        flags=FLAG_FINAL | TmfFunction.TASK_REASSIGN,
        itt=0x900 + itt,
        referenced_task_tag=itt,
        cmdsn=cmdsn,
        expdatasn=expdatasn,
        immediate=True,
    )


def test_erl2_failed_connection_tasks_are_reassigned_and_resume() -> None:
    session, params = new_session(erl=2, max_burst_length=8192, first_burst_length=8192, **ERL2)
    a, b = Side(session, 1, params), Side(session, 2, params)
    a.receive(command(0x10, 1, write=8192))  # collecting: half of its data arrives
    (r2t,) = a.sent()
    a.receive(P.DataOut(itt=0x10, ttt=r2t.ttt, datasn=0, buffer_offset=0, data=b"\x11" * 4096))
    a.receive(command(0x11, 2, read=12288))  # executing when the connection fails
    (read,) = events(session)
    a.m.close(100.0)  # the connection failed (not a logout)
    assert set(session.orphans) == {0x10, 0x11} and session.next_timer() == 122.0  # Time2Wait + Time2Retain
    data = bytes(range(256)) * 48
    a.m.complete(read, ScsiResult(Status.GOOD, b"", data_in=data))  # the device server returns meanwhile
    assert a.m.out == [] and read.result is not None
    # TASK REASSIGN of the read on CID 2, the initiator has DataSN 0: the rest and the status come here
    b.receive(reassign(0x11, 3, expdatasn=1))
    rsp, *rest = b.sent()
    assert isinstance(rsp, P.TaskMgmtResponse) and rsp.response == TmfResponse.FUNCTION_COMPLETE
    assert [d.datasn for d in rest[:-1]] == [1, 2] and b"".join(d.data for d in rest[:-1]) == data[4096:]
    assert isinstance(rest[-1], P.ScsiResponse) and rest[-1].itt == 0x11 and rest[-1].status == 0
    # the write: R2T for the 4 KiB not received, then it executes with all of its data
    b.receive(reassign(0x10, 3))
    rsp, again = b.sent()
    assert rsp.response == TmfResponse.FUNCTION_COMPLETE and isinstance(again, P.R2T)
    assert (again.buffer_offset, again.desired_data_transfer_length) == (4096, 4096)
    b.receive(P.DataOut(flags=FLAG_FINAL, itt=0x10, ttt=again.ttt, buffer_offset=4096, data=b"\x22" * 4096))
    (write,) = events(session)
    assert write.conn is b.m and write.buf == bytearray(b"\x11" * 4096 + b"\x22" * 4096)
    b.m.complete(write, ScsiResult(Status.GOOD, b""))
    (done,) = b.sent()
    assert isinstance(done, P.ScsiResponse) and done.itt == 0x10
    assert not session.orphans and not session.tasks and session.write_buffered == 0
    # an ITT with no task, and a task still allegiant to a live connection
    b.receive(reassign(0x77, 3))
    b.receive(command(0x12, 3, read=4096))
    b.receive(reassign(0x12, 4))
    nx, allegiant = b.sent()
    assert nx.response == TmfResponse.TASK_DOES_NOT_EXIST
    assert allegiant.response == TmfResponse.TASK_STILL_ALLEGIANT


def test_erl2_tasks_not_reassigned_in_time_are_cleaned_up_and_logout_ends_tasks() -> None:
    session, params = new_session(erl=2, **ERL2)
    a, b = Side(session, 1, params), Side(session, 2, params)
    a.receive(command(0x10, 1, write=4096))
    a.m.close(50.0)
    assert session.write_buffered == 4096 and session.next_timer() == 72.0
    assert session.handle_timer(71.9) is False and 0x10 in session.tasks
    assert session.handle_timer(72.0) is False  # CID 2 lives: the session goes on, the task does not
    assert not session.tasks and not session.orphans and session.write_buffered == 0
    assert session.outstanding == 0 and session.next_timer() is None
    b.receive(reassign(0x10, 2))
    (rsp,) = b.sent()
    assert rsp.response == TmfResponse.TASK_DOES_NOT_EXIST
    # Logout reason 2 (remove for recovery) is accepted at ERL 2; a connection closed by a Logout
    # (reason 1) ends its tasks instead of keeping them for TASK REASSIGN
    c = Side(session, 3, params)
    c.receive(command(0x20, 2, write=4096))
    b.receive(P.LogoutRequest(flags=FLAG_FINAL | LogoutReason.CLOSE_CONNECTION, itt=0x51, cid=3, cmdsn=3))
    (event,) = events(session)
    assert event.response == LogoutResponse.SUCCESS and c.m.logged_out
    c.m.close(60.0)
    assert not session.orphans and not session.tasks
    b.sent()
    b.receive(
        P.LogoutRequest(
            flags=FLAG_FINAL | LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY, itt=0x52, cid=2, cmdsn=4
        )
    )
    (event,) = events(session)
    assert event.reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY
    assert event.response == LogoutResponse.SUCCESS
    # at ERL 1 the same logout is answered "recovery not supported", and TASK REASSIGN likewise
    s1, p1 = new_session(erl=1, **ERL1)
    d = Side(s1, 1, p1)
    d.receive(
        P.LogoutRequest(flags=FLAG_FINAL | LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY, itt=1, cid=1, cmdsn=1)
    )
    d.receive(reassign(0x10, 2))
    logout, tmf = d.sent()
    assert logout.response == LogoutResponse.RECOVERY_NOT_SUPPORTED
    assert tmf.response == TmfResponse.TASK_REASSIGN_NOT_SUPPORTED


def test_a_write_buffer_is_allocated_when_its_data_arrives_not_with_the_command() -> None:
    session, params = new_session(max_burst_length=8192, first_burst_length=8192)
    a = Side(session, 1, params)
    for i in range(4):  # 4 x 32 MiB writes whose data never comes: budgeted, but no memory
        a.receive(command(0x10 + i, 1 + i, write=32 << 20))
    assert session.write_buffered == 4 * (32 << 20)
    assert all(t.buf is None for t in session.tasks.values())
    r2ts = [p for p in a.sent() if isinstance(p, P.R2T)]
    first = next(p for p in r2ts if p.itt == 0x10)
    a.receive(P.DataOut(itt=0x10, ttt=first.ttt, data=b"\x33" * 4096))
    task = session.tasks[0x10]
    assert task.buf is not None and len(task.buf) == 32 << 20 and task.buf[:4096] == b"\x33" * 4096
    assert session.tasks[0x11].buf is None
    a.m.close(1.0)  # ends them all: the budget is whole again
    assert session.write_buffered == 0 and not session.tasks


def test_abort_of_an_orphan_whose_result_waits_ends_it_at_once() -> None:
    session, params = new_session(erl=2, **ERL2)
    a = Side(session, 1, params)
    a.receive(command(0x10, 1, read=4096))
    (task,) = events(session)
    a.m.close(1.0)
    a.m.complete(task, ScsiResult(Status.GOOD, b"", data_in=bytes(4096)))  # kept for TASK REASSIGN
    assert session.abort_tasks([task]) == []  # nothing to wait for: the device server returned already
    assert not session.tasks and session.outstanding == 0


def test_a_held_command_of_a_connection_that_went_away_consumes_its_cmdsn_only() -> None:
    session, params = new_session()
    a, b = Side(session, 1, params), Side(session, 2, params)
    b.receive(command(0x20, 2, write=4096))  # held: CmdSN 1 is missing
    b.m.close(1.0)
    a.receive(command(0x10, 1, read=4096))
    assert [t.itt for t in events(session) if isinstance(t, TargetTask)] == [0x10]
    assert session.expcmdsn == 3 and set(session.tasks) == {0x10} and session.write_buffered == 0
