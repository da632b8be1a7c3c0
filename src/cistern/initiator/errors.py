"""The initiator's error vocabulary: iSCSI failures, login failures, and SCSI status as exceptions.

A SCSI command that completes with a status other than GOOD raises a :class:`ScsiError` subclass that
carries the decoded sense (SPC-4 4.5); a CHECK CONDITION becomes :class:`ScsiCheckCondition` with
``sense_key``, ``asc`` and ``ascq``; RESERVATION CONFLICT becomes :class:`ReservationConflict` (SAM-5
5.3.1).  iSCSI-level problems (RFC 7143) are :class:`IscsiError` subclasses.  A caller therefore sees
either the command's result or one of these, never a silent loss.
"""

from __future__ import annotations

from cistern.initiator.sense import Sense


class IscsiError(Exception):
    """Base of every error the initiator library raises."""


class ProtocolError(IscsiError):
    """The target broke RFC 7143 (a malformed PDU, an unknown tag, a window violation...)."""


class ConnectionLost(IscsiError):
    """The TCP connection dropped (or the target stopped answering NOP-Outs)."""


class SessionFailed(IscsiError):
    """The session could not be recovered within the reconnect policy; outstanding commands fail."""


class LoginError(IscsiError):
    """The target refused the login (RFC 7143 11.13.5 Status-Class / Status-Detail)."""

    def __init__(self, message: str, status_class: int = 0, status_detail: int = 0) -> None:
        super().__init__(message)
        self.status_class = status_class
        self.status_detail = status_detail

    @property
    def retryable(self) -> bool:
        """Status-Class 3 (target error) or a redirect may succeed later; initiator errors will not."""
        return self.status_class in (1, 3)


class AuthenticationError(LoginError):
    """CHAP failed: the target rejected our credentials, or the target failed mutual authentication."""


class TaskManagementError(IscsiError):
    """A task management function did not complete (RFC 7143 11.6.1 Response)."""

    def __init__(self, message: str, response: int) -> None:
        super().__init__(message)
        self.response = response


class CommandAborted(IscsiError):
    """The command was aborted by a task management function before it completed."""


class CommandTimeout(IscsiError):
    """The command did not complete within the caller's timeout (it was aborted on the target)."""


class ScsiError(IscsiError):
    """A SCSI command completed with a status other than GOOD."""

    def __init__(self, status: int, sense: Sense | None = None, message: str | None = None) -> None:
        self.status = status
        self.sense = sense
        super().__init__(message or f"SCSI status 0x{status:02x}" + (f": {sense}" if sense else ""))


class ScsiCheckCondition(ScsiError):
    """CHECK CONDITION with sense data."""

    def __init__(self, sense: Sense) -> None:
        super().__init__(0x02, sense, f"CHECK CONDITION: {sense}")

    @property
    def sense_key(self) -> int:
        assert self.sense is not None
        return self.sense.key

    @property
    def asc(self) -> int:
        assert self.sense is not None
        return self.sense.asc

    @property
    def ascq(self) -> int:
        assert self.sense is not None
        return self.sense.ascq


class UnitAttention(ScsiCheckCondition):
    """CHECK CONDITION, UNIT ATTENTION (reset, power on, capacity or LUN inventory changed...)."""


class Miscompare(ScsiCheckCondition):
    """CHECK CONDITION, MISCOMPARE (COMPARE AND WRITE or VERIFY with BYTCHK)."""


class ReservationConflict(ScsiError):
    """RESERVATION CONFLICT: another I_T nexus holds a reservation on the logical unit."""

    def __init__(self) -> None:
        super().__init__(0x18, None, "RESERVATION CONFLICT")


class TargetBusy(ScsiError):
    """BUSY or TASK SET FULL: the caller may retry later."""


class ServiceResponseError(IscsiError):
    """SCSI Response with Response != Command Completed at Target (RFC 7143 11.4.3)."""
