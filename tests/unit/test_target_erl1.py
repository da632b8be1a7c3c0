"""ErrorRecoveryLevel 1 on the target (RFC 7143 7.2-7.4, 11.16), through real sockets with the raw client:
a Data-Out with a data digest error gets a Reject and a recovery R2T (the command completes, right data);
Status SNACK resends a status; Data SNACK resends Data-In by DataSN and R2T SNACK an R2T; DataACK frees the
kept data (a later SNACK for it is rejected); R-Data SNACK resegments to a new MaxRecvDataSegmentLength."""

from __future__ import annotations

from tests.unit.test_target_harness import (
    BLOCK,
    GOOD,
    Client,
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
from cistern.wire.constants import DATAIN_ACK, FLAG_FINAL, RESERVED_TAG, SnackType

ERL1 = (
    ("ErrorRecoveryLevel", "1"),
    ("HeaderDigest", "CRC32C"),
    ("DataDigest", "CRC32C"),
    ("ImmediateData", "No"),
    ("InitialR2T", "Yes"),
)
LIMITS = TargetLimits(error_recovery_level=1)
SNACK_REJECT = 0x03


def snack(c: Client, kind: SnackType, *, itt: int = RESERVED_TAG, ttt: int = RESERVED_TAG, begrun: int = 0,
          runlength: int = 0, expstatsn: int | None = None) -> P.SnackRequest:  # fmt: skip
    return P.SnackRequest(
        flags=FLAG_FINAL | int(kind),
        itt=itt,
        ttt=ttt,
        expstatsn=c.expstatsn if expstatsn is None else expstatsn,
        begrun=begrun,
        runlength=runlength,
    )


def test_erl1_is_negotiated_only_when_the_target_allows_it() -> None:
    async def main() -> None:
        async with running_server() as s:  # default limit: ERL 0
            c = await logged_in(s.port, operational=ERL1)
            assert next(iter(s.server.sessions)).params.error_recovery_level == 0
            await c.ready()
            await c.send(snack(c, SnackType.STATUS))  # SNACK at ERL 0: protocol error
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == 0x04
            await c.close()

    run(main())


def test_corrupted_data_out_is_recovered_with_a_recovery_r2t() -> None:
    async def main() -> None:
        async with running_server(limits=LIMITS) as s:
            c = await logged_in(s.port, operational=ERL1)
            assert next(iter(s.server.sessions)).params.error_recovery_level == 1
            await c.ready()
            payload = bytes(range(256)) * 4  # 2 blocks
            cmd = c.command_pdu(write10(4, 2), write_len=2 * BLOCK)
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            assert isinstance(r2t, P.R2T) and r2t.desired_data_transfer_length == 2 * BLOCK
            first = P.DataOut(itt=cmd.itt, ttt=r2t.ttt, datasn=0, buffer_offset=0, data=payload[:BLOCK])
            second = P.DataOut(
                flags=FLAG_FINAL,
                itt=cmd.itt,
                ttt=r2t.ttt,
                datasn=1,
                buffer_offset=BLOCK,
                data=payload[BLOCK:],
            )
            await c.send(first, corrupt_data_digest=True)
            await c.send(second)
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == 0x02  # data digest error
            again = await c.expect(P.R2T)  # the recovery R2T: exactly the bytes that were lost
            assert isinstance(again, P.R2T) and again.ttt != r2t.ttt and again.r2tsn == 1
            assert (again.buffer_offset, again.desired_data_transfer_length) == (0, BLOCK)
            await c.send(
                P.DataOut(flags=FLAG_FINAL, itt=cmd.itt, ttt=again.ttt, datasn=0, data=payload[:BLOCK])
            )
            rsp = await c.expect(P.ScsiResponse)
            assert isinstance(rsp, P.ScsiResponse) and rsp.status == GOOD and rsp.itt == cmd.itt
            assert bytes(await s.store.read(4 * BLOCK, 2 * BLOCK)) == payload
            await c.close()

    run(main())


def test_status_snack_resends_a_lost_status() -> None:
    async def main() -> None:
        async with running_server(limits=LIMITS) as s:
            c = await logged_in(s.port, operational=ERL1)
            await c.ready()
            res = await c.command(bytes(6))  # TEST UNIT READY
            lost = res.response
            assert isinstance(lost, P.ScsiResponse)
            # as if that response never arrived: ExpStatSN still names it
            await c.send(snack(c, SnackType.STATUS, begrun=lost.statsn, runlength=1, expstatsn=lost.statsn))
            again = await c.expect(P.ScsiResponse)
            assert isinstance(again, P.ScsiResponse)
            assert (again.itt, again.statsn, again.status) == (lost.itt, lost.statsn, GOOD)
            # once acknowledged it is gone: a SNACK for it is rejected
            await c.ready()
            await c.send(snack(c, SnackType.STATUS, begrun=lost.statsn, runlength=1))
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == SNACK_REJECT
            await c.close()

    run(main())


def test_data_snack_data_ack_and_r_data_snack() -> None:
    async def main() -> None:
        async with running_server(limits=LIMITS) as s:
            c = await logged_in(s.port, operational=ERL1)
            await c.ready()
            content = bytes((i * 7) & 0xFF for i in range(64 * BLOCK))
            w = await c.write(0, content)
            assert w.status == GOOD
            cmd = c.command_pdu(read10(0, 64), read_len=64 * BLOCK)  # 32 KiB = 4 Data-In of 8 KiB
            await c.send(cmd)
            res = await c.collect(cmd.itt)
            data_ins = [p for p in res.pdus if isinstance(p, P.DataIn)]
            assert res.status == GOOD and res.data == content and len(data_ins) == 4
            assert isinstance(res.response, P.ScsiResponse)  # no status collapsed into Data-In at ERL 1
            last = data_ins[-1]
            assert last.flags & DATAIN_ACK and last.ttt != RESERVED_TAG  # asks for a DataACK
            # an initiator that lost data does not acknowledge the status yet (ExpStatSN stays at it)
            hold = res.response.statsn
            # Data SNACK for DataSN 1 and 2
            await c.send(snack(c, SnackType.DATA_R2T, itt=cmd.itt, begrun=1, runlength=2, expstatsn=hold))
            for datasn in (1, 2):
                pdu = await c.expect(P.DataIn)
                assert isinstance(pdu, P.DataIn) and pdu.datasn == datasn
                assert bytes(pdu.data) == bytes(data_ins[datasn].data)
            # R-Data SNACK after a new MaxRecvDataSegmentLength: the whole data, in 4 KiB PDUs
            await c.send(
                P.TextRequest(
                    flags=FLAG_FINAL,
                    itt=c.next_itt(),
                    ttt=RESERVED_TAG,
                    cmdsn=c.take_cmdsn(),
                    expstatsn=hold,
                    data=text(("MaxRecvDataSegmentLength", "4096")),
                )
            )
            answer = await c.expect(P.TextResponse)
            assert "MaxRecvDataSegmentLength" in dict(parse_text(bytes(answer.data)))
            await c.send(snack(c, SnackType.RDATA, itt=cmd.itt, expstatsn=hold))
            again = bytearray()
            for datasn in range(8):
                pdu = await c.expect(P.DataIn)
                assert isinstance(pdu, P.DataIn) and pdu.datasn == datasn and len(pdu.data) == 4096
                again += pdu.data
            assert bytes(again) == content
            # DataACK for everything frees it: a later Data SNACK is rejected
            await c.send(snack(c, SnackType.DATA_ACK, ttt=last.ttt, begrun=8, expstatsn=hold))
            await c.expect_silence(0.2)
            await c.send(snack(c, SnackType.DATA_R2T, itt=cmd.itt, begrun=0, runlength=1, expstatsn=hold))
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == SNACK_REJECT
            await c.close()

    run(main())


def test_r2t_snack_resends_the_r2t() -> None:
    async def main() -> None:
        async with running_server(limits=LIMITS) as s:
            c = await logged_in(s.port, operational=ERL1)
            await c.ready()
            cmd = c.command_pdu(write10(0, 1), write_len=BLOCK)
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            assert isinstance(r2t, P.R2T)
            await c.send(snack(c, SnackType.DATA_R2T, itt=cmd.itt, begrun=0, runlength=1))
            again = await c.expect(P.R2T)
            assert isinstance(again, P.R2T)
            assert (again.ttt, again.r2tsn, again.buffer_offset) == (r2t.ttt, 0, 0)
            await c.send(P.DataOut(flags=FLAG_FINAL, itt=cmd.itt, ttt=r2t.ttt, data=b"q" * BLOCK))
            rsp = await c.expect(P.ScsiResponse)
            assert isinstance(rsp, P.ScsiResponse) and rsp.status == GOOD
            await c.close()

    run(main())
