"""Who may start a login, and when (sans-I/O: every method takes ``now``, seconds on a monotonic clock).

:class:`Admission` owns four rules that keep one abusive client from locking others out:

- connections that have not finished login are capped per source address and in total; at the total cap
  the oldest pending connection of the address holding the most is evicted, so a newcomer from another
  address still gets in (the caller closes what :meth:`Admission.connection_opened` names);
- new connections per source address go through a token bucket (``login_rate`` per second, ``login_burst``
  at once): a brute force from one address cannot log in faster than that;
- ``auth_failures`` failed authentications from one address, or for one CHAP user name, within
  ``lockout_seconds`` lock that address / user out for ``lockout_seconds``; the lockout expires by itself.
  A locked user's logins fail authentication whatever secret they give (the answer does not tell);
- sessions are capped in total, per target and per initiator name (:meth:`Admission.session_refusal`).

The owner of the state is the target server; nothing here logs (the caller logs one line per refusal,
never a secret).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

__all__ = ["Admission", "AdmissionLimits"]


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The limits (0 disables a cap).  Defaults suit one host serving a few hundred initiators."""

    max_sessions: int = 4096
    max_sessions_per_target: int = 1024
    max_sessions_per_initiator: int = 64
    max_pending_connections: int = 512
    max_pending_per_address: int = 16
    login_rate: float = 50.0
    login_burst: int = 100
    auth_failures: int = 10
    lockout_seconds: float = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Admission:
    """The admission state of one target server."""

    #: forget buckets/failure records idle this long (bounds the tables under address spraying)
    FORGET_AFTER = 600.0
    MAX_TRACKED = 65536

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._pending: OrderedDict[Hashable, str] = OrderedDict()  # connection -> address, oldest first
        self._pending_by_address: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._failures: dict[tuple[str, str], _Failures] = {}

    # ---- connections before login

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_from(self, address: str) -> int:
        return self._pending_by_address.get(address, 0)

    def connection_opened(
        self, conn: Hashable, address: str, now: float
    ) -> tuple[str | None, list[Hashable]]:
        """A connection from ``address`` was accepted.  Returns (refusal reason or None, connections to close
        to make room).  When refused, ``conn`` is not tracked and must be closed at once."""
        limits = self.limits
        if self.locked("address", address, now):
            return "source address locked out after failed logins", []
        if limits.login_rate > 0 and not self._take_token(address, now):
            return f"more than {limits.login_rate:g} connections per second from this address", []
        if limits.max_pending_per_address and self.pending_from(address) >= limits.max_pending_per_address:
            return (
                f"{limits.max_pending_per_address} connections from this address have not finished login",
                [],
            )
        evict: list[Hashable] = []
        if limits.max_pending_connections and len(self._pending) >= limits.max_pending_connections:
            # make room: the oldest pending connection of the address with the most pending connections
            heaviest = max(self._pending_by_address, key=self._pending_by_address.__getitem__)
            if heaviest == address or self._pending_by_address[heaviest] <= self.pending_from(address) + 1:
                return f"{limits.max_pending_connections} connections have not finished login", []
            victim = next(c for c, a in self._pending.items() if a == heaviest)
            self.connection_done(victim)
            evict.append(victim)
        self._pending[conn] = address
        self._pending_by_address[address] = self.pending_from(address) + 1
        return None, evict

    def connection_done(self, conn: Hashable) -> None:
        """``conn`` logged in or closed: it no longer counts as pending (idempotent)."""
        address = self._pending.pop(conn, None)
        if address is None:
            return
        left = self._pending_by_address[address] - 1
        if left:
            self._pending_by_address[address] = left
        else:
            del self._pending_by_address[address]

    def _take_token(self, address: str, now: float) -> bool:
        limits = self.limits
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.MAX_TRACKED:
                self._forget(now)
            bucket = self._buckets[address] = _Bucket(float(limits.login_burst), now)
        bucket.tokens = min(
            float(limits.login_burst), bucket.tokens + (now - bucket.stamp) * limits.login_rate
        )
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    # ---- authentication failures and lockouts

    def locked(self, kind: str, name: str, now: float) -> bool:
        """Is the address (``kind="address"``) or CHAP user (``kind="user"``) locked out now?"""
        record = self._failures.get((kind, name))
        return record is not None and record.locked_until > now

    def auth_failed(self, now: float, address: str, user: str | None) -> list[str]:
        """Count a failed authentication; returns what became locked out ("address", "user")."""
        limits = self.limits
        locked: list[str] = []
        if not limits.auth_failures:
            return locked
        for kind, name in (("address", address), ("user", user)):
            if name is None:
                continue
            if len(self._failures) >= self.MAX_TRACKED:
                self._forget(now)
            record = self._failures.setdefault((kind, name), _Failures())
            record.times = [t for t in record.times if now - t < limits.lockout_seconds] + [now]
            if len(record.times) >= limits.auth_failures and record.locked_until <= now:
                record.locked_until = now + limits.lockout_seconds
                record.times.clear()
                locked.append(kind)
        return locked

    def _forget(self, now: float) -> None:
        for address in [a for a, b in self._buckets.items() if now - b.stamp > self.FORGET_AFTER]:
            del self._buckets[address]
        for key in [
            k
            for k, r in self._failures.items()
            if r.locked_until <= now and (not r.times or now - r.times[-1] > self.FORGET_AFTER)
        ]:
            del self._failures[key]
        # still full (a spray of fresh addresses): drop the oldest half rather than grow
        if len(self._buckets) >= self.MAX_TRACKED:
            for address in list(self._buckets)[: self.MAX_TRACKED // 2]:
                del self._buckets[address]
        if len(self._failures) >= self.MAX_TRACKED:
            for key in [k for k, r in self._failures.items() if r.locked_until <= now][
                : self.MAX_TRACKED // 2
            ]:
                del self._failures[key]

    # ---- sessions

    def session_refusal(
        self, initiator_name: str, target_name: str | None, sessions: Iterable[tuple[str, str | None]]
    ) -> str | None:
        """Why a new session of ``initiator_name`` to ``target_name`` (None: discovery) would exceed a cap,
        given the (initiator, target) pairs of the sessions that stay; None when it fits."""
        limits = self.limits
        total = per_target = per_initiator = 0
        for initiator, target in sessions:
            total += 1
            per_target += target is not None and target == target_name
            per_initiator += initiator == initiator_name
        if limits.max_sessions and total >= limits.max_sessions:
            return f"{limits.max_sessions} sessions in total (max_sessions)"
        if (
            target_name is not None
            and limits.max_sessions_per_target
            and per_target >= limits.max_sessions_per_target
        ):
            return f"{limits.max_sessions_per_target} sessions to {target_name} (max_sessions_per_target)"
        if limits.max_sessions_per_initiator and per_initiator >= limits.max_sessions_per_initiator:
            return f"{limits.max_sessions_per_initiator} sessions of {initiator_name} (max_sessions_per_initiator)"
        return None
