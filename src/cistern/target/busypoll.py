"""Adaptive busy polling: after a connection's responses leave, wait for its next command by polling
instead of sleeping, as long as polls keep finding it.

At queue depth 1 an initiator sends its next command a few tens of microseconds after our response.
Sleeping in ``epoll_wait`` in between costs a context switch and a wake-up on every command, and the
interpreter then runs with cold caches: on this project's 2-core VM a depth-1 4 KiB read cost ~57 µs of
server CPU that way and ~47 µs polled, at nearly twice the IOPS (bench/RESULTS.md, "Third session").  Linux
offers the same trade for NIC queues (``SO_BUSY_POLL``, ``net.core.busy_read``), but not on loopback or for
a user-space server's own work, so the target does it itself:

* :class:`BusyPoll` is the per-connection decision (sans-I/O, no clock): poll after a batch of
  responses, backing off exponentially after polls that found nothing, so a light workload (commands
  milliseconds apart) polls once per 64 commands at most, and an idle target never spins.  While polling, the CPU is offered to other runnable threads on every
  empty look (``sched_yield``), so on a busy machine the initiator is not kept from running.
* :class:`PollSet` is one private ``epoll`` holding the sockets of every plain-TCP connection in full
  feature phase, so that a connection polling for its own next command stops at once when *another*
  connection has data (the event loop serves that one), never starving it.

* :class:`PollGovernor` decides, for the whole server, whether polling pays at all on this machine.  What
  a sleep and a wake-up cost depends on the machine, not on us: on this project's VM an idle CPU halts and
  every wake-up is an inter-processor interrupt through the hypervisor, so polling costs no more CPU per
  command than sleeping, at twice the IOPS; where idle CPUs wake cheaply (the same VM with guest
  halt-polling; likely bare metal with shallow idle states) sleeping costs 16-36 % less than polling at
  depth 1 (bench/RESULTS.md, "Seventh session").  So the governor measures both in turns, in server CPU
  per wait, and keeps the cheaper.

The polling loop itself (read the socket, hand bytes to the framer) is the connection's pump's:
:meth:`cistern.target.pump.Pump._busy_poll`.  ``busy_poll_us`` in the config is the budget
(0 turns polling off; docs/config.md).
"""

from __future__ import annotations

import contextlib
import select

#: the most one polling stretch may keep the event loop from its other work (timers, new connections,
#: thread-pool completions), seconds: then the loop gets one turn (without sleeping) and the poll goes on
POLL_SLICE = 0.001

#: after polls that found nothing, a connection skips up to 2**MAX_MISSES batches before polling again
MAX_MISSES = 6
MAX_SKIP = 1 << MAX_MISSES


#: a measuring turn of :class:`PollGovernor` alternates PROBE_SLICES slices of SLICE_WAITS waits (a
#: connection's responses have left and it only waits for its initiator) polled with as many sleeping;
#: then a run of waits goes the cheaper way before the next turn: RUN_MIN_WAITS after the decision
#: changed, twice as many as the last run (up to RUN_MAX_WAITS) while it stays the same
PROBE_SLICES = 16
SLICE_WAITS = 64
RUN_MIN_WAITS = 8192
RUN_MAX_WAITS = 131072
#: sleeping must cost this much less server CPU per wait than polling, in this many measuring turns in a
#: row, before polling stops (on a tie polling wins: it answers sooner); one turn the other way brings
#: polling back
SLEEP_MARGIN = 0.1
SLEEP_TURNS = 2


def _median(costs: list[float]) -> float:
    ordered = sorted(costs)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class PollGovernor:
    """Whether connections poll after their responses at all: measured, not assumed (sans-I/O; the caller
    reads the clock when asked).

    In adaptive mode the governor counts waits (:meth:`wait`) and works in turns: a measuring turn
    alternates :data:`SLICE_WAITS` waits polled and :data:`SLICE_WAITS` waits sleeping,
    :data:`PROBE_SLICES` times each; then a run of waits goes the cheaper way; then it measures again.
    When a slice or run ends, :meth:`wait` returns True and the caller passes the process's CPU time
    (seconds, ``time.process_time()``) to :meth:`measure`.

    A way's cost is the median over its slices of the server CPU per wait (:attr:`poll_cost`,
    :attr:`sleep_cost`, seconds): interleaving makes drift (the workload changing, other processes) hit
    both ways alike, and the median ignores the odd slice that paid for a login or an idle gap.  Polling
    stops only when sleeping costs :data:`SLEEP_MARGIN` less in :data:`SLEEP_TURNS` turns in a row, and
    comes back after one turn that sleeping does not win.  A run is :data:`RUN_MIN_WAITS` long after the
    decision changed and doubles (up to :data:`RUN_MAX_WAITS`) while it holds, so a new server where
    sleeping pays settles after some 20,000 waits and a settled one spends under 2 % of its waits
    measuring.  With ``adaptive`` False connections always poll (as far as their own :class:`BusyPoll`
    back-off lets them) and nothing is measured.
    """

    __slots__ = (
        "_cpu0",
        "_decided",
        "_left",
        "_measuring",
        "_polled",
        "_run",
        "_sleep_wins",
        "_slept",
        "adaptive",
        "poll_cost",
        "polling",
        "sleep_cost",
    )

    adaptive: bool
    #: whether connections poll now
    polling: bool
    _measuring: bool
    _left: int  # waits left in this slice or run
    _cpu0: float  # process CPU time when this slice or run began
    _polled: list[float]  # this turn's slice costs, each way
    _slept: list[float]
    _sleep_wins: int  # measuring turns in a row that sleeping won
    _decided: bool  # what the last turn decided (polling or not)
    _run: int  # waits in the last run

    def __init__(self, adaptive: bool = True) -> None:
        #: server CPU seconds per wait, polled and sleeping, from the last measuring turn (0.0: none yet)
        self.poll_cost = 0.0
        self.sleep_cost = 0.0
        self._cpu0 = 0.0
        self.set_adaptive(adaptive)

    def set_adaptive(self, adaptive: bool) -> None:
        """Switch between measuring (True) and always polling (False); measuring starts afresh."""
        self.adaptive = adaptive
        self.polling = True
        self._measuring = False
        self._left = 0
        self._polled = []
        self._slept = []
        self._sleep_wins = 0
        self._decided = True
        self._run = RUN_MIN_WAITS

    def wait(self) -> bool:
        """A connection's responses have left and it only waits for its initiator.  True: a slice or run
        ended, call :meth:`measure` now."""
        if not self.adaptive:
            return False
        self._left -= 1
        return self._left <= 0

    def measure(self, cpu: float) -> None:
        """The process's CPU time (seconds) at the end of a slice or run: cost the slice, start the next
        one and set :attr:`polling` for it."""
        if not self._measuring:  # the start, or the end of a run: measure again, polled slice first
            self._measuring = True
            self.polling = True
            self._left = SLICE_WAITS
        else:
            cost = (cpu - self._cpu0) / SLICE_WAITS
            if self.polling:
                self._polled.append(cost)
            else:
                self._slept.append(cost)
            if len(self._slept) < PROBE_SLICES:
                self.polling = not self.polling
                self._left = SLICE_WAITS
            else:
                self.poll_cost = _median(self._polled)
                self.sleep_cost = _median(self._slept)
                self._polled = []
                self._slept = []
                self._measuring = False
                if self.sleep_cost < self.poll_cost * (1.0 - SLEEP_MARGIN):
                    self._sleep_wins += 1
                else:
                    self._sleep_wins = 0
                polling = self._sleep_wins < SLEEP_TURNS
                self._run = min(2 * self._run, RUN_MAX_WAITS) if polling == self._decided else RUN_MIN_WAITS
                self._decided = self.polling = polling
                self._left = self._run
        self._cpu0 = cpu


class BusyPoll:
    """When to poll one connection's socket (sans-I/O; times in seconds from one monotonic clock).

    ``budget`` is how long one poll waits for the initiator's next bytes.  The caller asks after each
    batch of responses whether to poll (:meth:`idle`), and reports how the poll ended (:meth:`caught`,
    :meth:`timed_out`).

    A poll that runs out of budget makes the connection skip the next 2, 4, ... up to
    :data:`MAX_SKIP` batches before polling again, so a workload whose commands come further apart than
    the budget wastes at most one budget per :data:`MAX_SKIP` commands; a poll that catches its command
    resets the back-off.
    """

    __slots__ = ("budget", "misses", "skip")

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.misses = 0  # polls in a row that ran out of budget
        self.skip = 0  # batches still to go without polling

    def idle(self) -> bool:
        """Our responses have left; True if the connection should poll for the next command."""
        if self.skip:
            self.skip -= 1
            return False
        return True

    def caught(self) -> None:
        """A poll found the initiator's next bytes within its budget."""
        self.misses = 0

    def timed_out(self) -> None:
        """A poll waited its whole budget for nothing: back off."""
        self.misses = min(self.misses + 1, MAX_MISSES)
        self.skip = 1 << self.misses


class PollSet:
    """A private level-triggered ``epoll`` of the sockets that may be polled (file descriptors).

    :meth:`ready` answers, without blocking, whether ``fd`` has bytes (1), nothing has (0), or another
    registered socket has (-1: stop polling and let the event loop serve it).  The event loop keeps its
    own registration of the same sockets; this one is only looked at while a connection polls.  It also
    counts the polls' outcomes for ``cistern_busy_polls_total``.
    """

    __slots__ = ("_epoll", "caught", "count", "empty")

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self.count = 0  # sockets registered
        #: polls that found the initiator's next bytes, and polls that ran out of budget (metrics)
        self.caught = 0
        self.empty = 0

    def register(self, fd: int) -> bool:
        """Add ``fd``; False (and nothing added) if the kernel refuses."""
        if self._epoll is None:
            try:
                self._epoll = select.epoll()
            except OSError:
                return False
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except OSError:
            return False
        self.count += 1
        return True

    def unregister(self, fd: int) -> None:
        """Remove ``fd`` (already closed descriptors leave the set by themselves)."""
        if self._epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
            self.count -= 1

    def ready(self, fd: int) -> int:
        """1 if ``fd`` alone has bytes (or an error/hang-up to read), 0 if no socket has, -1 if another
        registered socket has."""
        epoll = self._epoll
        if epoll is None:
            return 0
        events = epoll.poll(0)
        if not events:
            return 0
        for other, _mask in events:
            if other != fd:
                return -1
        return 1

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
            self.count = 0
