"""Hostile input during the login phase, against a real in-process target (RFC 7143 6.3, 11.12, 11.13.5).

Each test asserts the exact answer (Login Response status class/detail, or a dropped connection) and then
that the server still serves another initiator (a fresh login and TEST UNIT READY).
"""

from __future__ import annotations

import asyncio
import hashlib

from test_target_harness import (
    INITIATOR,
    IQN,
    STRANGER,
    Client,
    assert_serving,
    parse_text,
    run,
    running_server,
    text,
)

from cistern.target.model import ChapSecret
from cistern.wire import pdu as P

DECL = (("InitiatorName", INITIATOR), ("TargetName", IQN), ("SessionType", "Normal"))
SECURITY = text(*DECL, ("AuthMethod", "None"))


async def refused(c: Client, data: bytes, status: int, **kw: int) -> P.LoginResponse:
    """Send one Login Request; expect a Login Response with ``status`` and then the connection closed."""
    rsp = await c.login_exchange(data, **{"csg": 0, "nsg": 1, **kw})
    assert (rsp.status_class << 8 | rsp.status_detail) == status, rsp
    assert rsp.tsih == 0 and not rsp.transit
    await c.expect_closed()
    return rsp


def check_refused(data: bytes, status: int, **kw: int) -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await Client.open(s.port)
            await refused(c, data, status, **kw)
            await assert_serving(s.port)

    run(main())


def check_dropped(raw: bytes, *, close_after: bool = False) -> None:
    """Raw bytes on a fresh connection: the target answers nothing and closes (or we close first)."""

    async def main() -> None:
        async with running_server() as s:
            c = await Client.open(s.port)
            await c.send_raw(raw)
            if close_after:
                await c.close()
            else:
                got = await c.expect_closed()
                assert got == [], got
            await asyncio.sleep(0.05)
            assert len(s.server.connections) == 0
            await assert_serving(s.port)

    run(main())


# ---- framing-level garbage


def test_truncated_bhs_then_close() -> None:
    check_dropped(SECURITY[:20], close_after=True)


def test_garbage_bytes_drop_the_connection() -> None:
    check_dropped(bytes([0xFF]) * 48)  # opcode 0x3f (a target opcode), DataSegmentLength 16 MiB


def test_unknown_opcode_during_login_drops_the_connection() -> None:
    bhs = bytearray(48)
    bhs[0] = 0x1C  # no such opcode
    check_dropped(bytes(bhs))


def test_non_login_pdu_before_login_drops_the_connection() -> None:
    nop = P.NopOut(itt=1, cmdsn=0, immediate=True)
    check_dropped(nop.encode())


def test_scsi_command_before_login_drops_the_connection() -> None:
    cmd = P.ScsiCommand(itt=1, cmdsn=0, cdb16=bytes(16))
    check_dropped(cmd.encode())


# ---- Login Request fields


def test_csg_2_is_invalid_during_login() -> None:
    check_refused(SECURITY, 0x020B, csg=2, nsg=3)


def test_nsg_2_is_invalid_during_login() -> None:
    check_refused(SECURITY, 0x020B, csg=0, nsg=2)


def test_transit_backwards_is_invalid_during_login() -> None:
    check_refused(SECURITY, 0x020B, csg=1, nsg=0)


def test_t_and_c_together_is_invalid_during_login() -> None:
    check_refused(SECURITY, 0x020B, transit=True, cont=True)


def test_version_min_above_zero_is_unsupported() -> None:
    check_refused(SECURITY, 0x0205, version_min=1, version_max=1)


def test_missing_initiator_name() -> None:
    check_refused(text(("TargetName", IQN), ("SessionType", "Normal"), ("AuthMethod", "None")), 0x0207)


def test_unknown_target_is_not_found() -> None:
    data = text(("InitiatorName", INITIATOR), ("TargetName", "iqn.2026-01.test:nope"), ("AuthMethod", "None"))
    check_refused(data, 0x0203)


def test_initiator_outside_the_acl_is_not_authorized() -> None:
    data = text(("InitiatorName", STRANGER), ("TargetName", IQN), ("AuthMethod", "None"))
    check_refused(data, 0x0202)


def test_tsih_of_a_nonexistent_session() -> None:
    check_refused(SECURITY, 0x020A, tsih=0x4242)


def test_repeated_key_is_an_initiator_error() -> None:
    data = text(*DECL, ("AuthMethod", "None"), ("AuthMethod", "None"))
    check_refused(data, 0x0200)


def test_oversized_value_over_continued_pdus_is_an_initiator_error() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await Client.open(s.port)
            data = text(*DECL, ("AuthMethod", "None"), ("X-com.example.big", "v" * 9000))
            first = await c.login_exchange(data[:6000], csg=0, nsg=1, transit=False, cont=True)
            assert first.status_class == 0 and first.data == b""
            await refused(c, data[6000:], 0x0200)
            await assert_serving(s.port)

    run(main())


def test_login_pdu_above_8k_data_segment_drops_the_connection() -> None:
    # MaxRecvDataSegmentLength is 8192 during login (RFC 7143 13.12): a longer segment cannot be framed
    data = text(*DECL, ("AuthMethod", "None"), ("X-com.example.big", "v" * 8300))

    async def main() -> None:
        async with running_server() as s:
            c = await Client.open(s.port)
            try:
                await c.send(c.login_pdu(data, csg=0, nsg=1))
            except ConnectionResetError:
                pass
            else:
                assert await c.expect_closed() == []
            await assert_serving(s.port)

    run(main())


def test_oversized_initiator_name_is_an_initiator_error() -> None:
    data = text(("InitiatorName", "iqn.2026-01.x:" + "a" * 300), ("TargetName", IQN), ("AuthMethod", "None"))
    check_refused(data, 0x0200)


def test_non_utf8_text_is_an_initiator_error() -> None:
    check_refused(SECURITY + b"InitiatorAlias=\xff\xfe\x00", 0x0200)


def test_text_without_a_terminating_nul_is_an_initiator_error() -> None:
    check_refused(SECURITY + b"AuthMethod", 0x0200)


def test_more_than_64k_of_continued_text_fails_the_login() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await Client.open(s.port)
            piece = b"X-com.example.pad=" + b"p" * 7000  # no NUL: one key spanning the PDUs
            status = sent = 0
            for _ in range(12):  # 12 * ~7 KiB > 64 KiB
                await c.send(c.login_pdu(piece, csg=0, nsg=1, transit=False, cont=True))
                sent += 1
                rsp = await c.expect(P.LoginResponse)
                assert isinstance(rsp, P.LoginResponse)
                status = rsp.status_class << 8 | rsp.status_detail
                if status:
                    break
                # RFC 7143 6.3: each partial request gets an empty response without T or C
                assert not rsp.transit and not rsp.cont and rsp.data == b"", rsp
            assert status == 0x0200 and 9 <= sent <= 11
            await c.expect_closed()
            await assert_serving(s.port)

    run(main())


def test_login_timeout_closes_an_idle_connection() -> None:
    async def main() -> None:
        async with running_server(login_timeout=0.3) as s:
            c = await Client.open(s.port)
            t0 = asyncio.get_running_loop().time()
            assert await c.expect_closed(timeout=2.0) == []
            assert 0.2 <= asyncio.get_running_loop().time() - t0 < 1.5
            await assert_serving(s.port)

    run(main())


def test_login_timeout_also_covers_a_login_left_half_way() -> None:
    async def main() -> None:
        async with running_server(login_timeout=0.3) as s:
            c = await Client.open(s.port)
            rsp = await c.login_exchange(SECURITY, csg=0, nsg=1)
            assert rsp.status_class == 0 and rsp.transit
            assert await c.expect_closed(timeout=2.0) == []

    run(main())


# ---- CHAP


def _md5_response(ident: int, secret: bytes, challenge: bytes) -> str:
    return "0x" + hashlib.md5(bytes([ident]) + secret + challenge).hexdigest()


async def chap_login(port: int, secret: bytes) -> P.LoginResponse:
    c = await Client.open(port)
    rsp = await c.login_exchange(text(*DECL, ("AuthMethod", "CHAP,None")), csg=0, nsg=1, transit=False)
    assert rsp.status_class == 0 and dict(parse_text(rsp.data))["AuthMethod"] == "CHAP"
    rsp = await c.login_exchange(text(("CHAP_A", "5")), csg=0, nsg=1, transit=False)
    answer = dict(parse_text(rsp.data))
    assert answer["CHAP_A"] == "5"
    ident = int(answer["CHAP_I"])
    challenge = bytes.fromhex(answer["CHAP_C"].removeprefix("0x"))
    reply = text(("CHAP_N", "user"), ("CHAP_R", _md5_response(ident, secret, challenge)))
    rsp = await c.login_exchange(reply, csg=0, nsg=1)
    if rsp.status_class:
        await c.expect_closed()
    await c.close()
    return rsp


def test_chap_wrong_secret_is_an_authentication_failure() -> None:
    async def main() -> None:
        async with running_server(chap=ChapSecret("user", "the-right-secret")) as s:
            rsp = await chap_login(s.port, b"the-wrong-secret")
            assert (rsp.status_class, rsp.status_detail) == (2, 1)
            ok = await chap_login(s.port, b"the-right-secret")  # control: the right one passes
            assert (ok.status_class, ok.status_detail) == (0, 0) and ok.transit

    run(main())


def test_chap_required_but_initiator_offers_none() -> None:
    async def main() -> None:
        async with running_server(chap=ChapSecret("user", "the-right-secret")) as s:
            c = await Client.open(s.port)
            await refused(c, SECURITY, 0x0201)

    run(main())
