"""Hostile and edge-case input in full feature phase, against a real in-process target (RFC 7143 4, 7, 11).

Every test asserts the exact protocol answer (Reject reason, SCSI status, TMF response, silence or a
dropped connection) and that the server still serves another session afterwards.
"""

from __future__ import annotations

import asyncio

from test_target_harness import (
    BLOCK,
    CHECK_CONDITION,
    GOOD,
    INITIATOR,
    INITIATOR2,
    IQN,
    IQN2,
    TUR,
    Client,
    assert_serving,
    logged_in,
    parse_text,
    read10,
    run,
    running_server,
    text,
    write10,
)

from cistern.target.model import TargetLimits
from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG

R2T_ONLY = (("ImmediateData", "No"), ("InitialR2T", "Yes"))


def store_bytes(store: object, offset: int, n: int) -> bytes:
    return bytes(store._data[offset : offset + n])  # type: ignore[attr-defined]


async def expect_reject(c: Client, reason: int, header: bytes) -> P.Reject:
    rej = await c.expect(P.Reject)
    assert isinstance(rej, P.Reject)
    assert rej.reason == reason, rej
    assert bytes(rej.data) == header[:48]
    assert rej.itt == RESERVED_TAG
    return rej


# ---- opcodes


def test_unknown_opcode_is_rejected_with_command_not_supported() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            bhs = bytearray(48)
            bhs[0] = 0x1C
            bhs[16:20] = (0x1234).to_bytes(4, "big")
            await c.send_raw(bytes(bhs))
            await expect_reject(c, 0x05, bytes(bhs))
            await c.ready()  # the connection goes on
            await assert_serving(s.port)

    run(main())


def test_snack_at_erl0_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            snack = P.SnackRequest(itt=0x55, begrun=0, runlength=0)
            await c.send(snack)
            await expect_reject(c, 0x04, bytes(snack.encode_header()))
            await c.ready()
            await assert_serving(s.port)

    run(main())


def test_target_opcode_from_the_initiator_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            bogus = P.R2T(itt=7, ttt=9)
            await c.send(bogus)
            await expect_reject(c, 0x04, bytes(bogus.encode_header()))
            await c.ready()

    run(main())


def test_login_request_in_full_feature_phase_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            login = c.login_pdu(b"", csg=1, nsg=3)
            await c.send(login)
            await expect_reject(c, 0x04, bytes(login.encode_header()))
            await c.ready()

    run(main())


# ---- framing and digests


def test_data_segment_above_max_recv_drops_the_connection() -> None:
    async def main() -> None:
        limits = TargetLimits(max_recv_data_segment_length=8192)
        async with running_server(limits=limits) as s:
            c = await logged_in(s.port)
            await c.ready()
            nop = P.NopOut(itt=c.next_itt(), cmdsn=c.take_cmdsn(), data=bytes(8196))
            try:
                await c.send(nop)
            except ConnectionResetError:
                pass
            assert await c.expect_closed() == []
            await assert_serving(s.port)

    run(main())


DIGESTS = (("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C"))


def test_header_digest_mismatch_drops_the_connection() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=DIGESTS)
            assert c.header_digest and c.data_digest
            await c.ready()  # digests work both ways
            wire = bytearray(
                b"".join(bytes(p) for p in _framed(c, P.NopOut(itt=c.next_itt(), cmdsn=c.cmdsn)))
            )
            wire[50] ^= 1  # inside the header digest
            await c.send_raw(bytes(wire))
            assert await c.expect_closed() == []
            await assert_serving(s.port)

    run(main())


def _framed(c: Client, pdu: P.PDU) -> list[bytes]:
    from cistern.wire.framing import frame_pdu

    return [bytes(p) for p in frame_pdu(pdu, header_digest=c.header_digest, data_digest=c.data_digest)]


def test_data_digest_mismatch_on_nop_out_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=DIGESTS)
            await c.ready()
            nop = P.NopOut(itt=c.next_itt(), cmdsn=c.take_cmdsn(), data=b"ping-data")
            await c.send(nop, corrupt_data_digest=True)
            await expect_reject(c, 0x02, bytes(nop.encode_header()))
            c.cmdsn = (c.cmdsn - 1) & 0xFFFFFFFF  # the discarded PDU never consumed its CmdSN
            await c.ready()
            await c.nop_ping(b"after")

    run(main())


def test_data_digest_mismatch_on_data_out_fails_the_command() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=(*DIGESTS, *R2T_ONLY))
            await c.ready()
            payload = b"\xaa" * 1024
            cmd = c.command_pdu(write10(10, 2), write_len=len(payload))
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            assert isinstance(r2t, P.R2T)
            dout = P.DataOut(
                flags=FLAG_FINAL, itt=cmd.itt, ttt=r2t.ttt, datasn=0, buffer_offset=0, data=payload
            )
            await c.send(dout, corrupt_data_digest=True)
            await expect_reject(c, 0x02, bytes(dout.encode_header()))
            res = await c.collect(cmd.itt)
            assert res.status == CHECK_CONDITION and res.sense[2] & 0xF == 0x0B  # ABORTED COMMAND
            assert (res.sense[12], res.sense[13]) == (0x47, 0x05)
            assert store_bytes(s.store, 10 * BLOCK, 1024) == bytes(1024)
            await c.ready()
            await assert_serving(s.port)

    run(main())


# ---- CmdSN window


def test_cmdsn_outside_the_window_is_silently_dropped() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            for bad in ((c.cmdsn + 100000) & 0xFFFFFFFF, (c.cmdsn - 1) & 0xFFFFFFFF):
                cmd = c.command_pdu(TUR)
                cmd.cmdsn = bad
                c.cmdsn = (c.cmdsn - 1) & 0xFFFFFFFF
                await c.send(cmd)
                await c.expect_silence(0.5)
            await c.ready()  # the window did not move: the session still works
            await assert_serving(s.port)

    run(main())


def test_commands_ahead_of_expcmdsn_wait_for_the_gap() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            first = c.command_pdu(TUR)
            second = c.command_pdu(TUR)
            await c.send(second)
            await c.expect_silence(0.3)  # held: CmdSN ahead of ExpCmdSN
            await c.send(first)
            a = await c.recv()
            b = await c.recv()
            assert isinstance(a, P.ScsiResponse) and isinstance(b, P.ScsiResponse)
            assert {a.itt, b.itt} == {first.itt, second.itt}
            assert b.expcmdsn == c.cmdsn

    run(main())


def test_duplicate_itt_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=R2T_ONLY)
            await c.ready()
            cmd = c.command_pdu(write10(0, 1), write_len=BLOCK)
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            dup = c.command_pdu(TUR, itt=cmd.itt)
            await c.send(dup)
            await expect_reject(c, 0x07, bytes(dup.encode_header()))
            # the first command is untouched: finish it
            assert isinstance(r2t, P.R2T)
            await c.send(
                P.DataOut(flags=FLAG_FINAL, itt=cmd.itt, ttt=r2t.ttt, buffer_offset=0, data=b"\x11" * BLOCK)
            )
            assert (await c.collect(cmd.itt)).status == GOOD
            await c.ready()  # the rejected command's CmdSN was consumed: no gap holds later commands
            assert store_bytes(s.store, 0, BLOCK) == b"\x11" * BLOCK

    run(main())


# ---- Data-Out


def test_data_out_for_an_unknown_itt_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            await c.send(P.DataOut(flags=FLAG_FINAL, itt=0xDEAD, ttt=5, buffer_offset=0, data=b"x" * 512))
            rej = await c.expect(P.Reject)  # RFC 7143 11.17.1: Invalid PDU Field, nothing written
            assert isinstance(rej, P.Reject) and rej.reason == 0x09
            await c.ready()
            assert store_bytes(s.store, 0, 512) == bytes(512)

    run(main())


def _wrong_data_out(field: str) -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=R2T_ONLY)
            await c.ready()
            cmd = c.command_pdu(write10(20, 2), write_len=2 * BLOCK)
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            assert isinstance(r2t, P.R2T) and r2t.desired_data_transfer_length == 2 * BLOCK
            first = P.DataOut(itt=cmd.itt, ttt=r2t.ttt, datasn=0, buffer_offset=0, data=b"\x77" * BLOCK)
            second = P.DataOut(
                flags=FLAG_FINAL,
                itt=cmd.itt,
                ttt=r2t.ttt,
                datasn=1,
                buffer_offset=BLOCK,
                data=b"\x77" * BLOCK,
            )
            if field == "datasn":
                second.datasn = 5
            elif field == "offset":
                second.buffer_offset = 0
            elif field == "ttt":
                second.ttt = r2t.ttt + 1000
            elif field == "final":
                first.flags = FLAG_FINAL
            await c.send(first)
            await c.send(second)
            if field == "ttt":  # RFC 7143 11.17.1: a TTT of no R2T is an invalid field, Rejected first
                rej = await c.expect(P.Reject)
                assert isinstance(rej, P.Reject) and rej.reason == 0x09
            res = await c.collect(cmd.itt)
            assert res.status == CHECK_CONDITION
            assert (res.sense[2] & 0xF, res.sense[12]) == (0x0B, 0x4B)  # ABORTED COMMAND, DATA PHASE ERROR
            await c.expect_silence(0.2)  # the late PDU of the failed command is discarded
            assert store_bytes(s.store, 20 * BLOCK, 2 * BLOCK) == bytes(2 * BLOCK)
            res = await c.command(read10(20, 2), read_len=2 * BLOCK)
            assert res.status == GOOD and res.data == bytes(2 * BLOCK)
            await assert_serving(s.port)

    run(main())


def test_data_out_with_wrong_datasn_fails_the_command() -> None:
    _wrong_data_out("datasn")


def test_data_out_with_wrong_offset_fails_the_command() -> None:
    _wrong_data_out("offset")


def test_data_out_with_unknown_ttt_fails_the_command() -> None:
    _wrong_data_out("ttt")


def test_data_out_with_early_final_bit_fails_the_command() -> None:
    _wrong_data_out("final")


def test_immediate_data_above_first_burst_length_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            ops = (("ImmediateData", "Yes"), ("FirstBurstLength", "4096"), ("MaxBurstLength", "262144"))
            c = await logged_in(s.port, operational=ops)
            await c.ready()
            cmd = c.command_pdu(write10(0, 16), write_len=16 * BLOCK, immediate_data=b"\x99" * 8192)
            await c.send(cmd)
            await expect_reject(c, 0x04, bytes(cmd.encode_header()))
            await c.expect_silence(0.2)
            assert store_bytes(s.store, 0, 8192) == bytes(8192)
            await c.ready()  # its CmdSN was consumed
            await assert_serving(s.port)

    run(main())


def test_write_above_the_max_write_buffer_is_refused_without_r2t() -> None:
    async def main() -> None:
        async with running_server(limits=TargetLimits(max_write_buffer=64 * 1024)) as s:
            c = await logged_in(s.port, operational=R2T_ONLY)
            await c.ready()
            cmd = c.command_pdu(write10(0, 256), write_len=128 * 1024)
            await c.send(cmd)
            res = await c.collect(cmd.itt)
            assert res.status == CHECK_CONDITION and res.sense[2] & 0xF == 0x05
            assert all(not isinstance(p, P.R2T) for p in res.pdus)
            await c.ready()

    run(main())


# ---- NOP


def test_nop_out_ping_is_echoed() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            rsp = await c.nop_ping(b"hello, target")
            assert rsp.data == b"hello, target" and rsp.ttt == RESERVED_TAG
            assert rsp.expcmdsn == c.cmdsn

    run(main())


def test_target_ping_answered_keeps_the_connection() -> None:
    async def main() -> None:
        async with running_server(nop_interval=0.15, nop_timeout=0.4) as s:
            c = await logged_in(s.port)
            for _ in range(3):
                ping = await c.expect(P.NopIn, timeout=1.0)
                assert isinstance(ping, P.NopIn) and ping.itt == RESERVED_TAG and ping.ttt != RESERVED_TAG
                await c.send(
                    P.NopOut(itt=RESERVED_TAG, ttt=ping.ttt, lun=ping.lun, cmdsn=c.cmdsn, immediate=True)
                )
            await c.ready()

    run(main())


def test_unanswered_target_ping_drops_the_connection() -> None:
    async def main() -> None:
        async with running_server(nop_interval=0.1, nop_timeout=0.3) as s:
            c = await logged_in(s.port)
            got = await c.expect_closed(timeout=2.0)
            assert got and all(isinstance(p, P.NopIn) for p in got)
            await assert_serving(s.port)

    run(main())


# ---- Logout


def test_logout_is_answered_then_the_connection_closes() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            statsn = c.expstatsn
            logout = P.LogoutRequest(flags=FLAG_FINAL | 0, itt=c.next_itt(), cid=1, cmdsn=c.take_cmdsn())
            await c.send(logout)
            rsp = await c.expect(P.LogoutResponse)
            assert isinstance(rsp, P.LogoutResponse)
            assert rsp.response == 0 and rsp.itt == logout.itt and rsp.statsn == statsn
            assert await c.expect_closed() == []
            await asyncio.sleep(0.05)
            assert len(s.server.sessions) == 0
            await assert_serving(s.port)

    run(main())


# ---- Task management


def tmf(c: Client, function: int, *, ref: int = RESERVED_TAG, refcmdsn: int = 0) -> P.TaskMgmtRequest:
    return P.TaskMgmtRequest(
        flags=0x80 | function,
        itt=c.next_itt(),
        referenced_task_tag=ref,
        cmdsn=c.take_cmdsn(immediate=True),
        refcmdsn=refcmdsn,
        immediate=True,
    )


def test_abort_task_waiting_for_r2t_data() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=R2T_ONLY)
            await c.ready()
            cmd = c.command_pdu(write10(30, 1), write_len=BLOCK)
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            req = tmf(c, 1, ref=cmd.itt, refcmdsn=cmd.cmdsn)
            await c.send(req)
            rsp = await c.expect(P.TaskMgmtResponse)
            assert isinstance(rsp, P.TaskMgmtResponse) and rsp.itt == req.itt and rsp.response == 0
            assert isinstance(r2t, P.R2T)
            await c.send(P.DataOut(flags=FLAG_FINAL, itt=cmd.itt, ttt=r2t.ttt, data=b"\x55" * BLOCK))
            await c.expect_silence(0.3)  # no SCSI Response for the aborted command
            assert store_bytes(s.store, 30 * BLOCK, BLOCK) == bytes(BLOCK)
            await c.ready()

    run(main())


def test_abort_task_of_an_unknown_itt() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            req = tmf(c, 1, ref=0xABCDEF, refcmdsn=c.cmdsn)
            await c.send(req)
            rsp = await c.expect(P.TaskMgmtResponse)
            assert isinstance(rsp, P.TaskMgmtResponse) and rsp.response == 1  # TASK DOES NOT EXIST

    run(main())


def test_lun_reset() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            req = tmf(c, 5)
            await c.send(req)
            rsp = await c.expect(P.TaskMgmtResponse)
            assert isinstance(rsp, P.TaskMgmtResponse) and rsp.response == 0
            res = await c.command(TUR)  # SAM: the reset shows as a unit attention
            assert res.status == CHECK_CONDITION and res.sense[12] == 0x29
            bad = tmf(c, 5)
            bad.lun = P.encode_lun(9)
            await c.send(bad)
            rsp = await c.expect(P.TaskMgmtResponse)
            assert isinstance(rsp, P.TaskMgmtResponse) and rsp.response == 2  # LUN DOES NOT EXIST

    run(main())


# ---- Text / discovery


def test_send_targets_lists_only_accessible_targets() -> None:
    async def main() -> None:
        async with running_server() as s:
            results = {}
            for name in (INITIATOR, INITIATOR2):
                c = await logged_in(s.port, initiator=name, discovery=True)
                req = P.TextRequest(
                    flags=FLAG_FINAL,
                    itt=c.next_itt(),
                    cmdsn=c.take_cmdsn(),
                    data=text(("SendTargets", "All")),
                )
                await c.send(req)
                rsp = await c.expect(P.TextResponse)
                assert isinstance(rsp, P.TextResponse) and rsp.final and rsp.ttt == RESERVED_TAG
                results[name] = [v for k, v in parse_text(rsp.data) if k == "TargetName"]
                addresses = [v for k, v in parse_text(rsp.data) if k == "TargetAddress"]
                assert addresses and all(a == f"127.0.0.1:{s.port},1" for a in addresses)
                # a SCSI command in a discovery session is a protocol error
                cmd = c.command_pdu(TUR)
                await c.send(cmd)
                await expect_reject(c, 0x04, bytes(cmd.encode_header()))
                await c.close()
            assert results[INITIATOR] == [IQN]
            assert sorted(results[INITIATOR2]) == sorted([IQN, IQN2])

    run(main())


def test_send_targets_request_split_over_continued_text_requests() -> None:
    """A Text Request sent in pieces with C=1 (the key itself cut in two) is answered once it is whole."""

    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, initiator=INITIATOR2, discovery=True)
            whole = text(("SendTargets", "All"))
            itt = c.next_itt()
            await c.send(P.TextRequest(flags=0x40, itt=itt, cmdsn=c.take_cmdsn(), data=whole[:7]))
            part = await c.expect(P.TextResponse)
            assert isinstance(part, P.TextResponse)
            assert not part.final and part.ttt != RESERVED_TAG and not part.data
            await c.send(
                P.TextRequest(flags=FLAG_FINAL, itt=itt, ttt=part.ttt, cmdsn=c.take_cmdsn(), data=whole[7:])
            )
            rsp = await c.expect(P.TextResponse)
            assert isinstance(rsp, P.TextResponse) and rsp.final and rsp.ttt == RESERVED_TAG
            assert sorted(v for k, v in parse_text(rsp.data) if k == "TargetName") == sorted([IQN, IQN2])
            # continuing with a TTT the target never gave is a protocol error
            bad = P.TextRequest(flags=FLAG_FINAL, itt=c.next_itt(), ttt=0x1234, cmdsn=c.take_cmdsn())
            await c.send(bad)
            await expect_reject(c, 0x04, bytes(bad.encode_header()))
            await c.close()

    run(main())


# ---- session reinstatement


def test_session_reinstatement_closes_the_old_connection() -> None:
    async def main() -> None:
        async with running_server() as s:
            old = await logged_in(s.port)
            await old.ready()
            new = await logged_in(s.port)  # same InitiatorName + ISID, TSIH 0
            assert new.tsih != old.tsih
            assert await old.expect_closed() == []
            await new.ready()
            assert len(s.server.sessions) == 1

    run(main())


# ---- PREEMPT AND ABORT (SPC-4 5.13.11.2.6) with TAS=1


def _prout(service_action: int, pr_type: int, key: int, sa_key: int) -> tuple[bytes, bytes]:
    cdb = bytes([0x5F, service_action, pr_type & 0x0F, 0, 0, 0, 0, 0, 24, 0])
    params = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(8)
    return cdb, params


def test_preempt_and_abort_ends_the_preempted_nexus_tasks_with_task_aborted() -> None:
    async def main() -> None:
        async with running_server() as s:
            a = await logged_in(s.port, initiator=INITIATOR)
            b = await logged_in(s.port, initiator=INITIATOR2)
            await a.ready()
            await b.ready()

            async def prout(c: Client, sa: int, key: int, sa_key: int) -> int:
                cdb, params = _prout(sa, 1, key, sa_key)  # type 1: WRITE EXCLUSIVE
                pdu = c.command_pdu(cdb, write_len=len(params), immediate_data=params)
                await c.send(pdu)
                return (await c.collect(pdu.itt)).status

            assert await prout(a, 0x00, 0, 0xA) == 0  # REGISTER
            assert await prout(a, 0x01, 0xA, 0) == 0  # RESERVE
            assert await prout(b, 0x00, 0, 0xB) == 0  # REGISTER
            # A starts a write and holds back its data: the task waits in the target for Data-Out
            pending = a.command_pdu(write10(0, 8), write_len=8 * BLOCK)
            await a.send(pending)
            first = await a.recv()
            assert isinstance(first, P.R2T) and first.itt == pending.itt
            assert await prout(b, 0x05, 0xB, 0xA) == 0  # PREEMPT AND ABORT A's registration
            rsp = await a.recv()
            assert isinstance(rsp, P.ScsiResponse) and rsp.itt == pending.itt
            assert rsp.status == 0x40  # TASK ABORTED, not silence: TAS=1
            await a.close()
            await b.close()

    run(main())
