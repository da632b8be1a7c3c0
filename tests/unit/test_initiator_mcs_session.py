"""The initiator session's MC/S and recovery logic, driven in memory: fake connections record the PDUs the
session sends and the test plays the target (RFC 7143 4.2.2 allegiance, 7.5 Status SNACK, 7.8 Data SNACK,
6.3.4/7.2.2 connection recovery with Logout reason 2 and TASK REASSIGN, 11.16 SNACK fields)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cistern.initiator.params import LoginResult, SessionConfig
from cistern.initiator.session import Session
from cistern.wire import pdu as P
from cistern.wire.constants import (
    DATAIN_STATUS,
    FLAG_FINAL,
    RESERVED_TAG,
    LogoutReason,
    SnackType,
    TmfFunction,
)
from cistern.wire.framing import Frame
from cistern.wire.negotiation import Negotiated

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])


class FakeConnection:
    """Stands for :class:`IscsiProtocol`: records what the session sends."""

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.sent: list[Any] = []
        self.on_frame: Any = None
        self.on_lost: Any = None
        self.last_receive = 0.0
        self.closed = False

    def enter_full_feature(self, *, on_frame: Any, on_lost: Any, **_: Any) -> None:
        self.on_frame, self.on_lost = on_frame, on_lost

    def send(self, pdu: Any) -> None:
        if self.closed:
            from cistern.initiator.errors import ConnectionLost

            raise ConnectionLost("closed")
        self.sent.append(pdu)

    def abort(self, exc: BaseException | None = None) -> None:
        self.closed = True
        handler, self.on_lost = self.on_lost, None
        if handler is not None:
            handler(exc)

    def close(self) -> None:
        self.closed = True

    def deliver(self, pdu: Any, digest_ok: bool = True) -> None:
        self.on_frame(Frame(pdu, b"", data_digest_ok=digest_ok))

    def of(self, kind: type) -> list[Any]:
        return [p for p in self.sent if isinstance(p, kind)]


class Harness:
    def __init__(self, erl: int, connections: int = 4, **config: Any) -> None:
        self.negotiated = Negotiated(
            error_recovery_level=erl,
            max_connections=connections,
            default_time2wait=0,
            default_time2retain=5,
            immediate_data=False,
        )
        self.config = SessionConfig(host="127.0.0.1", target_name="iqn.x:y", nop_interval=0, **config)
        self.conns: list[FakeConnection] = []
        self.logins: list[tuple[int, int]] = []  # (tsih, cid)

    def result(self, tsih: int = 7) -> LoginResult:
        return LoginResult(negotiated=self.negotiated, tsih=tsih, expstatsn=1, expcmdsn=1, maxcmdsn=64)

    async def login(self, config: SessionConfig, tsih: int, cid: int = 0, cmdsn: int = 0) -> Any:
        self.logins.append((tsih, cid))
        conn = FakeConnection(cid)
        self.conns.append(conn)
        return conn, self.result(tsih or 7)

    async def session(self, connections: int) -> Session:
        first, result = await self.login(self.config, 0)
        s = Session(self.config, self.login, first, result)
        await s.open_connections(connections)
        return s


def data_in(itt: int, datasn: int, offset: int, data: bytes, statsn: int | None = None) -> P.DataIn:
    flags = FLAG_FINAL | (DATAIN_STATUS if statsn is not None else 0)
    pdu = P.DataIn(
        flags=flags,
        itt=itt,
        ttt=RESERVED_TAG,
        statsn=statsn or 0,
        expcmdsn=1,
        maxcmdsn=64,
        datasn=datasn,
        buffer_offset=offset,
    )
    pdu.data = data
    return pdu


def response(itt: int, statsn: int) -> P.ScsiResponse:
    return P.ScsiResponse(flags=FLAG_FINAL, itt=itt, statsn=statsn, expcmdsn=1, maxcmdsn=64)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


@pytest.mark.parametrize("balance", ["round_robin", "least_queue_depth"])
def test_commands_are_spread_over_every_connection(balance: str) -> None:
    async def go() -> None:
        h = Harness(erl=0, load_balance=balance)
        s = await h.session(4)
        assert s.connection_ids == [0, 1, 2, 3]
        assert h.logins == [(0, 0), (7, 1), (7, 2), (7, 3)]  # same TSIH for the added connections
        for _ in range(8):
            s.submit(0, READ10, read_length=4096)
        counts = [len(c.of(P.ScsiCommand)) for c in h.conns]
        assert counts == [2, 2, 2, 2]
        cmdsns = sorted(p.cmdsn for c in h.conns for p in c.of(P.ScsiCommand))
        assert cmdsns == list(range(1, 9))  # one CmdSN sequence across the connections

    run(go())


def test_remove_connection_sends_logout_reason_1_on_another_cid() -> None:
    async def go() -> None:
        h = Harness(erl=0)
        s = await h.session(3)
        task = asyncio.ensure_future(s.remove_connection(2, via=1))
        await asyncio.sleep(0)
        logout = h.conns[1].of(P.LogoutRequest)[-1]
        assert (logout.reason, logout.cid) == (LogoutReason.CLOSE_CONNECTION, 2)
        h.conns[1].deliver(P.LogoutResponse(itt=logout.itt, statsn=1, expcmdsn=1, maxcmdsn=64))
        await task
        assert s.connection_ids == [0, 1] and h.conns[2].closed
        for _ in range(4):
            s.submit(0, READ10, read_length=512)
        assert not h.conns[2].of(P.ScsiCommand)

    run(go())


def test_data_digest_error_at_erl1_asks_a_data_snack_and_waits_for_the_data() -> None:
    async def go() -> None:
        h = Harness(erl=1)
        s = await h.session(1)
        cmd = s.submit(0, READ10, read_length=8)
        conn = h.conns[0]
        itt = conn.of(P.ScsiCommand)[0].itt
        conn.deliver(data_in(itt, 0, 0, b"AAAA"))
        conn.deliver(data_in(itt, 1, 4, b"XXXX", statsn=1), digest_ok=False)  # corrupted, status in it
        snack = conn.of(P.SnackRequest)[-1]
        assert (snack.snack_type, snack.itt, snack.begrun, snack.runlength) == (SnackType.DATA_R2T, itt, 1, 0)
        assert not cmd.done
        conn.deliver(data_in(itt, 1, 4, b"BBBB", statsn=1))  # the retransmission
        result = await cmd
        assert bytes(result.data) == b"AAAABBBB"

    run(go())


def test_datasn_gap_asks_the_missing_run_and_holds_the_status() -> None:
    async def go() -> None:
        h = Harness(erl=1)
        s = await h.session(1)
        cmd = s.submit(0, READ10, read_length=12)
        conn = h.conns[0]
        itt = conn.of(P.ScsiCommand)[0].itt
        conn.deliver(data_in(itt, 0, 0, b"AAAA"))
        conn.deliver(data_in(itt, 2, 8, b"CCCC", statsn=1))  # DataSN 1 lost
        snack = conn.of(P.SnackRequest)[-1]
        assert (snack.begrun, snack.runlength) == (1, 1)
        assert not cmd.done
        conn.deliver(data_in(itt, 1, 4, b"BBBB"))
        assert bytes((await cmd).data) == b"AAAABBBBCCCC"

    run(go())


def test_statsn_gap_asks_a_status_snack_and_holds_expstatsn() -> None:
    async def go() -> None:
        h = Harness(erl=1)
        s = await h.session(1)
        a = s.submit(0, READ10, read_length=0)
        b = s.submit(0, READ10, read_length=0)
        conn = h.conns[0]
        itt_a, itt_b = (p.itt for p in conn.of(P.ScsiCommand))
        conn.deliver(response(itt_b, 2))  # StatSN 1 (a's response) was lost
        snack = conn.of(P.SnackRequest)[-1]
        assert (snack.snack_type, snack.begrun, snack.runlength) == (SnackType.STATUS, 1, 1)
        s.submit(0, READ10, read_length=0)
        assert conn.of(P.ScsiCommand)[-1].expstatsn == 1  # not acknowledged past the gap
        conn.deliver(response(itt_a, 1))
        await a
        await b
        s.submit(0, READ10, read_length=0)
        assert conn.of(P.ScsiCommand)[-1].expstatsn == 3

    run(go())


def test_erl0_loss_of_one_connection_reinstates_the_session() -> None:
    async def go() -> None:
        h = Harness(erl=0)
        s = await h.session(2)
        cmd = s.submit(0, READ10, read_length=4)
        h.conns[0].abort()
        await asyncio.sleep(0.5)
        assert s.reconnects == 1
        assert h.logins[2] == (0, 0)  # TSIH 0: session reinstatement
        assert h.conns[1].closed  # the other connection went with the session
        new = h.conns[2]
        itt = new.of(P.ScsiCommand)[0].itt
        new.deliver(data_in(itt, 0, 0, b"DATA", statsn=1))
        assert bytes((await cmd).data) == b"DATA"

    run(go())


def test_erl2_connection_recovery_logout_reason_2_new_cid_and_task_reassign() -> None:
    async def go() -> None:
        h = Harness(erl=2)
        s = await h.session(2)
        cmd = s.submit(0, WRITE10, data_out=b"W" * 8)
        # round robin put it on CID 1; the target asked for the data with R2TSN 0 and 1
        old = next(c for c in h.conns if c.of(P.ScsiCommand))
        itt = old.of(P.ScsiCommand)[0].itt
        old.deliver(
            P.R2T(
                itt=itt, ttt=0x99, statsn=1, expcmdsn=1, maxcmdsn=64, r2tsn=0, desired_data_transfer_length=4
            )
        )
        old.abort()  # connection failure
        await asyncio.sleep(0.05)
        survivor = h.conns[0] if old is h.conns[1] else h.conns[1]
        logout = survivor.of(P.LogoutRequest)[-1]
        assert (logout.reason, logout.cid) == (LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY, old.cid)
        survivor.deliver(P.LogoutResponse(itt=logout.itt, statsn=1, expcmdsn=1, maxcmdsn=64, time2retain=20))
        await asyncio.sleep(0.05)
        assert h.logins[-1][0] == 7 and h.logins[-1][1] not in (0, old.cid)  # same TSIH, new CID
        new = h.conns[-1]
        tmf = new.of(P.TaskMgmtRequest)[-1]
        assert tmf.function == TmfFunction.TASK_REASSIGN
        assert (tmf.referenced_task_tag, tmf.expdatasn) == (itt, 1)  # next R2TSN expected
        new.deliver(P.TaskMgmtResponse(itt=tmf.itt, statsn=1, expcmdsn=1, maxcmdsn=64))
        new.deliver(
            P.R2T(
                itt=itt,
                ttt=0x9A,
                statsn=1,
                expcmdsn=1,
                maxcmdsn=64,
                r2tsn=1,
                buffer_offset=4,
                desired_data_transfer_length=4,
            )
        )
        outs = new.of(P.DataOut)
        assert outs and outs[-1].buffer_offset == 4 and outs[-1].ttt == 0x9A
        new.deliver(response(itt, 1))
        await cmd
        assert s.tsih == 7 and s.reconnects == 0 and s.connection_recoveries == 1

    run(go())


def test_scsi_response_with_a_data_digest_error_is_asked_again_at_erl1() -> None:
    async def go() -> None:
        h = Harness(erl=1)
        s = await h.session(1)
        cmd = s.submit(0, READ10, read_length=0)
        conn = h.conns[0]
        itt = conn.of(P.ScsiCommand)[0].itt
        conn.deliver(response(itt, 1), digest_ok=False)  # its sense data arrived damaged
        snack = conn.of(P.SnackRequest)[-1]
        assert (snack.snack_type, snack.begrun, snack.runlength) == (SnackType.STATUS, 1, 1)
        assert not cmd.done
        conn.deliver(response(itt, 1))
        await cmd
        s.submit(0, READ10, read_length=0)
        assert conn.of(P.ScsiCommand)[-1].expstatsn == 2

    run(go())


def test_scsi_response_waits_for_data_in_asked_again() -> None:
    async def go() -> None:
        h = Harness(erl=1)
        s = await h.session(1)
        cmd = s.submit(0, READ10, read_length=4)
        conn = h.conns[0]
        itt = conn.of(P.ScsiCommand)[0].itt
        conn.deliver(data_in(itt, 0, 0, b"XXXX"), digest_ok=False)
        conn.deliver(response(itt, 1))  # status in its own PDU (ERL 1 targets do that)
        assert not cmd.done
        conn.deliver(data_in(itt, 0, 0, b"GOOD"))
        assert bytes((await cmd).data) == b"GOOD"

    run(go())


def test_erl2_same_cid_reinstatement_resumes_a_read_from_the_next_datasn() -> None:
    async def go() -> None:
        h = Harness(erl=2, connection_recovery="reinstate")
        s = await h.session(1)
        cmd = s.submit(0, READ10, read_length=8)
        old = h.conns[0]
        itt = old.of(P.ScsiCommand)[0].itt
        old.deliver(data_in(itt, 0, 0, b"AAAA"))
        old.abort()
        await asyncio.sleep(0.05)
        assert h.logins[-1] == (7, 0)  # same TSIH, same CID: connection reinstatement
        new = h.conns[-1]
        tmf = new.of(P.TaskMgmtRequest)[-1]
        assert (tmf.function, tmf.referenced_task_tag, tmf.expdatasn) == (TmfFunction.TASK_REASSIGN, itt, 1)
        new.deliver(P.TaskMgmtResponse(itt=tmf.itt, statsn=1, expcmdsn=1, maxcmdsn=64))
        new.deliver(data_in(itt, 1, 4, b"BBBB", statsn=2))
        assert bytes((await cmd).data) == b"AAAABBBB"
        assert s.reconnects == 0 and s.connection_recoveries == 1

    run(go())


def test_erl2_recovery_that_cannot_log_in_within_time2retain_fails_its_tasks() -> None:
    async def go() -> None:
        h = Harness(erl=2, connection_recovery="reinstate")
        h.negotiated = h.negotiated.replace(default_time2retain=1)
        s = await h.session(1)
        cmd = s.submit(0, READ10, read_length=8)

        async def refuse(*_: Any, **__: Any) -> Any:
            from cistern.initiator.errors import ConnectionLost

            raise ConnectionLost("target unreachable")

        s._login = refuse
        h.conns[0].abort()
        from cistern.initiator.errors import SessionFailed

        with pytest.raises(SessionFailed, match="could not be recovered"):
            await cmd

    run(go())
