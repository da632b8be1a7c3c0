"""The negotiated operational parameters, split by scope (RFC 7143 section 13, "Scope: SW / CO").

One definition used by config, negotiation and both roles:

* :class:`SessionParams`: the session-wide (SW) results, the same on every connection of a session
  (MaxConnections, InitialR2T, ImmediateData, MaxBurstLength, FirstBurstLength, DefaultTime2Wait,
  DefaultTime2Retain, MaxOutstandingR2T, DataPDUInOrder, DataSequenceInOrder, ErrorRecoveryLevel,
  TaskReporting, iSCSIProtocolLevel).
* :class:`ConnectionParams`: the connection-only (CO) results (HeaderDigest, DataDigest and the two
  directions of the declarative MaxRecvDataSegmentLength, which a full-feature Text exchange may change).
* :class:`Negotiated`: the pair, as the login produces it (``negotiated.session`` /
  ``negotiated.connection``); it also reads flat (``negotiated.max_burst_length``) and can be built from
  flat keyword arguments, so callers written before the split keep working.

:data:`PARAMS` is the one table of the negotiable parameters (:class:`ParamDef`: snake_case name, RFC key;
scope, result function, range and default read from :mod:`cistern.wire.keys`); the negotiation policy,
the negotiation engine and the target config derive their key/field maps from it. At import every field
of the two dataclasses is checked against it (scope, default), so they cannot drift apart. Values are plain ints/bools/str:
lengths in bytes, times in seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from cistern.wire.keys import KEYS, KeyDef, Kind, Scope

__all__ = [
    "PARAMS",
    "PARAM_BY_KEY",
    "PARAM_BY_NAME",
    "PARAM_KEYS",
    "ConnectionParams",
    "Negotiated",
    "ParamDef",
    "SessionParams",
]


@dataclass(frozen=True, slots=True)
class SessionParams:
    """Session-wide (SW) results of RFC 7143 section 13; RFC defaults when not negotiated."""

    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    task_reporting: str = "RFC3720"
    iscsi_protocol_level: int = 0

    def __post_init__(self) -> None:
        if self.first_burst_length > self.max_burst_length:
            raise ValueError("FirstBurstLength must not exceed MaxBurstLength (RFC 7143 13.14)")


@dataclass(frozen=True, slots=True)
class ConnectionParams:
    """Connection-only (CO) results: digests and the per-direction data segment limits (bytes)."""

    header_digest: bool = False
    data_digest: bool = False
    #: what we accept in one data segment (our own MaxRecvDataSegmentLength declaration)
    max_recv_data_segment_length: int = 8192
    #: what we may send in one data segment (the peer's MaxRecvDataSegmentLength declaration)
    max_xmit_data_segment_length: int = 8192


@dataclass(frozen=True, slots=True)
class ParamDef:
    """One negotiable operational parameter: ``name`` is its snake_case name everywhere (the field of
    :class:`SessionParams`/:class:`ConnectionParams`, of ``NegotiationPolicy`` and of the target config's
    ``[targets.params]``), ``key`` its RFC 7143 key. Everything else — scope, result function, range,
    default, allowed values — is read from the key's :class:`~cistern.wire.keys.KeyDef` (RFC 7143 13)."""

    name: str
    key: str

    @property
    def defn(self) -> KeyDef:
        return KEYS[self.key]

    @property
    def scope(self) -> Scope:
        return self.defn.scope

    @property
    def result(self) -> Kind:
        """The result function: MIN/MAX (numerical), AND/OR (Boolean), LIST, DECLARATIVE."""
        return self.defn.kind

    @property
    def type(self) -> type:
        """The Python type of a result: bool, int or str (a LIST key's chosen value)."""
        kind = self.defn.kind
        if kind in (Kind.AND, Kind.OR):
            return bool
        if kind in (Kind.MIN, Kind.MAX) or self.key == "MaxRecvDataSegmentLength":
            return int
        return str

    @property
    def minimum(self) -> int:
        return self.defn.minimum

    @property
    def maximum(self) -> int:
        return self.defn.maximum


#: The negotiable operational keys of RFC 7143 13 (+ RFC 7144 iSCSIProtocolLevel), in the order an
#: initiator offers them. The one table config, negotiation (both roles) and the session machines use.
PARAMS: tuple[ParamDef, ...] = tuple(
    ParamDef(name, key)
    for name, key in (
        ("header_digest", "HeaderDigest"),
        ("data_digest", "DataDigest"),
        ("max_connections", "MaxConnections"),
        ("initial_r2t", "InitialR2T"),
        ("immediate_data", "ImmediateData"),
        ("max_recv_data_segment_length", "MaxRecvDataSegmentLength"),
        ("max_burst_length", "MaxBurstLength"),
        ("first_burst_length", "FirstBurstLength"),
        ("default_time2wait", "DefaultTime2Wait"),
        ("default_time2retain", "DefaultTime2Retain"),
        ("max_outstanding_r2t", "MaxOutstandingR2T"),
        ("data_pdu_in_order", "DataPDUInOrder"),
        ("data_sequence_in_order", "DataSequenceInOrder"),
        ("error_recovery_level", "ErrorRecoveryLevel"),
        ("task_reporting", "TaskReporting"),
        ("iscsi_protocol_level", "iSCSIProtocolLevel"),
    )
)
PARAM_BY_NAME: dict[str, ParamDef] = {p.name: p for p in PARAMS}
PARAM_BY_KEY: dict[str, ParamDef] = {p.key: p for p in PARAMS}

#: field name -> RFC 7143 key it holds the result of (both max_*_data_segment_length come from
#: MaxRecvDataSegmentLength declarations: ours, and the peer's).
PARAM_KEYS: dict[str, str] = {p.name: p.key for p in PARAMS} | {
    "max_xmit_data_segment_length": "MaxRecvDataSegmentLength"
}

_SESSION_FIELDS = tuple(f.name for f in fields(SessionParams))
_CONNECTION_FIELDS = tuple(f.name for f in fields(ConnectionParams))


def _check_table() -> None:
    assert set(PARAM_KEYS) == set(_SESSION_FIELDS) | set(_CONNECTION_FIELDS)
    for cls, scope in ((SessionParams, Scope.SW), (ConnectionParams, Scope.CO)):
        for f in fields(cls):
            defn = KEYS[PARAM_KEYS[f.name]]
            assert defn.scope is scope, f"{defn.name} scope {defn.scope} but in {cls.__name__}"
            if defn.kind in (Kind.MIN, Kind.MAX):
                assert defn.default == str(f.default), f"{defn.name} default differs"
            if f.name in PARAM_BY_NAME:
                assert (
                    isinstance(f.default, PARAM_BY_NAME[f.name].type)
                    or PARAM_BY_NAME[f.name].defn.kind is Kind.LIST
                )


_check_table()


class Negotiated:
    """The parameters one connection of one session runs with: :attr:`session` + :attr:`connection`.

    ``Negotiated(session=SessionParams(...), connection=ConnectionParams(...))`` or, flat,
    ``Negotiated(max_burst_length=512, header_digest=True)``. Immutable; :meth:`replace` returns a copy.
    Raises ValueError for FirstBurstLength > MaxBurstLength and TypeError for an unknown field.
    """

    __slots__ = ("connection", "session")

    session: SessionParams
    connection: ConnectionParams

    def __init__(
        self,
        session: SessionParams | None = None,
        connection: ConnectionParams | None = None,
        **flat: Any,
    ) -> None:
        unknown = set(flat) - set(PARAM_KEYS)
        if unknown:
            raise TypeError(f"unknown negotiated parameter(s): {sorted(unknown)}")
        s_kw = {k: v for k, v in flat.items() if k in _SESSION_FIELDS}
        c_kw = {k: v for k, v in flat.items() if k in _CONNECTION_FIELDS}
        if session is None:
            s = SessionParams(**s_kw)
        else:
            s = dataclasses.replace(session, **s_kw) if s_kw else session
        if connection is None:
            c = ConnectionParams(**c_kw)
        else:
            c = dataclasses.replace(connection, **c_kw) if c_kw else connection
        object.__setattr__(self, "session", s)
        object.__setattr__(self, "connection", c)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Negotiated is immutable; use replace()")

    def replace(self, **flat: Any) -> Negotiated:
        """A copy with some fields changed (flat names), e.g. a new max_xmit_data_segment_length."""
        return Negotiated(self.session, self.connection, **flat)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Negotiated):
            return NotImplemented
        return self.session == other.session and self.connection == other.connection

    def __hash__(self) -> int:
        return hash((self.session, self.connection))

    def __repr__(self) -> str:
        return f"Negotiated({self.session!r}, {self.connection!r})"

    # flat read access (one line each so type checkers see them)
    max_connections = property(lambda self: self.session.max_connections)
    initial_r2t = property(lambda self: self.session.initial_r2t)
    immediate_data = property(lambda self: self.session.immediate_data)
    max_burst_length = property(lambda self: self.session.max_burst_length)
    first_burst_length = property(lambda self: self.session.first_burst_length)
    default_time2wait = property(lambda self: self.session.default_time2wait)
    default_time2retain = property(lambda self: self.session.default_time2retain)
    max_outstanding_r2t = property(lambda self: self.session.max_outstanding_r2t)
    data_pdu_in_order = property(lambda self: self.session.data_pdu_in_order)
    data_sequence_in_order = property(lambda self: self.session.data_sequence_in_order)
    error_recovery_level = property(lambda self: self.session.error_recovery_level)
    task_reporting = property(lambda self: self.session.task_reporting)
    iscsi_protocol_level = property(lambda self: self.session.iscsi_protocol_level)
    header_digest = property(lambda self: self.connection.header_digest)
    data_digest = property(lambda self: self.connection.data_digest)
    max_recv_data_segment_length = property(lambda self: self.connection.max_recv_data_segment_length)
    max_xmit_data_segment_length = property(lambda self: self.connection.max_xmit_data_segment_length)
