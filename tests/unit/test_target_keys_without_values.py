"""Keys sent without a value, or with a value outside the RFC's range, against a real in-process target.

RFC 7143 6.1 knows only ``key=value`` items; a key with no ``=`` or an empty value has no admissible value,
and 6.2.1/6.2.2 answer an inadmissible offer with ``Key=Reject`` (the key keeps its default) and an unknown
key with ``Key=NotUnderstood``: the answer concerns that key alone and the login goes on.  Out-of-range
numbers (MaxRecvDataSegmentLength=0 or 2^32, RFC 7143 13.12) are answered the same way.  InitiatorName
without a value is a missing parameter (login status 0x0207).
"""

from __future__ import annotations

from test_target_harness import (
    INITIATOR,
    IQN,
    TUR,
    Client,
    assert_serving,
    logged_in,
    parse_text,
    run,
    running_server,
    text,
)

from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL

GOOD = 0


def raw(*items: str) -> bytes:
    return b"".join(item.encode() + b"\0" for item in items)


def test_operational_keys_without_values_are_answered_reject_and_the_login_goes_on() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await Client.open(s.port)
            rsp = await c.login_exchange(
                text(("InitiatorName", INITIATOR), ("TargetName", IQN), ("SessionType", "Normal"))
                + raw("AuthMethod=None", "InitiatorAlias"),
                csg=0,
                nsg=1,
            )
            assert (rsp.status_class, rsp.status_detail) == (0, 0) and rsp.transit
            sent = raw(
                "MaxBurstLength",  # no "=": no value
                "HeaderDigest",
                "ImmediateData",
                "FirstBurstLength=",  # empty value
                "DataDigest=",
                "MaxRecvDataSegmentLength=0",  # outside 512..2^24-1
                "MaxOutstandingR2T=4294967296",  # 2^32, outside 1..65535
                "DefaultTime2Wait=18446744073709551616",  # 2^64: not a 64-bit number
                "X-org.example.unknown",  # unknown key without "="
                "ErrorRecoveryLevel=0",
            )
            rsp = await c.login_exchange(sent, csg=1, nsg=3)
            assert (rsp.status_class, rsp.status_detail) == (0, 0), rsp
            pairs = parse_text(bytes(rsp.data))
            answers = dict(pairs)
            for key in (
                "MaxBurstLength",
                "HeaderDigest",
                "ImmediateData",
                "FirstBurstLength",
                "DataDigest",
                "MaxRecvDataSegmentLength",
                "MaxOutstandingR2T",
                "DefaultTime2Wait",
            ):
                assert (key, "Reject") in pairs, (key, pairs)
            assert answers["X-org.example.unknown"] == "NotUnderstood"
            assert answers["ErrorRecoveryLevel"] == "0", pairs
            # the target may offer keys of its own before the transit: answer them, then full feature phase
            for _ in range(3):
                if rsp.transit:
                    break
                # the target's own offers (keys we did not send), answered with its value (RFC 7143 6.2)
                mine = {k for k, _ in parse_text(sent)} | {"MaxRecvDataSegmentLength"}
                offers = [(k, v) for k, v in parse_text(bytes(rsp.data)) if k not in mine]
                rsp = await c.login_exchange(text(*offers), csg=1, nsg=3)
                assert (rsp.status_class, rsp.status_detail) == (0, 0), rsp
            assert rsp.transit and rsp.nsg == 3 and rsp.tsih != 0
            c.tsih, c.cmdsn = rsp.tsih, rsp.expcmdsn
            await c.ready()  # defaults in force: the session serves commands (past the power-on UA)
            assert (await c.command(TUR)).status == GOOD
            await c.close()

    run(main())


def test_initiator_name_without_a_value_is_a_missing_parameter() -> None:
    for name_item in ("InitiatorName", "InitiatorName="):

        async def main(item: str = name_item) -> None:
            async with running_server() as s:
                c = await Client.open(s.port)
                rsp = await c.login_exchange(raw(item, f"TargetName={IQN}", "AuthMethod=None"), csg=0, nsg=1)
                assert (rsp.status_class << 8 | rsp.status_detail) == 0x0207, rsp
                await c.expect_closed()
                await assert_serving(s.port)

        run(main())


def test_full_feature_text_keys_without_values_are_answered_for_that_key() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            req = P.TextRequest(
                flags=FLAG_FINAL,
                itt=c.next_itt(),
                cmdsn=c.take_cmdsn(),
                data=raw("SendTargets", "MaxRecvDataSegmentLength=4294967296", "X-org.example.k"),
                ttt=0xFFFFFFFF,
            )
            await c.send(req)
            rsp = await c.expect(P.TextResponse)
            assert isinstance(rsp, P.TextResponse)
            assert parse_text(bytes(rsp.data)) == [
                ("SendTargets", "Reject"),
                ("MaxRecvDataSegmentLength", "Reject"),
                ("X-org.example.k", "NotUnderstood"),
            ]
            await c.ready()
            await c.close()

    run(main())
