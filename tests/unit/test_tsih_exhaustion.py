"""All 65 535 TSIHs in use (RFC 7143 11.12.6: TSIH 0 is reserved): the next login is answered with login
status 0x0302 (out of resources) and one log line, never an exception; a freed TSIH serves again.

The table is filled in-process (65 535 sessions, no sockets) behind a real target, and the session caps are
switched off so that the TSIH space, not ``max_sessions``, is what runs out.
"""

from __future__ import annotations

import logging

import pytest
from test_target_harness import INITIATOR, IQN, Client, logged_in, run, running_server, text

from cistern.security.admission import Admission, AdmissionLimits
from cistern.target.session import Session, SessionTable
from cistern.wire.negotiation import Negotiated

ALL_TSIHS = 0xFFFF


def fill(table: SessionTable) -> list[Session]:
    params = Negotiated()
    sessions = []
    for i in range(ALL_TSIHS):
        session = Session(
            table.allocate_tsih(), f"iqn.2026-11.test:filler-{i}", b"\x80" + bytes(5), None, params, 0
        )
        table.add(session)
        sessions.append(session)
    return sessions


def test_session_table_runs_out_after_65535_and_reuses_a_freed_tsih() -> None:
    table = SessionTable()
    sessions = fill(table)
    assert sorted(s.tsih for s in sessions) == list(range(1, 0x10000))
    with pytest.raises(RuntimeError, match="no free TSIH"):
        table.allocate_tsih()
    table.remove(sessions[1234])
    assert table.allocate_tsih() == sessions[1234].tsih


def test_login_when_no_tsih_is_free_is_answered_0x0302_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with running_server() as s:
            s.server.admission = Admission(
                AdmissionLimits(max_sessions=0, max_sessions_per_target=0, max_sessions_per_initiator=0)
            )
            fillers = fill(s.server.sessions)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="cistern"):
                c = await Client.open(s.port)
                decl = text(("InitiatorName", INITIATOR), ("TargetName", IQN), ("AuthMethod", "None"))
                rsp = await c.login_exchange(decl, csg=0, nsg=1)
                assert (rsp.status_class, rsp.status_detail) == (0, 0)
                rsp = await c.login_exchange(b"", csg=1, nsg=3)
                for _ in range(3):  # answer the target's own offers until it decides
                    if rsp.transit or rsp.status_class:
                        break
                    rsp = await c.login_exchange(bytes(rsp.data), csg=1, nsg=3)
                assert (rsp.status_class << 8 | rsp.status_detail) == 0x0302, rsp
                assert rsp.tsih == 0
                await c.expect_closed()
            lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            assert "0x0302" in lines[0].getMessage() and "no free TSIH" in lines[0].getMessage()
            assert all(r.exc_info is None for r in caplog.records)
            # a session ends: its TSIH serves the next login
            s.server.sessions.remove(fillers[0])
            c = await logged_in(s.port)
            await c.ready()
            await c.close()

    run(main())
