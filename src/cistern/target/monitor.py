"""What the target server tells its operators: login outcomes per target and portal, and recent events.

One :class:`Monitor` per :class:`~cistern.target.server.TargetServer`.  The login driver calls
:meth:`Monitor.login` once per login outcome (RFC 7143 11.13.5 status: ``ok`` or the refusal's status
name); the admin API, the dashboard and the metrics exporter read the counters and the event ring.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

MAX_EVENTS = 200


@dataclass(frozen=True, slots=True)
class Event:
    """One thing worth showing an operator. ``kind``: login, refused, logout, admin, error."""

    seq: int
    time: float  # seconds since the epoch
    kind: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "message": self.message}


@dataclass(slots=True)
class Monitor:
    """Login counters keyed by (target, portal, outcome) and the last :data:`MAX_EVENTS` events."""

    logins: dict[tuple[str, str, str], int] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def event(self, kind: str, message: str) -> None:
        self.events.append(Event(next(self._seq), time.time(), kind, message))

    def login(self, target: str, portal: str, outcome: str, message: str) -> None:
        """Count a login outcome (``outcome`` is ``ok`` or a refusal reason) and remember it as an event."""
        key = (target, portal, outcome)
        self.logins[key] = self.logins.get(key, 0) + 1
        self.event("login" if outcome == "ok" else "refused", message)

    def since(self, seq: int) -> list[Event]:
        return [e for e in self.events if e.seq > seq]
