"""The sans-I/O initiator machines (cistern.wire.initiator_session / initiator_connection) with a fake
clock: no sockets, no sleeping. The test plays the target by handing PDUs to ``receive(cid, frame, now)``
and reads what the machine queued with ``pdus_to_send()`` (RFC 7143 7.1.1 NOP timeout, 7.1.4 Time2Wait,
6.3.4/7.2.2 Time2Retain and TASK REASSIGN, 7.5 Status SNACK, 7.8/11.16 Data and R2T SNACK)."""

from __future__ import annotations

from typing import Any

import pytest

from cistern.wire import pdu as P
from cistern.wire.constants import DATAIN_STATUS, FLAG_FINAL, RESERVED_TAG, SnackType, TmfFunction
from cistern.wire.errors import RemoteProtocolError
from cistern.wire.framing import Frame
from cistern.wire.initiator_connection import InitiatorConnection, TimerEvent
from cistern.wire.initiator_session import (
    Failure,
    InitiatorSession,
    InitiatorTask,
    PingTimedOut,
    ReconnectDue,
    Recovery,
    RetainExpired,
    TaskCompleted,
    TaskFailed,
)
from cistern.wire.params import Negotiated

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])


def machine(erl: int = 1, **keys: Any) -> InitiatorSession:
    opts = {k: keys.pop(k) for k in ("nop_interval", "nop_timeout") if k in keys}
    n = Negotiated(error_recovery_level=erl, default_time2wait=2, default_time2retain=20, **keys)
    s = InitiatorSession(n, tsih=7, expcmdsn=1, maxcmdsn=64, **opts)
    s.add_connection(0, 1, n, 0.0, expcmdsn=1, maxcmdsn=64)
    return s


def sent(s: InitiatorSession, cid: int = 0) -> list[Any]:
    return s.connections[cid].pdus_to_send()


def frame(pdu: Any, digest_ok: bool = True) -> Frame:
    return Frame(pdu, b"", data_digest_ok=digest_ok)


def data_in(itt: int, datasn: int, offset: int, data: bytes, statsn: int | None = None) -> P.DataIn:
    flags = FLAG_FINAL | (DATAIN_STATUS if statsn is not None else 0)
    return P.DataIn(
        flags=flags, itt=itt, ttt=RESERVED_TAG, statsn=statsn or 0, expcmdsn=2, maxcmdsn=64,
        datasn=datasn, buffer_offset=offset, data=data,
    )  # fmt: skip


def response(itt: int, statsn: int) -> P.ScsiResponse:
    return P.ScsiResponse(flags=FLAG_FINAL, itt=itt, statsn=statsn, expcmdsn=2, maxcmdsn=64)


def r2t(itt: int, r2tsn: int, offset: int, length: int, ttt: int = 0x100) -> P.R2T:
    return P.R2T(
        itt=itt, ttt=ttt + r2tsn, statsn=1, expcmdsn=2, maxcmdsn=64, r2tsn=r2tsn, buffer_offset=offset,
        desired_data_transfer_length=length,
    )  # fmt: skip


def read(s: InitiatorSession, length: int = 8) -> InitiatorTask:
    task = InitiatorTask(0, READ10, None, length)
    s.submit(task)
    (cmd,) = sent(s)
    assert isinstance(cmd, P.ScsiCommand) and cmd.itt == task.itt
    return task


def test_nop_out_ping_after_silence_and_timeout_without_answer() -> None:
    s = machine(nop_interval=5.0, nop_timeout=3.0)
    assert s.next_timer() == 5.0
    assert s.handle_timer(4.9) == [] and sent(s) == []
    s.receive(0, frame(P.NopIn(itt=RESERVED_TAG, ttt=RESERVED_TAG, statsn=1, expcmdsn=1, maxcmdsn=64)), 4.0)
    assert s.next_timer() == 9.0  # traffic moves the ping
    assert s.handle_timer(9.0) == []
    (ping,) = sent(s)
    assert isinstance(ping, P.NopOut) and ping.itt != RESERVED_TAG and ping.ttt == RESERVED_TAG
    assert s.next_timer() == 12.0
    assert s.handle_timer(11.9) == []
    assert s.handle_timer(12.0) == [PingTimedOut(0)]


def test_answered_ping_is_consumed_and_the_schedule_restarts() -> None:
    s = machine(nop_interval=5.0, nop_timeout=3.0)
    s.handle_timer(5.0)
    (ping,) = sent(s)
    answer = P.NopIn(itt=ping.itt, ttt=RESERVED_TAG, statsn=1, expcmdsn=1, maxcmdsn=64)
    assert s.receive(0, frame(answer), 6.0) == []  # our own keep-alive: no event for the caller
    assert s.next_timer() == 11.0
    assert s.handle_timer(8.0) == []  # the old ping deadline is gone


def test_login_timeout_of_a_connection() -> None:
    conn = InitiatorConnection(3, 100.0, login_timeout=15.0)
    assert conn.next_timer() == 115.0
    assert conn.handle_timer(114.9) is None
    assert conn.handle_timer(115.0) is TimerEvent.LOGIN_TIMED_OUT
    conn.full_feature(5, Negotiated(), 110.0)
    assert conn.next_timer() is None and conn.expstatsn == 5  # no keep-alive configured


def test_time2wait_before_reconnect_then_time2retain_fails_the_tasks() -> None:
    s = machine(erl=2)
    task = read(s)
    assert s.connection_lost(0, 10.0) is Recovery.CONNECTION
    assert s.tasks[task.itt] is task  # kept for TASK REASSIGN
    assert s.next_timer() == 12.0  # DefaultTime2Wait=2
    assert s.handle_timer(11.99) == []
    assert s.handle_timer(12.0) == [ReconnectDue(0)]
    assert s.next_timer() == 30.0  # DefaultTime2Retain=20
    assert s.handle_timer(29.0) == []
    events = s.handle_timer(30.0)
    assert [type(e) for e in events] == [TaskFailed, RetainExpired]
    assert isinstance(events[0], TaskFailed) and events[0].failure is Failure.NOT_RECOVERED
    assert task.finished and not s.tasks and s.next_timer() is None


def test_task_reassign_within_time2retain_resumes_from_the_next_datasn() -> None:
    s = machine(erl=2)
    task = read(s, 16)
    s.receive(0, frame(data_in(task.itt, 0, 0, b"A" * 8)), 1.0)
    s.connection_lost(0, 2.0)
    s.handle_timer(4.0)
    n = s.negotiated
    s.add_connection(1, 5, n, 5.0, expcmdsn=2, maxcmdsn=64)
    s.connection_recovered(0)
    assert s.retain_deadline(0) == 22.0
    itt = s.task_reassign(task, 1)
    (tmf,) = sent(s, 1)
    assert isinstance(tmf, P.TaskMgmtRequest) and tmf.itt == itt
    assert tmf.function == TmfFunction.TASK_REASSIGN
    assert (tmf.referenced_task_tag, tmf.refcmdsn, tmf.expdatasn) == (task.itt, task.cmdsn, 1)
    assert s.handle_timer(40.0) == []  # recovered: Time2Retain no longer fails it
    s.receive(1, frame(data_in(task.itt, 1, 8, b"B" * 8, statsn=5)), 41.0)
    s.recovery_done(0)
    assert task.finished and bytes(task.read_buffer or b"") == b"A" * 8 + b"B" * 8


def test_below_erl2_a_lost_connection_reinstates_the_session_in_cmdsn_order() -> None:
    s = machine(erl=1)
    first, second = read(s), read(s)
    assert s.connection_lost(0, 1.0) is Recovery.SESSION
    assert s.connections == {} and s.next_timer() is None
    assert s.reinstate(max_reissue=3) == []
    assert list(s.pending) == [first, second]
    n = s.negotiated
    s.install(n, tsih=9, expcmdsn=40, maxcmdsn=80)
    s.add_connection(0, 1, n, 2.0, expcmdsn=40, maxcmdsn=80)
    s.pump()
    cmds = sent(s)
    assert [c.cmdsn for c in cmds] == [40, 41] and [c.itt for c in cmds] == [first.itt, second.itt]


def test_datasn_gap_asks_a_data_snack_and_holds_the_status() -> None:
    s = machine()
    task = read(s, 24)
    s.receive(0, frame(data_in(task.itt, 0, 0, b"a" * 8)), 1.0)
    assert s.receive(0, frame(data_in(task.itt, 2, 16, b"c" * 8, statsn=1)), 1.0) == []
    (snack,) = sent(s)
    assert isinstance(snack, P.SnackRequest) and snack.snack_type == SnackType.DATA_R2T
    assert (snack.itt, snack.begrun, snack.runlength) == (task.itt, 1, 1)
    events = s.receive(0, frame(data_in(task.itt, 1, 8, b"b" * 8)), 1.0)
    assert events == [TaskCompleted(task, 0, 0, b"")]
    assert bytes(task.read_buffer or b"") == b"a" * 8 + b"b" * 8 + b"c" * 8


def test_data_digest_error_at_erl0_is_a_remote_protocol_error() -> None:
    s = machine(erl=0)
    task = read(s)
    with pytest.raises(RemoteProtocolError):
        s.receive(0, frame(data_in(task.itt, 0, 0, b"x" * 8, statsn=1), digest_ok=False), 1.0)


def test_statsn_gap_asks_a_status_snack_and_holds_expstatsn() -> None:
    s = machine()
    a, b = read(s), read(s)
    conn = s.connections[0]
    assert conn.expstatsn == 1
    s.receive(0, frame(response(b.itt, 2)), 1.0)  # StatSN 1 (a's) was lost
    (snack,) = sent(s)
    assert isinstance(snack, P.SnackRequest) and snack.snack_type == SnackType.STATUS
    assert (snack.begrun, snack.runlength) == (1, 1)
    assert conn.expstatsn == 1  # the target must keep StatSN 1
    assert s.receive(0, frame(response(a.itt, 1)), 1.1) == [TaskCompleted(a, 0, 0, b"")]
    assert conn.expstatsn == 3 and s.total_snacks == 1


def test_r2tsn_gap_asks_an_r2t_snack_and_the_resent_r2t_is_answered() -> None:
    s = machine(immediate_data=False, initial_r2t=True, max_xmit_data_segment_length=8)
    task = InitiatorTask(0, WRITE10, bytes(range(24)), 0)
    s.submit(task)
    (cmd,) = sent(s)
    assert isinstance(cmd, P.ScsiCommand) and cmd.data == b""
    s.receive(0, frame(r2t(task.itt, 0, 0, 8)), 1.0)
    (out0,) = sent(s)
    assert isinstance(out0, P.DataOut) and out0.buffer_offset == 0
    # R2TSN 1 lost (e.g. a header digest error on it): R2TSN 2 shows the gap
    s.receive(0, frame(r2t(task.itt, 2, 16, 8)), 1.1)
    snack, out2 = sent(s)
    assert isinstance(snack, P.SnackRequest) and snack.snack_type == SnackType.DATA_R2T
    assert (snack.itt, snack.begrun, snack.runlength) == (task.itt, 1, 1)
    assert isinstance(out2, P.DataOut) and out2.buffer_offset == 16 and out2.ttt == 0x102
    assert s.receive(0, frame(r2t(task.itt, 1, 8, 8)), 1.3) == []
    (out1,) = sent(s)
    assert isinstance(out1, P.DataOut) and out1.buffer_offset == 8 and bytes(out1.data) == bytes(range(8, 16))
    assert task.missing == set() and task.exp_datasn == 3
    assert s.receive(0, frame(response(task.itt, 1)), 1.4) == [TaskCompleted(task, 0, 0, b"")]


def test_r2t_outside_the_data_is_a_remote_protocol_error() -> None:
    s = machine(immediate_data=False)
    task = InitiatorTask(0, WRITE10, bytes(16), 0)
    s.submit(task)
    sent(s)
    with pytest.raises(RemoteProtocolError):
        s.receive(0, frame(r2t(task.itt, 0, 8, 16)), 1.0)


def test_after_task_reassign_recovery_r2ts_rebase_the_r2tsn_and_a_snack_reject_ends_the_wait() -> None:
    s = machine(erl=2, immediate_data=False, max_xmit_data_segment_length=8)
    task = InitiatorTask(0, WRITE10, bytes(32), 0)
    s.submit(task)
    sent(s)
    s.receive(0, frame(r2t(task.itt, 0, 0, 8)), 1.0)
    sent(s)
    s.connection_lost(0, 2.0)
    s.add_connection(1, 5, s.negotiated, 5.0, expcmdsn=2, maxcmdsn=64)
    s.task_reassign(task, 1)
    sent(s, 1)
    # RFC 7143 7.2.2: the target solicits what it lacks with R2TSNs of its own numbering: no R2T SNACK
    s.receive(1, frame(r2t(task.itt, 3, 8, 8)), 6.0)
    assert [type(p) for p in sent(s, 1)] == [P.DataOut]
    s.receive(1, frame(r2t(task.itt, 5, 24, 8)), 6.1)  # a real gap after that: R2T SNACK for R2TSN 4
    snack, _ = sent(s, 1)
    assert isinstance(snack, P.SnackRequest) and (snack.begrun, snack.runlength) == (4, 1)
    # the target answers that R2TSN 4 is not outstanding (SNACK Reject): the task does not fail
    header = snack.encode_header()
    reject = P.Reject(reason=0x03, statsn=5, expcmdsn=2, maxcmdsn=64, data=bytes(header[:48]))
    assert s.receive(1, frame(reject), 6.2) == [] and not task.finished and task.missing is None
    assert s.receive(1, frame(response(task.itt, 6)), 6.3) == [TaskCompleted(task, 0, 0, b"")]


def test_a_reassigned_task_that_shows_no_life_within_the_grace_is_issued_again() -> None:
    from cistern.wire.initiator_session import REASSIGN_GRACE

    s = machine(erl=2)
    quiet, alive = read(s), read(s)
    s.connection_lost(0, 1.0)
    s.add_connection(1, 5, s.negotiated, 3.0, expcmdsn=3, maxcmdsn=64)
    s.connection_recovered(0)
    watch = [(t, t.heard) for t in (quiet, alive)]
    for task in (quiet, alive):
        s.task_reassign(task, 1)
    sent(s, 1)
    s.watch_reassigned(watch, 4.0)
    assert s.next_timer() == 4.0 + REASSIGN_GRACE
    s.receive(1, frame(data_in(alive.itt, 0, 0, b"x" * 4)), 5.0)  # the target resumed this one
    old_itt = quiet.itt
    assert s.handle_timer(4.0 + REASSIGN_GRACE) == []
    (again,) = sent(s, 1)  # only the quiet one goes out again, as a new command
    assert isinstance(again, P.ScsiCommand) and again.itt == quiet.itt != old_itt
    assert again.cmdsn == 3 and quiet.attempts == 1 and s.tasks[alive.itt] is alive
