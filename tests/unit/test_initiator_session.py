"""The initiator session's full feature phase against a scripted fake connection (no sockets): CmdSN
window, immediate/unsolicited data and R2T, Data-In placement and phase collapse, residuals, sense,
ABORT TASK, target NOP-In, hostile PDUs, and re-issue after a lost connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cistern.initiator.errors import CommandAborted, ScsiCheckCondition, SessionFailed
from cistern.initiator.params import LoginResult, ReconnectPolicy, SessionConfig
from cistern.initiator.session import Session, State
from cistern.wire.constants import (
    DATAIN_STATUS,
    FLAG_FINAL,
    RESERVED_TAG,
    RSP_UNDERFLOW,
    TmfResponse,
)
from cistern.wire.framing import Frame
from cistern.wire.negotiation import Negotiated
from cistern.wire.pdu import (
    PDU,
    R2T,
    DataIn,
    DataOut,
    NopIn,
    NopOut,
    ScsiCommand,
    ScsiResponse,
    TaskMgmtRequest,
    TaskMgmtResponse,
    encode_lun,
    sense_segment,
)


def aio(fn: Any) -> Any:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""

    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 10))

    run.__name__ = fn.__name__
    return run


class FakeConn:
    """Stands in for IscsiProtocol: records sent PDUs, lets the test deliver frames."""

    def __init__(self) -> None:
        self.sent: list[PDU] = []
        self.on_frame: Any = None
        self.on_lost: Any = None
        self.sink: Any = None
        self.transport = None
        self.last_receive = 0.0
        self.closed = False

    def enter_full_feature(self, *, on_frame: Any, on_lost: Any, sink: Any, **_: Any) -> None:
        self.on_frame, self.on_lost, self.sink = on_frame, on_lost, sink

    def send(self, pdu: PDU) -> None:
        self.sent.append(pdu)

    def deliver(self, pdu: PDU) -> None:
        """What IscsiProtocol.buffer_updated does: sink for the data, then the handler."""
        data = bytes(pdu.data)
        sunk = False
        if data and self.sink is not None:
            target = self.sink(pdu)
            if target is not None and len(target) >= len(data):
                target[: len(data)] = data
                pdu.data = target[: len(data)]
                sunk = True
        try:
            self.on_frame(Frame(pdu, b"", None, True, sunk))
        except Exception as exc:
            self.abort(exc)

    def abort(self, exc: BaseException | None = None) -> None:
        self.closed = True
        handler, self.on_lost = self.on_lost, None
        if handler is not None:
            handler(exc)

    def close(self) -> None:
        self.closed = True

    def of(self, kind: type) -> list[Any]:
        return [p for p in self.sent if type(p) is kind]


def params(**kw: Any) -> Negotiated:
    base = dict(max_xmit_data_segment_length=1024, first_burst_length=2048, max_burst_length=4096)
    base.update(kw)
    return Negotiated(**base)  # type: ignore[arg-type]


def make(negotiated: Negotiated | None = None, maxcmdsn: int = 100, reconnect: ReconnectPolicy | None = None,
         logins: list[FakeConn] | None = None) -> tuple[Session, FakeConn]:  # fmt: skip
    conn = FakeConn()
    n = negotiated or params()
    config = SessionConfig("127.0.0.1", target_name="iqn.x:t", nop_interval=0)
    config.reconnect = reconnect or ReconnectPolicy(max_attempts=3, initial_delay=0.001)

    async def login(cfg: SessionConfig, tsih: int) -> tuple[Any, LoginResult]:
        if not logins:
            from cistern.initiator.errors import ConnectionLost

            raise ConnectionLost("refused")
        return logins.pop(0), LoginResult(n, 2, 50, 10, 20)

    session = Session(config, login, conn, LoginResult(n, 1, 5, 1, maxcmdsn))  # type: ignore[arg-type]
    return session, conn


def rsp(cmd: ScsiCommand, status: int = 0, statsn: int = 5, maxcmdsn: int = 100, **kw: Any) -> ScsiResponse:
    return ScsiResponse(FLAG_FINAL, 0, status, 0, cmd.itt, 0, statsn, cmd.cmdsn + 1, maxcmdsn, **kw)


@aio
async def test_cmdsn_window_holds_commands_until_maxcmdsn_moves() -> None:
    session, conn = make(maxcmdsn=2)  # ExpCmdSN 1, MaxCmdSN 2: two slots
    cmds = [session.submit(1, b"\x00" * 6) for _ in range(4)]
    sent = conn.of(ScsiCommand)
    assert [c.cmdsn for c in sent] == [1, 2] and session.window == 0
    conn.deliver(rsp(sent[0], maxcmdsn=3))
    assert [c.cmdsn for c in conn.of(ScsiCommand)] == [1, 2, 3]
    assert (await cmds[0]).status == 0
    # a window update with MaxCmdSN < ExpCmdSN - 1 is ignored (RFC 7143 4.2.2.1)
    conn.deliver(NopIn(FLAG_FINAL, 0, RESERVED_TAG, RESERVED_TAG, 6, 10, 5))
    assert len(conn.of(ScsiCommand)) == 3
    conn.deliver(NopIn(FLAG_FINAL, 0, RESERVED_TAG, RESERVED_TAG, 6, 4, 10))
    assert [c.cmdsn for c in conn.of(ScsiCommand)] == [1, 2, 3, 4]
    assert conn.of(ScsiCommand)[-1].expstatsn == 6


@aio
async def test_immediate_and_unsolicited_data_then_r2t() -> None:
    session, conn = make(params(immediate_data=True, initial_r2t=False))
    data = bytes(range(256)) * 24  # 6144 bytes: 1024 immediate, 1024 unsolicited, 4096 by R2T
    cmd = session.submit(1, b"\x2a" + bytes(9), data_out=data)
    (pdu,) = conn.of(ScsiCommand)
    assert bytes(pdu.data) == data[:1024] and not pdu.final and pdu.write
    assert pdu.expected_data_transfer_length == 6144
    (unsolicited,) = conn.of(DataOut)
    assert (unsolicited.ttt, unsolicited.buffer_offset, unsolicited.final) == (RESERVED_TAG, 1024, True)
    conn.deliver(R2T(FLAG_FINAL, encode_lun(1), pdu.itt, 77, 5, 2, 100, 0, 2048, 4096))
    outs = conn.of(DataOut)[1:]
    assert [(o.buffer_offset, len(o.data), o.datasn, o.final, o.ttt) for o in outs] == [
        (2048, 1024, 0, False, 77),
        (3072, 1024, 1, False, 77),
        (4096, 1024, 2, False, 77),
        (5120, 1024, 3, True, 77),
    ]
    assert b"".join(bytes(o.data) for o in [unsolicited, *outs]) == data[1024:]
    conn.deliver(rsp(pdu))
    assert (await cmd).status == 0


@aio
async def test_initial_r2t_without_immediate_data_sends_nothing_unasked() -> None:
    session, conn = make(params(immediate_data=False, initial_r2t=True))
    session.submit(1, b"\x2a" + bytes(9), data_out=bytes(4096))
    (pdu,) = conn.of(ScsiCommand)
    assert pdu.final and not pdu.data and not conn.of(DataOut)


@aio
async def test_data_in_lands_in_buffer_with_phase_collapse_and_residual() -> None:
    session, conn = make()
    cmd = session.submit(1, b"\x28" + bytes(9), read_length=4096)
    (pdu,) = conn.of(ScsiCommand)
    assert pdu.read and pdu.expected_data_transfer_length == 4096
    conn.deliver(DataIn(0, 0, 0, pdu.itt, RESERVED_TAG, 0, 2, 100, 0, 0, 0, data=b"a" * 1024))
    last = DataIn(FLAG_FINAL | DATAIN_STATUS | RSP_UNDERFLOW, 0, 0, pdu.itt, RESERVED_TAG, 5, 2, 100, 1, 1024,
                  2048, data=b"b" * 1024)  # fmt: skip
    conn.deliver(last)
    result = await cmd
    assert result.residual == 2048 and bytes(result.data) == b"a" * 1024 + b"b" * 1024


@aio
async def test_check_condition_sense_becomes_typed_error() -> None:
    session, conn = make()
    task = asyncio.ensure_future(session.execute(1, b"\x00" * 6))
    await asyncio.sleep(0)
    (pdu,) = conn.of(ScsiCommand)
    sense = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0x00])
    conn.deliver(rsp(pdu, status=2, data=sense_segment(sense)))
    with pytest.raises(ScsiCheckCondition) as info:
        await task
    assert (info.value.sense_key, info.value.asc) == (5, 0x25)


@aio
async def test_abort_task_function_complete_fails_the_command() -> None:
    session, conn = make()
    cmd = session.submit(1, b"\x28" + bytes(9), read_length=512)
    abort = asyncio.ensure_future(session.abort_task(cmd))
    await asyncio.sleep(0)
    (tmf,) = conn.of(TaskMgmtRequest)
    assert tmf.function == 1 and tmf.referenced_task_tag == cmd.itt and tmf.refcmdsn == cmd.cmdsn
    assert tmf.immediate and tmf.lun == encode_lun(1)
    conn.deliver(TaskMgmtResponse(FLAG_FINAL, 0, tmf.itt, 5, 2, 100))
    assert await abort == TmfResponse.FUNCTION_COMPLETE
    with pytest.raises(CommandAborted):
        await cmd
    assert session.in_flight == 0


@aio
async def test_target_nop_in_ping_is_answered() -> None:
    _, conn = make()
    conn.deliver(NopIn(FLAG_FINAL, encode_lun(0), RESERVED_TAG, 0x1234, 5, 1, 100))
    (reply,) = conn.of(NopOut)
    assert (reply.itt, reply.ttt, reply.immediate) == (RESERVED_TAG, 0x1234, True)


@aio
async def test_data_in_beyond_the_buffer_drops_the_connection_and_reissues() -> None:
    second = FakeConn()
    session, conn = make(logins=[second])
    cmd = session.submit(1, b"\x28" + bytes(9), read_length=512)
    (pdu,) = conn.of(ScsiCommand)
    conn.deliver(DataIn(0, 0, 0, pdu.itt, RESERVED_TAG, 0, 2, 100, 0, 512, 0, data=b"x" * 512))
    assert conn.closed and session.state is State.RECOVERING
    for _ in range(50):
        await asyncio.sleep(0.001)
        if second.sent:
            break
    (again,) = second.of(ScsiCommand)
    assert again.cmdsn == 10 and again.cdb16 == pdu.cdb16  # the new session's CmdSN
    second.deliver(DataIn(FLAG_FINAL | DATAIN_STATUS, 0, 0, again.itt, RESERVED_TAG, 50, 11, 100, 0, 0, 0,
                          data=b"y" * 512))  # fmt: skip
    assert bytes((await cmd).data) == b"y" * 512
    assert session.reconnects == 1


@aio
async def test_lost_connection_reissues_in_cmdsn_order_and_fails_clearly_when_exhausted() -> None:
    second = FakeConn()
    session, conn = make(logins=[second])
    cmds = [session.submit(1, bytes([0x2A]) + bytes(9), data_out=bytes([i]) * 512) for i in range(3)]
    conn.deliver(rsp(conn.of(ScsiCommand)[1]))  # the middle one completes before the drop
    conn.abort()
    await asyncio.sleep(0.05)
    resent = second.of(ScsiCommand)
    assert [bytes(p.data)[0] for p in resent] == [0, 2] and [p.cmdsn for p in resent] == [10, 11]
    for p in resent:
        second.deliver(rsp(p, statsn=50))
    assert [(await c).status for c in cmds] == [0, 0, 0]
    # now the target goes away for good: the next command fails with SessionFailed, not silence
    late = session.submit(1, b"\x00" * 6)
    second.abort()
    with pytest.raises(SessionFailed):
        await asyncio.wait_for(late.future, 2)
    assert session.state is State.FAILED
