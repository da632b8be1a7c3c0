"""Data-Out PDUs whose tags name nothing (RFC 7143 11.7.4, 11.17.1): an ITT that names no task, or a
Target Transfer Tag that matches no outstanding R2T of its task, is answered with a Reject (Invalid PDU
Field).  At ErrorRecoveryLevel 0 (the only level the target negotiates today) the command whose burst cannot
be completed then ends with CHECK CONDITION; late Data-Out of a command that already ended is discarded."""

from __future__ import annotations

from tests.unit.test_target_harness import BLOCK, CHECK_CONDITION, logged_in, run, running_server, write10

from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL

INVALID_PDU_FIELD = 0x09


def test_data_out_for_no_task_is_rejected() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            await c.ready()
            stray = P.DataOut(
                flags=FLAG_FINAL, itt=0x7777, ttt=0x1234, datasn=0, buffer_offset=0, data=b"x" * 512
            )
            await c.send(stray)
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == INVALID_PDU_FIELD
            assert bytes(rej.data[:48]) == bytes(stray.encode()[:48])  # the offending header is echoed
            await c.ready()  # the session carries on
            await c.close()

    run(main())


def test_data_out_with_a_ttt_of_no_r2t_is_rejected_and_ends_the_command_at_erl0() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=(("ImmediateData", "No"), ("InitialR2T", "Yes")))
            await c.ready()
            cmd = c.command_pdu(write10(0, 2), write_len=2 * BLOCK)
            await c.send(cmd)
            r2t = await c.expect(P.R2T)
            assert isinstance(r2t, P.R2T)
            good = dict(flags=FLAG_FINAL, itt=cmd.itt, datasn=0, buffer_offset=0, data=b"y" * 2 * BLOCK)
            await c.send(P.DataOut(ttt=r2t.ttt ^ 0x5A5A, **good))  # type: ignore[arg-type]
            rej = await c.expect(P.Reject)
            assert isinstance(rej, P.Reject) and rej.reason == INVALID_PDU_FIELD
            res = await c.collect(cmd.itt)
            assert res.status == CHECK_CONDITION and res.sense[2] & 0x0F == 0x0B  # ABORTED COMMAND
            # the burst the R2T asked for, arriving after the command ended: discarded without an answer
            await c.send(P.DataOut(ttt=r2t.ttt, **good))  # type: ignore[arg-type]
            await c.expect_silence(0.3)
            assert bytes(await s.store.read(0, 2 * BLOCK)) == bytes(2 * BLOCK)  # nothing reached the medium
            await c.ready()
            await c.close()

    run(main())
