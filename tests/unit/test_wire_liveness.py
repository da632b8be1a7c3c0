"""The target connection's timer state machine (wire/liveness.py) with an injected clock: login timeout,
NOP-In ping after nop_interval of silence, dead peer after nop_timeout without the answer (RFC 7143 11.19)."""

from __future__ import annotations

import pytest

from cistern.wire.liveness import ConnectionTimers, TimerEvent


def timers(now: float = 100.0, interval: float = 10.0) -> ConnectionTimers:
    return ConnectionTimers(now, login_timeout=15.0, nop_interval=interval, nop_timeout=30.0)


def test_login_timeout() -> None:
    t = timers()
    assert t.next_timer() == 115.0
    assert t.handle_timer(114.9) is None
    assert t.handle_timer(115.0) is TimerEvent.LOGIN_TIMED_OUT


def test_login_done_stops_the_login_timer_and_starts_pings() -> None:
    t = timers()
    t.full_feature(110.0)
    assert t.next_timer() == 120.0
    assert t.handle_timer(130.0) is TimerEvent.SEND_PING  # silent since 110: ping


def test_traffic_postpones_the_ping() -> None:
    t = timers()
    t.full_feature(110.0)
    t.last_rx = 118.0  # data arrived
    assert t.handle_timer(120.0) is None
    assert t.next_timer() == 128.0
    assert t.handle_timer(128.0) is TimerEvent.SEND_PING


def test_unanswered_ping_means_a_dead_peer_and_an_answer_clears_it() -> None:
    t = timers()
    t.full_feature(0.0)
    assert t.handle_timer(10.0) is TimerEvent.SEND_PING
    t.ping_sent(0x1234, 10.0)
    assert t.next_timer() == 40.0
    t.last_rx = 20.0  # other traffic does not answer a ping
    assert t.handle_timer(39.0) is None
    assert t.handle_timer(40.0) is TimerEvent.PEER_DEAD
    assert not t.ping_answered(0x9999)
    assert t.ping_answered(0x1234) and t.ping_outstanding is None
    t.last_rx = 41.0
    assert t.next_timer() == 51.0


def test_pings_disabled() -> None:
    t = timers(interval=0.0)
    t.full_feature(1.0)
    assert t.next_timer() is None and t.handle_timer(1e9) is None


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        ConnectionTimers(0.0, login_timeout=0.0, nop_interval=1.0, nop_timeout=1.0)
