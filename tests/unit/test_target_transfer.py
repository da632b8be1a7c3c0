"""Data transfer rules of the target: Data-In sequences, R2T, unsolicited data, residuals, buffer bounds
(RFC 7143 4.2.5, 11.3.1, 11.4.5, 11.7, 11.8, 13.13-13.17).
"""

from __future__ import annotations

import asyncio

from test_target_harness import (
    BLOCK,
    GOOD,
    logged_in,
    read10,
    run,
    running_server,
    write10,
)

from cistern.target.model import TargetLimits
from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG, RSP_OVERFLOW, RSP_UNDERFLOW

R2T_ONLY = (("ImmediateData", "No"), ("InitialR2T", "Yes"))


def test_data_in_sequences_end_at_max_burst_length_with_the_f_bit() -> None:
    async def main() -> None:
        async with running_server() as s:
            s.store._data[:65536] = bytes(range(256)) * 256  # type: ignore[index]
            ops = (("MaxBurstLength", "16384"), ("MaxRecvDataSegmentLength", "12288"))
            c = await logged_in(s.port, operational=ops)
            await c.ready()
            res = await c.command(read10(0, 128), read_len=65536)
            assert res.status == GOOD and res.data == bytes(range(256)) * 256
            ins = [p for p in res.pdus if isinstance(p, P.DataIn)]
            assert [len(p.data) for p in ins] == [12288, 4096] * 4  # no PDU straddles a burst boundary
            assert [p.datasn for p in ins] == list(range(8))
            assert [p.final for p in ins] == [False, True] * 4
            assert [p.has_status for p in ins] == [False] * 7 + [True]
            assert res.response.statsn == c.expstatsn - 1

    run(main())


def test_read_residuals() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            under = await c.command(read10(0, 4), read_len=8 * BLOCK)
            assert under.status == GOOD and len(under.data) == 4 * BLOCK
            assert under.response.flags & RSP_UNDERFLOW and under.response.residual_count == 4 * BLOCK
            over = await c.command(read10(0, 4), read_len=2 * BLOCK)
            assert over.status == GOOD and len(over.data) == 2 * BLOCK
            assert over.response.flags & RSP_OVERFLOW and over.response.residual_count == 2 * BLOCK
            exact = await c.command(read10(0, 4), read_len=4 * BLOCK)
            assert not exact.response.flags & (RSP_OVERFLOW | RSP_UNDERFLOW)
            assert exact.response.residual_count == 0

    run(main())


def test_initial_r2t_no_with_f_bit_set_gets_r2t_for_everything() -> None:
    # F=1 on the command: no unsolicited Data-Out follows, so the target must solicit all of it
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=(("InitialR2T", "No"), ("ImmediateData", "No")))
            await c.ready()
            payload = b"\x3c" * (8 * BLOCK)
            res = await c.write(40, payload)
            assert res.status == GOOD
            assert bytes(s.store._data[40 * BLOCK : 48 * BLOCK]) == payload  # type: ignore[index]

    run(main())


def test_unsolicited_data_out_up_to_first_burst_then_r2t() -> None:
    async def main() -> None:
        async with running_server() as s:
            ops = (("InitialR2T", "No"), ("ImmediateData", "Yes"), ("FirstBurstLength", "4096"))
            c = await logged_in(s.port, operational=ops)
            await c.ready()
            payload = bytes(range(256)) * 32  # 8 KiB: 1 KiB immediate, 3 KiB unsolicited, 4 KiB by R2T
            cmd = c.command_pdu(
                write10(60, 16), write_len=len(payload), immediate_data=payload[:1024], final=False
            )
            await c.send(cmd)
            await c.send(
                P.DataOut(
                    flags=FLAG_FINAL,
                    itt=cmd.itt,
                    ttt=RESERVED_TAG,
                    datasn=0,
                    buffer_offset=1024,
                    data=payload[1024:4096],
                )
            )
            r2t = await c.expect(P.R2T)
            assert isinstance(r2t, P.R2T)
            assert (r2t.buffer_offset, r2t.desired_data_transfer_length, r2t.r2tsn) == (4096, 4096, 0)
            await c.send(
                P.DataOut(flags=FLAG_FINAL, itt=cmd.itt, ttt=r2t.ttt, buffer_offset=4096, data=payload[4096:])
            )
            assert (await c.collect(cmd.itt)).status == GOOD
            assert bytes(s.store._data[60 * BLOCK : 76 * BLOCK]) == payload  # type: ignore[index]

    run(main())


def test_max_outstanding_r2t_two() -> None:
    async def main() -> None:
        async with running_server(limits=TargetLimits(max_outstanding_r2t=4)) as s:
            ops = (
                *R2T_ONLY,
                ("MaxOutstandingR2T", "2"),
                ("MaxBurstLength", "16384"),
                ("FirstBurstLength", "16384"),
            )
            c = await logged_in(s.port, operational=ops)
            await c.ready()
            payload = bytes(range(256)) * 256  # 64 KiB = 4 bursts
            cmd = c.command_pdu(write10(100, 128), write_len=len(payload))
            await c.send(cmd)
            r2ts = [await c.expect(P.R2T), await c.expect(P.R2T)]
            await c.expect_silence(0.2)  # no more than two outstanding
            assert [(r.r2tsn, r.buffer_offset, r.desired_data_transfer_length) for r in r2ts] == [  # type: ignore[attr-defined]
                (0, 0, 16384),
                (1, 16384, 16384),
            ]
            seen = list(r2ts)
            pending = list(r2ts)
            while pending:
                r = pending.pop(0)
                assert isinstance(r, P.R2T) and r.itt == cmd.itt
                off = r.buffer_offset
                half = r.desired_data_transfer_length // 2
                await c.send(
                    P.DataOut(
                        itt=cmd.itt, ttt=r.ttt, datasn=0, buffer_offset=off, data=payload[off : off + half]
                    )
                )
                await c.send(
                    P.DataOut(
                        flags=FLAG_FINAL,
                        itt=cmd.itt,
                        ttt=r.ttt,
                        datasn=1,
                        buffer_offset=off + half,
                        data=payload[off + half : off + 2 * half],
                    )
                )
                if len(seen) < 4:
                    nxt = await c.expect(P.R2T)
                    seen.append(nxt)
                    pending.append(nxt)
            assert [r.r2tsn for r in seen] == [0, 1, 2, 3]  # type: ignore[attr-defined]
            assert len({r.ttt for r in seen}) == 4  # type: ignore[attr-defined]
            assert (await c.collect(cmd.itt)).status == GOOD
            assert bytes(s.store._data[100 * BLOCK : 228 * BLOCK]) == payload  # type: ignore[index]

    run(main())


def test_session_write_buffer_budget_answers_task_set_full() -> None:
    async def main() -> None:
        limits = TargetLimits(max_write_buffer=64 * 1024, max_session_write_buffer=96 * 1024)
        async with running_server(limits=limits) as s:
            c = await logged_in(s.port, operational=R2T_ONLY)
            await c.ready()
            first = c.command_pdu(write10(0, 128), write_len=64 * 1024)
            await c.send(first)
            assert isinstance(await c.expect(P.R2T), P.R2T)
            second = c.command_pdu(write10(200, 128), write_len=64 * 1024)
            await c.send(second)
            res = await c.collect(second.itt)
            assert res.status == 0x28 and res.sense == b""  # TASK SET FULL
            # abort the first: its buffer is given back and the same write now fits
            abort = P.TaskMgmtRequest(
                flags=0x81,
                itt=c.next_itt(),
                referenced_task_tag=first.itt,
                cmdsn=c.cmdsn,
                refcmdsn=first.cmdsn,
                immediate=True,
            )
            await c.send(abort)
            rsp = await c.expect(P.TaskMgmtResponse)
            assert isinstance(rsp, P.TaskMgmtResponse) and rsp.response == 0
            assert (await c.write(200, b"\x21" * (64 * 1024))).status == GOOD
            sessions = list(s.server.sessions)
            assert sessions[0].write_buffered == 0

    run(main())


def test_immediate_commands_beyond_the_queue_depth_are_rejected() -> None:
    async def main() -> None:
        async with running_server(limits=TargetLimits(queue_depth=4)) as s:
            c = await logged_in(s.port, operational=R2T_ONLY)
            await c.ready()
            for i in range(4):
                cmd = c.command_pdu(write10(i, 1), write_len=BLOCK)
                cmd.immediate = True
                c.cmdsn = cmd.cmdsn
                await c.send(cmd)
                assert isinstance(await c.expect(P.R2T), P.R2T)
            extra = c.command_pdu(write10(9, 1), write_len=BLOCK)
            extra.immediate = True
            c.cmdsn = extra.cmdsn
            await c.send(extra)
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == 0x06  # IMMEDIATE COMMAND REJECT
            await c.ready()

    run(main())


def test_an_initiator_that_never_reads_cannot_grow_the_send_queue() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            c.w.transport.set_write_buffer_limits(high=1 << 30)  # type: ignore[attr-defined]
            c.w.transport.get_extra_info("socket").setsockopt(  # type: ignore[attr-defined]
                __import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536
            )
            conn = next(iter(s.server.connections))
            assert conn.transport is not None
            peak = 0
            for _ in range(10):  # 10 x 100 x 32 KiB of read data, never read by us, paced to the window
                for _ in range(100):
                    c.w.write(c.command_pdu(read10(0, 64), read_len=32768).encode())
                for _ in range(3):
                    await asyncio.sleep(0.02)
                    peak = max(peak, conn.transport.get_write_buffer_size())
            # Bound: the 4 MiB high-water mark plus what commands already inside the CmdSN window can still
            # add after reading pauses (queue depth x 32 KiB); without backpressure it grows to ~32 MiB.
            depth = s.server.targets[next(iter(s.server.targets))].limits.queue_depth
            assert peak <= 4 * 1024 * 1024 + depth * (32768 + 48) + 4096, peak
            await c.close()

    run(main())
