"""Adaptive busy polling (cistern.target.busypoll): the per-connection decision on a fake clock, the private
epoll over real sockets, the config key, and a served target whose connections poll."""

from __future__ import annotations

import socket

import pytest
from test_target_harness import BLOCK, logged_in, read10, run, running_server

from cistern.config.errors import ConfigError
from cistern.config.model import parse_config
from cistern.target.busypoll import (
    MAX_SKIP,
    PROBE_SLICES,
    RUN_MAX_WAITS,
    RUN_MIN_WAITS,
    SLICE_WAITS,
    BusyPoll,
    PollGovernor,
    PollSet,
)
from cistern.target.server import TargetServer

US = 1e-6


def test_polls_while_the_initiator_answers_within_the_budget() -> None:
    poll = BusyPoll(50 * US)
    for _ in range(10):
        assert poll.idle()
        poll.caught()
    assert poll.skip == 0


def test_backs_off_exponentially_after_empty_polls_and_caps_the_back_off() -> None:
    poll = BusyPoll(50 * US)
    skipped_runs = []
    for _ in range(10):
        assert poll.idle()
        poll.timed_out()
        skipped = 0
        while not poll.idle():
            skipped += 1
        skipped_runs.append(skipped)
    assert skipped_runs[:6] == [2, 4, 8, 16, 32, 64]
    assert max(skipped_runs) == MAX_SKIP


def test_a_caught_command_resets_the_back_off() -> None:
    poll = BusyPoll(50 * US)
    for _ in range(3):
        assert poll.idle()
        poll.timed_out()
        while not poll.idle():
            pass
    poll.caught()
    assert poll.idle()
    poll.timed_out()
    assert [poll.idle() for _ in range(3)] == [False, False, True]  # back to skipping 2


class FakeCpu:
    """The process's CPU clock for a governor: each wait costs ``poll`` or ``sleep`` seconds, depending on
    how the governor had the connections wait."""

    def __init__(self, governor: PollGovernor, poll: float, sleep: float) -> None:
        self.governor, self.poll, self.sleep, self.now = governor, poll, sleep, 0.0

    def waits(self, count: int) -> list[bool]:
        """``count`` waits, each spent the way the governor says; whether each was polled."""
        polled = []
        for _ in range(count):
            if self.governor.wait():
                self.governor.measure(self.now)
            polled.append(self.governor.polling)
            self.now += self.poll if self.governor.polling else self.sleep
        return polled


#: the waits of one measuring turn, polled (True) and sleeping (False) in alternating slices
TURN = ([True] * SLICE_WAITS + [False] * SLICE_WAITS) * PROBE_SLICES


def test_governor_keeps_sleeping_where_it_costs_less_cpu_than_polling() -> None:
    governor = PollGovernor()
    cpu = FakeCpu(governor, poll=30 * US, sleep=20 * US)
    assert cpu.waits(len(TURN)) == TURN
    # sleeping won one turn: not enough (SLEEP_TURNS), the run polls
    assert cpu.waits(2 * RUN_MIN_WAITS) == [True] * (2 * RUN_MIN_WAITS)  # (the same decision: run doubled)
    assert governor.poll_cost == pytest.approx(30 * US) and governor.sleep_cost == pytest.approx(20 * US)
    assert cpu.waits(len(TURN)) == TURN
    assert cpu.waits(RUN_MIN_WAITS) == [False] * RUN_MIN_WAITS  # twice in a row: a (short) run sleeps
    # and goes on sleeping, measuring less and less often
    for length in (2 * RUN_MIN_WAITS, 4 * RUN_MIN_WAITS, 8 * RUN_MIN_WAITS, RUN_MAX_WAITS, RUN_MAX_WAITS):
        assert cpu.waits(len(TURN) + length)[len(TURN) :] == [False] * length
    # it measures between runs: the machine may have changed (here polling got cheap); one turn that
    # sleeping does not win brings polling back
    cpu.poll = 10 * US
    assert cpu.waits(len(TURN) + 10) == TURN + [True] * 10
    assert governor.poll_cost == pytest.approx(10 * US)


def test_governor_polls_where_polling_costs_less_or_about_the_same() -> None:
    for sleep in (50 * US, 31 * US, 28 * US):  # sleeping must save more than SLEEP_MARGIN (10 %)
        governor = PollGovernor()
        cpu = FakeCpu(governor, poll=30 * US, sleep=sleep)
        cpu.waits(len(TURN))
        assert cpu.waits(2 * RUN_MIN_WAITS) == [True] * (2 * RUN_MIN_WAITS), sleep


def test_governor_ignores_the_odd_slice_that_paid_for_something_else() -> None:
    """A login's or a garbage collection's milliseconds land in one slice: the median does not move (a
    mean would: 30 µs + 2 x 78 µs / 16 makes polling look 30 % dearer than sleeping)."""
    governor = PollGovernor()
    cpu = FakeCpu(governor, poll=30 * US, sleep=31 * US)
    cpu.waits(5)  # into the first polled slice
    cpu.now += 0.005  # 5 ms of other work: 78 µs more per wait of that slice
    cpu.waits(4 * SLICE_WAITS)  # into the third polled slice
    cpu.now += 0.005
    cpu.waits(len(TURN) - 4 * SLICE_WAITS - 5)
    assert all(cpu.waits(100))  # the turn ends at the first of these: sleeping costs more, so it polls
    assert governor.sleep_cost == pytest.approx(31 * US) and governor.poll_cost == pytest.approx(30 * US)


def test_governor_in_always_mode_never_measures_and_always_polls() -> None:
    governor = PollGovernor(adaptive=False)
    cpu = FakeCpu(governor, poll=30 * US, sleep=1 * US)
    assert all(cpu.waits(3 * len(TURN)))
    assert governor.poll_cost == governor.sleep_cost == 0.0
    governor.set_adaptive(True)  # measuring starts afresh
    assert cpu.waits(len(TURN) + 1) == [*TURN, True]  # sleeping won once: not yet
    governor.set_adaptive(False)
    assert governor.polling and all(cpu.waits(10))


def test_poll_set_tells_own_data_from_another_sockets_data() -> None:
    pollset = PollSet()
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    try:
        assert pollset.register(a.fileno()) and pollset.register(b.fileno())
        assert pollset.ready(a.fileno()) == 0
        a_peer.send(b"x")
        assert pollset.ready(a.fileno()) == 1
        b_peer.send(b"y")
        assert pollset.ready(a.fileno()) == -1  # b has data: stop polling a, the event loop serves b
        a.recv(1)
        assert pollset.ready(b.fileno()) == 1
        pollset.unregister(b.fileno())
        assert pollset.ready(a.fileno()) == 0
    finally:
        pollset.close()
        for s in (a, a_peer, b, b_peer):
            s.close()


def test_busy_poll_us_is_honoured_or_refused() -> None:
    assert parse_config({}).busy_poll_us == 50
    assert parse_config({"busy_poll_us": 0}).busy_poll_us == 0
    for bad in (-1, 1001, 2.5, "50"):
        with pytest.raises(ConfigError):
            parse_config({"busy_poll_us": bad})


def test_busy_poll_mode_is_honoured_or_refused() -> None:
    assert parse_config({}).busy_poll_mode == "adaptive"
    assert parse_config({"busy_poll_mode": "always"}).busy_poll_mode == "always"
    for bad in ("never", "Adaptive", 1, True):
        with pytest.raises(ConfigError):
            parse_config({"busy_poll_mode": bad})


@pytest.mark.parametrize("budget_us", [0, 200])
def test_commands_are_served_with_and_without_polling(budget_us: int) -> None:
    """Writes then reads at depth 1 come back intact whether or not the connection polls, and the
    server counts its polls only when polling is on (the client shares the server's event loop here, so
    every poll runs out of budget: the back-off bounds how often that happens)."""

    async def main() -> None:
        async with running_server() as served:
            served.server.set_busy_poll(budget_us)
            client = await logged_in(served.port)
            await client.ready()
            payloads = [bytes([n % 251]) * BLOCK for n in range(40)]
            for lba, data in enumerate(payloads):
                assert (await client.write(lba, data)).status == 0
            for lba, data in enumerate(payloads):
                result = await client.command(read10(lba, 1), read_len=BLOCK)
                assert result.status == 0 and result.data == data
            pollset = served.server.poll_set
            if budget_us:
                assert pollset.count == 1
                # ~82 commands, every poll empty (the client cannot send while the server polls): polls
                # after commands 1, 4, 9, 18, 35, 68 (skipping 2, 4, 8, ... between them)
                assert 4 <= pollset.empty <= 8 and pollset.caught == 0
            else:
                assert pollset.count == 0 and pollset.empty == pollset.caught == 0
            await client.close()

    run(main())


def test_server_refuses_an_unknown_busy_poll_mode() -> None:
    with pytest.raises(ValueError, match="busy_poll_mode"):
        TargetServer([], busy_poll_mode="never")
    server = TargetServer([], busy_poll_mode="always")
    assert not server.poll_governor.adaptive
    server.set_busy_poll(20)  # the budget alone: the mode stays
    assert not server.poll_governor.adaptive and server.busy_poll == pytest.approx(20e-6)
    server.set_busy_poll(50, "adaptive")
    assert server.poll_governor.adaptive
    with pytest.raises(ValueError, match="busy_poll_mode"):
        server.set_busy_poll(0, "sometimes")
    assert server.poll_governor.adaptive and server.busy_poll == pytest.approx(50e-6)  # nothing changed
