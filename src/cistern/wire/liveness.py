"""Sans-I/O timers of one target connection: login timeout, NOP-In pings and the dead-peer timeout.

No clock is read here: every call takes ``now`` (seconds, any monotonic base, the caller's), and the I/O
layer asks :meth:`ConnectionTimers.next_timer` when to call :meth:`ConnectionTimers.handle_timer` next.
The events tell it what to do:

* :attr:`TimerEvent.LOGIN_TIMED_OUT`: the login phase lasted longer than ``login_timeout``: close.
* :attr:`TimerEvent.SEND_PING`: nothing was received for ``nop_interval`` seconds: send a NOP-In that asks
  for an answer (RFC 7143 11.19, TTT != 0xffffffff) and report its TTT with :meth:`ping_sent`.
* :attr:`TimerEvent.PEER_DEAD`: a ping stayed unanswered for ``nop_timeout`` seconds: drop the connection
  (RFC 7143 7.1.1 "connection failure detected by a NOP timeout").

``nop_interval`` 0 disables pings.  Shapes: times in seconds (float), TTTs 32-bit ints.
"""

from __future__ import annotations

import enum

__all__ = ["ConnectionTimers", "TimerEvent"]


class TimerEvent(enum.Enum):
    LOGIN_TIMED_OUT = "login timed out"
    SEND_PING = "send a NOP-In ping"
    PEER_DEAD = "ping not answered"


class ConnectionTimers:
    """Login and keep-alive timing of one connection; one owner: the connection adapter."""

    __slots__ = (
        "_full_feature",
        "_login_deadline",
        "_ping_sent",
        "_ping_ttt",
        "last_rx",
        "login_timeout",
        "nop_interval",
        "nop_timeout",
    )

    def __init__(self, now: float, *, login_timeout: float, nop_interval: float, nop_timeout: float) -> None:
        if login_timeout <= 0 or nop_interval < 0 or nop_timeout <= 0:
            raise ValueError("login_timeout and nop_timeout must be > 0, nop_interval >= 0")
        self.login_timeout = login_timeout
        self.nop_interval = nop_interval
        self.nop_timeout = nop_timeout
        self._login_deadline: float | None = now + login_timeout
        self._full_feature = False
        #: when the peer last sent us anything (the adapter sets it per received chunk: the hot path)
        self.last_rx = now
        self._ping_ttt: int | None = None
        self._ping_sent = 0.0

    # ---- inputs

    def full_feature(self, now: float) -> None:
        """The login completed: the login timer stops, the ping schedule starts from ``now``."""
        self._login_deadline = None
        self._full_feature = True
        self.last_rx = now

    def ping_sent(self, ttt: int, now: float) -> None:
        """The adapter sent the NOP-In ping :attr:`TimerEvent.SEND_PING` asked for, with this TTT."""
        self._ping_ttt = ttt
        self._ping_sent = now

    def ping_answered(self, ttt: int) -> bool:
        """A NOP-Out echoed ``ttt``; True if it answers our outstanding ping (which then ends)."""
        if self._ping_ttt is not None and ttt == self._ping_ttt:
            self._ping_ttt = None
            return True
        return False

    @property
    def login_deadline(self) -> float:
        """When the login times out (absolute, the caller's clock); +inf once in full feature phase."""
        return self._login_deadline if self._login_deadline is not None else float("inf")

    @property
    def ping_outstanding(self) -> int | None:
        return self._ping_ttt

    # ---- time

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should run next (absolute, the caller's clock), or None: no timer."""
        if self._login_deadline is not None:
            return self._login_deadline
        if not self._full_feature or self.nop_interval <= 0:
            return None
        if self._ping_ttt is not None:
            return self._ping_sent + self.nop_timeout
        return self.last_rx + self.nop_interval

    def handle_timer(self, now: float) -> TimerEvent | None:
        """What is due at ``now`` (at most one event), or None when nothing is (e.g. data arrived since)."""
        if self._login_deadline is not None:
            return TimerEvent.LOGIN_TIMED_OUT if now >= self._login_deadline else None
        if not self._full_feature or self.nop_interval <= 0:
            return None
        if self._ping_ttt is not None:
            return TimerEvent.PEER_DEAD if now - self._ping_sent >= self.nop_timeout else None
        if now - self.last_rx >= self.nop_interval:
            return TimerEvent.SEND_PING
        return None
