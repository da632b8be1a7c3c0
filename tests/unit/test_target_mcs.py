"""Sessions of several connections on the target (MC/S, RFC 7143 4.2, 6.3.1, 6.3.4, 6.3.5, 11.14), through
real sockets with the raw client of :mod:`tests.unit.test_target_harness`.

What an initiator doing MC/S relies on: a login with the session's ISID+TSIH and a new CID joins the
session (up to the negotiated MaxConnections); CmdSN orders commands across connections (a command ahead of
a gap waits for it, whichever connection carries it); a task's responses come on its own connection; a
Logout of one CID may be sent on another; a session that lost its last connection survives
DefaultTime2Retain seconds and can be continued; a full-feature Text request that declares a new
MaxRecvDataSegmentLength changes the size of the next Data-In PDUs.
"""

from __future__ import annotations

import asyncio

import pytest
from tests.unit.test_target_harness import (
    BLOCK,
    GOOD,
    INITIATOR,
    INITIATOR2,
    IQN,
    Client,
    parse_text,
    read10,
    run,
    running_server,
    text,
    write10,
)

from cistern.config import ConfigError, parse_config
from cistern.target.model import TargetLimits
from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG, LogoutReason
from cistern.wire.login import LoginStatus

MCS = (("MaxConnections", "4"),)


class CidClient(Client):
    """The harness client with a chosen CID (the harness logs in with CID 1)."""

    cid = 1

    def login_pdu(self, data: bytes, **kw: object) -> P.LoginRequest:
        kw.setdefault("cid", self.cid)
        return super().login_pdu(data, **kw)  # type: ignore[arg-type]


async def leading(port: int, operational: tuple[tuple[str, str], ...] = MCS) -> CidClient:
    c = CidClient(*(await asyncio.open_connection("127.0.0.1", port)))
    await c.login(operational=operational)
    await c.ready()
    return c


async def join(
    port: int, first: Client, cid: int, initiator: str = INITIATOR
) -> tuple[CidClient, P.LoginResponse]:
    """Log a connection with CID ``cid`` into ``first``'s session; returns it and the final response."""
    c = CidClient(*(await asyncio.open_connection("127.0.0.1", port)))
    c.cid = cid
    c.isid, c.tsih, c.cmdsn = first.isid, first.tsih, first.cmdsn
    rsp = await c.login_exchange(
        text(("InitiatorName", initiator), ("TargetName", IQN), ("AuthMethod", "None")), csg=0, nsg=1
    )
    if (rsp.status_class, rsp.status_detail) != (0, 0):
        return c, rsp
    rsp = await c.login_exchange(b"", csg=1, nsg=3)
    return c, rsp


def status_of(rsp: P.LoginResponse) -> int:
    return (rsp.status_class << 8) | rsp.status_detail


def write_imm(c: Client, lba: int, payload: bytes, cmdsn: int) -> P.ScsiCommand:
    """WRITE(10) carrying all its data as immediate data (no R2T), with an explicit CmdSN."""
    pdu = c.command_pdu(write10(lba, len(payload) // BLOCK), write_len=len(payload), immediate_data=payload)
    pdu.cmdsn = cmdsn
    return pdu


def test_connections_join_one_session_and_cmdsn_orders_across_them() -> None:
    async def main() -> None:
        async with running_server() as s:
            c1 = await leading(s.port)
            c2, rsp = await join(s.port, c1, cid=2)
            assert status_of(rsp) == 0 and rsp.transit and rsp.tsih == c1.tsih  # same session
            assert len(next(iter(s.server.sessions)).connections) == 2
            # CmdSN n+1 on CID 2 first: held (no answer) until CmdSN n arrives on CID 1
            n = c1.cmdsn
            late = write_imm(c2, 0, b"B" * BLOCK, (n + 1) & 0xFFFFFFFF)
            await c2.send(late)
            await c2.expect_silence(0.3)
            early = write_imm(c1, 0, b"A" * BLOCK, n)
            await c1.send(early)
            r1 = await c1.collect(early.itt)
            r2 = await c2.collect(late.itt)  # each status on the connection that carried the command
            assert r1.status == GOOD and r2.status == GOOD
            assert bytes(await s.store.read(0, BLOCK)) == b"B" * BLOCK  # delivered in CmdSN order: B last
            # a read on CID 2 sees it too
            c2.cmdsn = (n + 2) & 0xFFFFFFFF
            got = await c2.command(read10(0, 1), read_len=BLOCK)
            assert got.status == GOOD and got.data == b"B" * BLOCK
            # an ITT in use on CID 2 is in use in the session: CID 1 gets a Reject (task in progress)
            c2.cmdsn = c1.cmdsn = got.response.expcmdsn  # type: ignore[attr-defined]
            pending = c2.command_pdu(write10(8, 1), write_len=BLOCK)
            c1.cmdsn = c2.cmdsn
            await c2.send(pending)
            assert isinstance(await c2.expect(P.R2T), P.R2T)
            clash = c1.command_pdu(bytes(6), itt=pending.itt)
            await c1.send(clash)
            rej = await c1.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == 0x07  # TASK IN PROGRESS
            for c in (c1, c2):
                await c.close()

    run(main())


def test_join_refusals() -> None:
    async def main() -> None:
        async with running_server(limits=TargetLimits(max_connections=2)) as s:
            c1 = await leading(s.port)
            c2, rsp = await join(s.port, c1, cid=2)
            assert status_of(rsp) == 0
            c3, rsp = await join(s.port, c1, cid=3)  # MaxConnections 2 (the target's limit)
            assert status_of(rsp) == LoginStatus.TOO_MANY_CONNECTIONS
            await c3.expect_closed()
            c4 = CidClient(*(await asyncio.open_connection("127.0.0.1", s.port)))
            c4.isid, c4.tsih, c4.cid = c1.isid, (c1.tsih + 7) & 0xFFFF or 1, 4
            rsp = await c4.login_exchange(
                text(("InitiatorName", INITIATOR), ("TargetName", IQN)), csg=0, nsg=1
            )
            assert status_of(rsp) == LoginStatus.SESSION_DOES_NOT_EXIST
            # another initiator cannot join this session even with its ISID and TSIH
            await c2.close()
            await asyncio.sleep(0.1)
            _c5, rsp = await join(s.port, c1, cid=5, initiator=INITIATOR2)
            assert status_of(rsp) == LoginStatus.CANT_INCLUDE_IN_SESSION
            await c1.close()

    run(main())


def test_session_without_mcs_refuses_a_second_connection() -> None:
    async def main() -> None:
        async with running_server() as s:
            c1 = await leading(s.port, operational=())  # the initiator did not offer MaxConnections: 1
            _c2, rsp = await join(s.port, c1, cid=2)
            assert status_of(rsp) == LoginStatus.TOO_MANY_CONNECTIONS
            await c1.close()

    run(main())


def test_logout_of_another_cid() -> None:
    async def main() -> None:
        async with running_server() as s:
            c1 = await leading(s.port)
            c2, rsp = await join(s.port, c1, cid=2)
            assert status_of(rsp) == 0
            itt = c1.next_itt()
            await c1.send(
                P.LogoutRequest(
                    flags=FLAG_FINAL | int(LogoutReason.CLOSE_CONNECTION),
                    itt=itt,
                    cid=2,
                    cmdsn=c1.take_cmdsn(),
                    expstatsn=c1.expstatsn,
                )
            )
            out = await c1.expect(P.LogoutResponse)
            assert isinstance(out, P.LogoutResponse) and out.response == 0 and out.itt == itt
            await c2.expect_closed()
            await c1.ready()  # CID 1 and the session carry on
            session = next(iter(s.server.sessions))
            assert list(session.connections) == [1]
            await c1.close()

    run(main())


def test_session_outlives_its_last_connection_for_time2retain() -> None:
    async def main() -> None:
        limits = TargetLimits(default_time2retain=5)
        async with running_server(limits=limits) as s:
            c1 = await leading(s.port, operational=(*MCS, ("DefaultTime2Retain", "1")))
            tsih = c1.tsih
            await c1.close()  # dropped without a logout
            await asyncio.sleep(0.2)
            assert [x.tsih for x in s.server.sessions] == [tsih]  # retained
            c2, rsp = await join(s.port, c1, cid=1)  # session continuation, same CID
            assert status_of(rsp) == 0 and rsp.tsih == tsih
            await c2.ready()
            await c2.close()
            await asyncio.sleep(1.5)  # DefaultTime2Retain (1 s) passes with no connection
            assert len(s.server.sessions) == 0
            _c3, rsp = await join(s.port, c1, cid=1)
            assert status_of(rsp) == LoginStatus.SESSION_DOES_NOT_EXIST

    run(main())


def test_full_feature_text_changes_max_recv_data_segment_length() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await leading(s.port)
            itt = c.next_itt()
            await c.send(
                P.TextRequest(
                    flags=FLAG_FINAL,
                    itt=itt,
                    ttt=RESERVED_TAG,
                    cmdsn=c.take_cmdsn(),
                    expstatsn=c.expstatsn,
                    data=text(("MaxRecvDataSegmentLength", "4096")),
                )
            )
            rsp = await c.expect(P.TextResponse)
            answer = dict(parse_text(bytes(rsp.data)))
            assert int(answer["MaxRecvDataSegmentLength"]) >= 512  # the target's own declaration
            got = await c.command(read10(0, 64), read_len=64 * BLOCK)  # 32 KiB
            data_ins = [p for p in got.pdus if isinstance(p, P.DataIn)]
            assert got.status == GOOD and len(data_ins) == 8
            assert all(len(p.data) == 4096 for p in data_ins)
            # an out-of-range declaration is answered Reject and changes nothing
            await c.send(
                P.TextRequest(
                    flags=FLAG_FINAL,
                    itt=c.next_itt(),
                    ttt=RESERVED_TAG,
                    cmdsn=c.take_cmdsn(),
                    expstatsn=c.expstatsn,
                    data=text(("MaxRecvDataSegmentLength", "12")),
                )
            )
            rsp = await c.expect(P.TextResponse)
            assert dict(parse_text(bytes(rsp.data))) == {"MaxRecvDataSegmentLength": "Reject"}
            await c.close()

    run(main())


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("data_pdu_in_order", False, "out-of-order Data PDUs"),
        ("data_sequence_in_order", False, "out-of-order Data PDUs"),
    ],
)
def test_unimplemented_params_are_refused_by_the_config(key: str, value: object, words: str) -> None:
    conf = {
        "targets": [
            {
                "name": IQN,
                "open": True,
                "luns": [{"lun": 0, "backend": "memory", "size": "1M"}],
                "params": {key: value},
            }
        ]
    }
    with pytest.raises(ConfigError) as info:
        parse_config(conf)
    assert words in str(info.value) and f"params.{key}" in str(info.value)


def test_abort_task_sent_on_another_connection() -> None:
    async def main() -> None:
        async with running_server() as s:
            c1 = await leading(s.port, operational=(*MCS, ("ImmediateData", "No"), ("InitialR2T", "Yes")))
            c2, rsp = await join(s.port, c1, cid=2)
            assert status_of(rsp) == 0
            write = c2.command_pdu(write10(16, 1), write_len=BLOCK)
            await c2.send(write)
            r2t = await c2.expect(P.R2T)
            assert isinstance(r2t, P.R2T)
            c1.cmdsn = c2.cmdsn
            itt = c1.next_itt()
            await c1.send(
                P.TaskMgmtRequest(
                    flags=0x80 | 1,  # ABORT TASK
                    itt=itt,
                    referenced_task_tag=write.itt,
                    cmdsn=c1.take_cmdsn(),
                    expstatsn=c1.expstatsn,
                    immediate=True,
                )
            )
            tmf = await c1.expect(P.TaskMgmtResponse)
            assert isinstance(tmf, P.TaskMgmtResponse) and tmf.response == 0 and tmf.itt == itt
            # the aborted task's data, arriving late on its own connection, is discarded: no answer
            await c2.send(
                P.DataOut(
                    flags=FLAG_FINAL, itt=write.itt, ttt=r2t.ttt, datasn=0, buffer_offset=0, data=b"Z" * BLOCK
                )
            )
            await c2.expect_silence(0.3)
            assert bytes(await s.store.read(16 * BLOCK, BLOCK)) == bytes(BLOCK)
            for c in (c1, c2):
                await c.close()

    run(main())


def test_connection_reinstatement_with_the_same_cid() -> None:
    async def main() -> None:
        async with running_server() as s:
            c1 = await leading(s.port)
            again, rsp = await join(s.port, c1, cid=1)  # same CID: the old connection is replaced
            assert status_of(rsp) == 0 and rsp.tsih == c1.tsih
            await c1.expect_closed()
            await again.ready()
            session = next(iter(s.server.sessions))
            assert len(s.server.sessions) == 1 and list(session.connections) == [1]
            await again.close()

    run(main())
