"""The iSCSI login/text keys of RFC 7143 section 13 (and RFC 7144 iSCSIProtocolLevel), as data.

Each :class:`KeyDef` records what section 13 says about one key: its negotiation type (list,
Boolean AND/OR, numerical min/max, declarative), its *Use* (LO leading-only, IO initialize-only,
FFPO full-feature-phase-only, ALL), its *Scope* (SW session-wide, CO connection-only), who may send it,
in which login stage it may appear, its default, its allowed range or values, and whether it is
Irrelevant in a Discovery session. The negotiation engine (:mod:`cistern.wire.negotiation`) is driven
by this table; nothing here holds state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CHAP_KEYS",
    "KEYS",
    "LOGIN_DECLARATIVE_KEYS",
    "OBSOLETE_KEYS",
    "KeyDef",
    "Kind",
    "Scope",
    "Sender",
    "Stage",
    "Use",
    "is_vendor_key",
    "lookup",
]


class Stage(enum.IntEnum):
    """Login stage codes, the CSG/NSG field values of RFC 7143 11.12.3."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class Kind(enum.Enum):
    LIST = "list"  # responder picks the first value of the offer it supports
    AND = "and"  # Boolean, result = offer AND answer
    OR = "or"  # Boolean, result = offer OR answer
    MIN = "min"  # numerical, result = minimum
    MAX = "max"  # numerical, result = maximum
    DECLARATIVE = "declarative"  # each side states its own value; no answer
    SPECIAL = "special"  # handled by the login/auth layer (AuthMethod, CHAP_*, SendTargets)


class Use(enum.Enum):
    LO = "LO"  # leading connection only
    IO = "IO"  # initialize only: the first login request/response of a connection
    FFPO = "FFPO"  # full feature phase only
    ALL = "ALL"


class Scope(enum.Enum):
    SW = "SW"  # session-wide
    CO = "CO"  # connection-only


class Sender(enum.Flag):
    INITIATOR = enum.auto()
    TARGET = enum.auto()
    BOTH = INITIATOR | TARGET


_LOGIN = frozenset({Stage.SECURITY, Stage.OPERATIONAL})
_OPER = frozenset({Stage.OPERATIONAL})
_SEC = frozenset({Stage.SECURITY})
_FFP = frozenset({Stage.FULL_FEATURE})
_ANY = frozenset({Stage.SECURITY, Stage.OPERATIONAL, Stage.FULL_FEATURE})
_OPER_FFP = frozenset({Stage.OPERATIONAL, Stage.FULL_FEATURE})


@dataclass(frozen=True, slots=True)
class KeyDef:
    name: str
    kind: Kind
    use: Use
    scope: Scope
    senders: Sender
    stages: frozenset[Stage]
    default: str | None = None
    minimum: int = 0
    maximum: int = 0
    values: tuple[str, ...] = ()
    irrelevant_in_discovery: bool = False


_MAX_24 = 2**24 - 1


def _num(
    name: str, kind: Kind, default: int, lo: int, hi: int, *, use: Use = Use.LO, disc: bool = False
) -> KeyDef:
    return KeyDef(name, kind, use, Scope.SW, Sender.BOTH, _OPER, str(default), lo, hi, (), disc)


def _bool(name: str, kind: Kind, default: bool, *, disc: bool = True) -> KeyDef:
    return KeyDef(
        name, kind, Use.LO, Scope.SW, Sender.BOTH, _OPER, "Yes" if default else "No", values=("Yes", "No"),
        irrelevant_in_discovery=disc,
    )  # fmt: skip


_DEFS: tuple[KeyDef, ...] = (
    # 13.1 HeaderDigest / DataDigest
    KeyDef(
        "HeaderDigest", Kind.LIST, Use.IO, Scope.CO, Sender.BOTH, _OPER, "None", values=("CRC32C", "None")
    ),
    KeyDef("DataDigest", Kind.LIST, Use.IO, Scope.CO, Sender.BOTH, _OPER, "None", values=("CRC32C", "None")),
    # 13.2 MaxConnections
    _num("MaxConnections", Kind.MIN, 1, 1, 65535, disc=True),
    # 13.3 SendTargets: Text request in full feature phase
    KeyDef("SendTargets", Kind.SPECIAL, Use.FFPO, Scope.SW, Sender.INITIATOR, _FFP),
    # 13.4 - 13.9 names, aliases, addresses, portal group tag (declarations)
    KeyDef("TargetName", Kind.DECLARATIVE, Use.ALL, Scope.SW, Sender.BOTH, _ANY),
    KeyDef("InitiatorName", Kind.DECLARATIVE, Use.IO, Scope.SW, Sender.INITIATOR, _LOGIN),
    KeyDef("TargetAlias", Kind.DECLARATIVE, Use.ALL, Scope.SW, Sender.TARGET, _ANY),
    KeyDef("InitiatorAlias", Kind.DECLARATIVE, Use.ALL, Scope.SW, Sender.INITIATOR, _ANY),
    KeyDef("TargetAddress", Kind.DECLARATIVE, Use.ALL, Scope.SW, Sender.TARGET, _ANY),
    KeyDef("TargetPortalGroupTag", Kind.DECLARATIVE, Use.IO, Scope.SW, Sender.TARGET, _LOGIN, None, 0, 65535),
    # 13.10 - 13.11
    _bool("InitialR2T", Kind.OR, True),
    _bool("ImmediateData", Kind.AND, True),
    # 13.12 MaxRecvDataSegmentLength: declarative, one value per direction, also in Text negotiation
    KeyDef(
        "MaxRecvDataSegmentLength",
        Kind.DECLARATIVE,
        Use.ALL,
        Scope.CO,
        Sender.BOTH,
        _OPER_FFP,
        "8192",
        512,
        _MAX_24,
    ),
    # 13.13 - 13.14
    _num("MaxBurstLength", Kind.MIN, 262144, 512, _MAX_24, disc=True),
    _num("FirstBurstLength", Kind.MIN, 65536, 512, _MAX_24, disc=True),
    # 13.15 - 13.16
    _num("DefaultTime2Wait", Kind.MAX, 2, 0, 3600),
    _num("DefaultTime2Retain", Kind.MIN, 20, 0, 3600),
    # 13.17
    _num("MaxOutstandingR2T", Kind.MIN, 1, 1, 65535, disc=True),
    # 13.18 - 13.19
    _bool("DataPDUInOrder", Kind.OR, True),
    _bool("DataSequenceInOrder", Kind.OR, True),
    # 13.20
    _num("ErrorRecoveryLevel", Kind.MIN, 0, 0, 2),
    # 13.21 SessionType
    KeyDef(
        "SessionType",
        Kind.DECLARATIVE,
        Use.LO,
        Scope.SW,
        Sender.INITIATOR,
        _LOGIN,
        "Normal",
        values=("Discovery", "Normal"),
    ),
    # 13.23 TaskReporting
    KeyDef(
        "TaskReporting",
        Kind.LIST,
        Use.LO,
        Scope.SW,
        Sender.BOTH,
        _OPER,
        "RFC3720",
        values=("RFC3720", "ResponseFence", "FastAbort"),
        irrelevant_in_discovery=True,
    ),
    # RFC 7144 section 2: iSCSIProtocolLevel, numerical, result function minimum
    _num("iSCSIProtocolLevel", Kind.MIN, 0, 0, 31),
    # 12 / 12.1.3 security keys, handled by the login layer
    KeyDef(
        "AuthMethod",
        Kind.SPECIAL,
        Use.LO,
        Scope.CO,
        Sender.BOTH,
        _SEC,
        "None",
        values=("KRB5", "SPKM1", "SPKM2", "SRP", "CHAP", "None"),
    ),
    *(
        KeyDef(name, Kind.SPECIAL, Use.LO, Scope.CO, Sender.BOTH, _SEC)
        for name in ("CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R")
    ),
    # 13.26 obsoleted keys (RFC 3720 markers): answered, never negotiated
    KeyDef("OFMarker", Kind.SPECIAL, Use.IO, Scope.CO, Sender.BOTH, _OPER, "No"),
    KeyDef("IFMarker", Kind.SPECIAL, Use.IO, Scope.CO, Sender.BOTH, _OPER, "No"),
    KeyDef("OFMarkInt", Kind.SPECIAL, Use.IO, Scope.CO, Sender.BOTH, _OPER),
    KeyDef("IFMarkInt", Kind.SPECIAL, Use.IO, Scope.CO, Sender.BOTH, _OPER),
)

KEYS: dict[str, KeyDef] = {d.name: d for d in _DEFS}

#: Keys the login layer itself interprets in the first request (declarations about the nexus).
LOGIN_DECLARATIVE_KEYS = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias"})
CHAP_KEYS = frozenset({"CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})
OBSOLETE_KEYS = frozenset({"OFMarker", "IFMarker", "OFMarkInt", "IFMarkInt"})


def lookup(name: str) -> KeyDef | None:
    """The definition of a standard key, or None (unknown or vendor key)."""
    return KEYS.get(name)


def is_vendor_key(name: str) -> bool:
    """X- (private) and X# (IANA-registered) extension keys, RFC 7143 13.5 / 6.1."""
    return name.startswith(("X-", "X#"))
