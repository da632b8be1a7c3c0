"""Sans-I/O state of one initiator connection (RFC 7143 4.2.2.2 StatSN, 7.5 Status SNACK, 7.1.1 NOP).

An :class:`InitiatorConnection` owns what is per connection on the initiator side:

* its CID and whether new commands may be placed on it (``active``; MC/S, RFC 7143 4.2.2);
* StatSN bookkeeping: ExpStatSN (what we acknowledge in every PDU we send), the highest StatSN seen and
  the StatSNs asked again with a Status SNACK at ErrorRecoveryLevel 1 (ExpStatSN stays below a missing
  one so the target keeps it, RFC 7143 7.5, 11.16 type 1);
* the connection keys it runs with (:class:`cistern.wire.params.ConnectionParams` inside ``negotiated``);
* its timers (:class:`cistern.wire.liveness.ConnectionTimers`): the login timeout while logging in, then
  the NOP-Out keep-alive (a ping after ``nop_interval`` s of silence, dropped after ``nop_timeout`` s
  without the NOP-In, RFC 7143 7.1.1);
* its outbox: the PDUs to write, in order (:meth:`pdus_to_send`).

No sockets, no asyncio, no clock reads: ``now`` is passed in (seconds, the caller's monotonic clock).
The session-wide state (CmdSN, ITT space, tasks) lives in :class:`cistern.wire.initiator_session.
InitiatorSession`, which writes into this outbox.
"""

from __future__ import annotations

from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG, SnackType
from cistern.wire.liveness import ConnectionTimers, TimerEvent
from cistern.wire.params import Negotiated
from cistern.wire.pdu import PDU, SnackRequest
from cistern.wire.serial import MASK, sn_add, sn_lt

__all__ = ["MAX_SNACK_RUN", "InitiatorConnection", "TimerEvent"]

#: the longest run of numbers one SNACK asks again (a larger gap is not a recoverable stream)
MAX_SNACK_RUN = 1024


class InitiatorConnection:
    """One connection of an initiator session. ``expstatsn``: the ExpStatSN the login left us with."""

    __slots__ = (
        "_ready",
        "active",
        "cid",
        "expstatsn",
        "high",
        "missing",
        "negotiated",
        "outbox",
        "snacks",
        "timers",
    )

    def __init__(
        self,
        cid: int,
        now: float,
        *,
        login_timeout: float = 15.0,
        nop_interval: float = 0.0,
        nop_timeout: float = 10.0,
        ready: list[InitiatorConnection] | None = None,
    ) -> None:
        self.cid = cid
        #: the session's list of connections with PDUs queued (this one joins it when its outbox fills)
        self._ready: list[InitiatorConnection] = ready if ready is not None else []
        self.active = True
        self.negotiated = Negotiated()
        self.expstatsn = 0
        self.high = MASK  # highest StatSN seen
        self.missing: set[int] = set()  # StatSNs asked again with a Status SNACK (ERL 1)
        self.snacks = 0
        #: PDUs queued for this connection, oldest first (use send() / pdus_to_send())
        self.outbox: list[PDU] = []
        self.timers = ConnectionTimers(
            now, login_timeout=login_timeout, nop_interval=nop_interval, nop_timeout=nop_timeout
        )

    # ---- phase

    def full_feature(self, expstatsn: int, negotiated: Negotiated, now: float) -> None:
        """The login ended with ExpStatSN ``expstatsn`` and these keys: the login timer stops, the
        keep-alive starts from ``now``."""
        self.expstatsn = expstatsn
        self.high = sn_add(expstatsn, MASK)
        self.negotiated = negotiated
        self.timers.full_feature(now)

    # ---- outbox

    def send(self, pdu: PDU) -> None:
        """Queue ``pdu`` for this connection (the session calls it; the I/O layer drains the outbox)."""
        out = self.outbox
        if not out:
            self._ready.append(self)
        out.append(pdu)

    def pdus_to_send(self) -> list[PDU]:
        """The PDUs queued since the last call, oldest first."""
        out = self.outbox
        if out:
            self.outbox = []
        return out

    # ---- StatSN

    def status_seen(self, statsn: int) -> None:
        """A status-carrying PDU with ``statsn`` arrived intact. In order: ExpStatSN moves on. A gap at
        ErrorRecoveryLevel >= 1: a Status SNACK asks the run again and ExpStatSN stays below it."""
        if not self.missing and statsn == (self.high + 1) & MASK:  # in order: the common case
            self.high = statsn
            self.expstatsn = (statsn + 1) & MASK
            return
        if self.missing:
            self.missing.discard(statsn)
        if sn_lt(self.high, statsn):
            gap = (statsn - self.high - 1) & MASK
            if gap and self.negotiated.error_recovery_level >= 1 and gap < MAX_SNACK_RUN:
                begrun = sn_add(self.high, 1)
                self.missing.update(sn_add(begrun, i) for i in range(gap))
                self.ask_status(begrun, gap)
            self.high = statsn
        self._settle()

    def status_damaged(self, statsn: int) -> None:
        """A status PDU's header is sound but its data segment failed the digest (ERL 1, RFC 7143 7.5):
        ask it again, with any gap before it, in one Status SNACK."""
        begrun, count = statsn, 1
        if sn_lt(self.high, statsn):
            begrun = sn_add(self.high, 1)
            count = min((statsn - self.high) & MASK, MAX_SNACK_RUN)
            self.high = statsn
        self.missing.update(sn_add(begrun, i) for i in range(count))
        self._settle()
        self.ask_status(begrun, count)

    def _settle(self) -> None:
        if self.missing:
            base = self.expstatsn
            self.expstatsn = min(self.missing, key=lambda sn: (sn - base) & MASK)
        elif sn_lt(self.expstatsn, sn_add(self.high, 1)):
            self.expstatsn = sn_add(self.high, 1)

    def ask_status(self, begrun: int, runlength: int) -> None:
        """Status SNACK (RFC 7143 11.16, type 1): resend StatSN ``begrun`` .. ``begrun+runlength-1``."""
        self.snacks += 1
        self.send(
            SnackRequest(
                FLAG_FINAL | SnackType.STATUS,
                0,
                RESERVED_TAG,
                RESERVED_TAG,
                self.expstatsn,
                begrun,
                runlength,
            )
        )

    # ---- time

    @property
    def login_deadline(self) -> float:
        """When the login times out (absolute seconds); meaningful before :meth:`full_feature`."""
        return self.timers.login_deadline

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` is due next (absolute seconds), or None."""
        return self.timers.next_timer()

    def handle_timer(self, now: float) -> TimerEvent | None:
        """The timer event due at ``now`` (LOGIN_TIMED_OUT, SEND_PING, PEER_DEAD) or None."""
        return self.timers.handle_timer(now)
