"""Property tests: hostile bytes after login never hurt the target (RFC 7143 is silent; our rule is "every byte
from the network is hostile").

After a normal login, hypothesis sends random bytes or valid PDUs with random header mutations.  Whatever the
target answers (Reject, a dropped connection, SCSI status), it must not log an internal error, and a fresh
connection must still log in and get GOOD from TEST UNIT READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_target_harness import (
    BLOCK,
    TUR,
    Client,
    assert_serving,
    logged_in,
    read10,
    running_server,
    text,
    write10,
)

from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def no_internal_errors():  # type: ignore[no-untyped-def]
    handler = _Errors()
    logger = logging.getLogger("cistern")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]


def templates(c: Client) -> list[bytes]:
    sn, st_ = c.cmdsn, c.expstatsn
    pdus: list[P.PDU] = [
        P.NopOut(itt=0x21, cmdsn=sn, expstatsn=st_, data=b"ping"),
        P.ScsiCommand(
            flags=0xC1,
            itt=0x22,
            expected_data_transfer_length=4 * BLOCK,
            cmdsn=sn,
            cdb16=read10(0, 4).ljust(16, b"\0"),
        ),
        P.ScsiCommand(
            flags=0xA1,
            itt=0x23,
            expected_data_transfer_length=2 * BLOCK,
            cmdsn=sn,
            cdb16=write10(8, 2).ljust(16, b"\0"),
            data=b"\x42" * BLOCK,
        ),
        P.ScsiCommand(flags=0x81, itt=0x24, cmdsn=sn, cdb16=TUR.ljust(16, b"\0")),
        P.DataOut(
            flags=FLAG_FINAL, itt=0x23, ttt=RESERVED_TAG, datasn=0, buffer_offset=BLOCK, data=b"\x43" * BLOCK
        ),
        P.TaskMgmtRequest(flags=0x81, itt=0x25, referenced_task_tag=0x23, cmdsn=sn, immediate=True),
        P.TextRequest(flags=FLAG_FINAL, itt=0x26, cmdsn=sn, data=text(("SendTargets", "All"))),
        P.LogoutRequest(flags=FLAG_FINAL, itt=0x27, cid=1, cmdsn=sn, immediate=True),
        P.SnackRequest(itt=0x28),
    ]
    return [p.encode() for p in pdus]


async def attack(payload_of, settle: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    async with running_server() as s:
        c = await logged_in(s.port)
        with contextlib.suppress(ConnectionError):
            await c.send_raw(payload_of(c))
            # drain whatever the target says until it goes quiet or hangs up
            with contextlib.suppress(Exception):
                while True:
                    await c.recv(settle)
        await assert_serving(s.port)
        await c.close()


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(min_size=1, max_size=400))
def test_random_bytes_after_login(blob: bytes) -> None:
    with no_internal_errors():
        asyncio.run(asyncio.wait_for(attack(lambda c: blob), 10))


@FUZZ
@given(
    st.integers(0, 8),
    st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(1, 80)),
    st.integers(1, 3),
)
def test_mutated_pdus_after_login(
    which: int, flips: list[tuple[int, int]], cut: int | None, repeat: int
) -> None:
    def payload(c: Client) -> bytes:
        raw = bytearray(templates(c)[which])
        for pos, value in flips:
            raw[pos] = value
        if cut is not None:
            raw = raw[:cut]
        return bytes(raw) * repeat

    with no_internal_errors():
        asyncio.run(asyncio.wait_for(attack(payload), 10))
