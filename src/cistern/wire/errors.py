"""The one error vocabulary of :mod:`cistern.wire` for the full-feature phase (h11's Remote/Local split).

* :class:`RemoteProtocolError`: the *peer* broke RFC 7143. It carries the answer the RFC asks for
  (:attr:`RemoteProtocolError.answer`): a Reject PDU with a reason code (RFC 7143 11.17.1), dropping the
  connection (RFC 7143 7.1 / 7.2 "the connection must be dropped"), or a login status (11.13.5). The I/O
  layer sends that answer; nobody matches on message text.
* :class:`LocalProtocolError`: *our* caller misused a state machine (sent a PDU the state forbids,
  handed in a value out of range). It is a bug in the caller, never answered on the wire.

Older specific exceptions (:class:`PduError`, also :mod:`cistern.wire.pdu`'s, and
:class:`cistern.wire.framing.FramingError`) are subclasses of :class:`RemoteProtocolError`, so a handler
of the latter catches them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from cistern.wire.constants import LoginStatus, RejectReason

__all__ = [
    "DROP",
    "Answer",
    "Drop",
    "LocalProtocolError",
    "LoginFailure",
    "PduError",
    "ProtocolError",
    "Rejection",
    "RemoteProtocolError",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Answer with a Reject PDU (RFC 7143 11.17): ``reason`` code, ``header`` the offending BHS
    (48 bytes, echoed in the Reject's data segment; empty when the caller fills it in)."""

    reason: RejectReason
    header: bytes = b""


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the connection (RFC 7143 7.1.x, 7.2: framing lost, a digest error at ERL 0, a fatal rule)."""


@dataclass(frozen=True, slots=True)
class LoginFailure:
    """End the login with this Login Response status (RFC 7143 11.13.5, class << 8 | detail)."""

    status: LoginStatus


Answer = Rejection | Drop | LoginFailure
DROP = Drop()


class ProtocolError(Exception):
    """Base of the wire/ full-feature protocol errors."""


class RemoteProtocolError(ProtocolError):
    """The peer broke RFC 7143; :attr:`answer` is what to put on the wire (default: drop the connection).

    ``RemoteProtocolError("why", Rejection(RejectReason.INVALID_PDU_FIELD))`` asks for a Reject;
    ``RemoteProtocolError("why")`` for dropping the connection.
    """

    def __init__(self, message: str, answer: Answer = DROP) -> None:
        super().__init__(message)
        self.answer: Answer = answer

    @property
    def reject_reason(self) -> RejectReason | None:
        """The Reject reason if the answer is a Reject, else None."""
        return self.answer.reason if isinstance(self.answer, Rejection) else None


class PduError(RemoteProtocolError):
    """The peer sent a PDU we cannot accept; ``reason`` is the Reject reason code to answer with
    (:attr:`answer` is the matching :class:`Rejection`)."""

    def __init__(self, message: str, reason: RejectReason = RejectReason.PROTOCOL_ERROR) -> None:
        super().__init__(message, Rejection(reason))
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """Our caller misused a state machine (a programming error; never answered on the wire)."""
