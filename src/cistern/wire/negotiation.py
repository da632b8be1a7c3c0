"""Operational parameter negotiation for either role (RFC 7143 sections 6.2, 6.3, 13).

A :class:`Negotiator` holds one side's view of a negotiation: the keys the peer offered or declared, the
offers we made and still await an answer to, and the agreed results. It works on plain ``(key, value)``
pairs; the login state machine (:mod:`cistern.wire.login`) routes the login-declarative and security
keys itself and hands the rest here.

Rules implemented (RFC 7143 6.2):

* unknown keys, including X-/X# vendor keys we do not implement, are answered ``NotUnderstood``;
* a key Irrelevant in the session (e.g. MaxBurstLength in a Discovery session) is answered ``Irrelevant``;
* a malformed or out-of-range value is answered ``Reject`` and the key keeps its default;
* a key offered or declared twice in one negotiation is a protocol error (:class:`NegotiationError`;
  the target then fails the login with 0x0200 "initiator error", the initiator drops the connection);
* an answer to one of our offers that the result function does not allow is a protocol error;
  ``NotUnderstood``/``Irrelevant``/``Reject`` answers are tolerated and leave the default in force;
* the obsoleted marker keys (13.26): IFMarker/OFMarker are answered ``No`` (the RFC's permitted
  alternative to ``Reject``, understood by RFC 3720 peers), IFMarkInt/OFMarkInt ``Reject``;
* FirstBurstLength never exceeds MaxBurstLength (13.14): answers and the result are clamped.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from cistern.wire.keys import KEYS, KeyDef, Kind, Sender, Stage, Use, lookup
from cistern.wire.params import PARAM_KEYS, PARAMS, Negotiated
from cistern.wire.text import TextError, decode_boolean, decode_number, encode_boolean, split_list

__all__ = [
    "IRRELEVANT",
    "NOT_UNDERSTOOD",
    "REJECT",
    "Negotiated",
    "NegotiationError",
    "NegotiationPolicy",
    "Negotiator",
    "Role",
]

IRRELEVANT = "Irrelevant"
REJECT = "Reject"
NOT_UNDERSTOOD = "NotUnderstood"
_NON_VALUES = frozenset({IRRELEVANT, REJECT, NOT_UNDERSTOOD})

_RFC7143_OFFERS = ("TaskReporting", "iSCSIProtocolLevel")
#: Operational keys an initiator offers by default (RFC 7143 13), in wire.params.PARAMS order: all but the
#: MaxRecvDataSegmentLength declaration and the RFC 7143-only keys (offered on request).
_INITIATOR_OFFERS = tuple(
    p.key for p in PARAMS if p.key != "MaxRecvDataSegmentLength" and p.key not in _RFC7143_OFFERS
)


class NegotiationError(Exception):
    """The peer broke the negotiation rules (repeated key, impossible answer, key out of stage)."""


class Role(enum.Enum):
    INITIATOR = "initiator"
    TARGET = "target"


@dataclass(frozen=True, slots=True)
class NegotiationPolicy:
    """One side's limits and preferences.

    For result-function ``Minimum`` keys the value is the largest we accept, for ``Maximum`` keys
    (DefaultTime2Wait) the smallest; Booleans are our preference; digest and TaskReporting tuples
    list the values we accept, most preferred first. ``max_recv_data_segment_length`` is what we
    declare we can receive.
    """

    header_digest: tuple[str, ...] = ("None",)
    data_digest: tuple[str, ...] = ("None",)
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    task_reporting: tuple[str, ...] = ("RFC3720",)
    iscsi_protocol_level: int = 1
    #: initiator only: also offer the RFC 7143 keys TaskReporting and iSCSIProtocolLevel
    offer_rfc7143_keys: bool = False

    def __post_init__(self) -> None:
        for name, attr in _POLICY_ATTR.items():
            defn = KEYS[name]
            value = getattr(self, attr)
            if defn.kind in (Kind.MIN, Kind.MAX) or name == "MaxRecvDataSegmentLength":
                if not defn.minimum <= value <= defn.maximum:
                    raise ValueError(f"{name}={value} outside {defn.minimum}..{defn.maximum}")
            elif defn.kind is Kind.LIST and (not value or any(v not in defn.values for v in value)):
                raise ValueError(f"{name} values {value!r} not in {defn.values!r}")

    def local_value(self, name: str) -> str:
        value = getattr(self, _POLICY_ATTR[name])
        if isinstance(value, bool):
            return encode_boolean(value)
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)


#: RFC key -> NegotiationPolicy field (the same snake_case names as wire.params)
_POLICY_ATTR = {p.key: p.name for p in PARAMS}
assert {f.name for f in fields(NegotiationPolicy)} == {*_POLICY_ATTR.values(), "offer_rfc7143_keys"}


#: RFC key -> Negotiated field, for the keys whose result the negotiation computes (all but the digests
#: and the MaxRecvDataSegmentLength declarations, which negotiated() fills in itself).
_NEGOTIATED_FIELD = {
    key: attr
    for attr, key in PARAM_KEYS.items()
    if key not in ("HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength")
}


def _parse_typed(defn: KeyDef, value: str) -> bool | int | list[str]:
    """Parse an offered value for ``defn``; raises TextError when malformed or out of range."""
    if defn.kind in (Kind.AND, Kind.OR):
        return decode_boolean(value)
    if defn.kind in (Kind.MIN, Kind.MAX) or defn.name == "MaxRecvDataSegmentLength":
        n = decode_number(value)
        if not defn.minimum <= n <= defn.maximum:
            raise TextError(f"{defn.name}={n} outside {defn.minimum}..{defn.maximum}")
        return n
    if defn.kind is Kind.LIST:
        return split_list(value)
    raise TextError(f"{defn.name} is not negotiable")


@dataclass
class Negotiator:
    """One side of an operational negotiation (login operational stage or a full-feature Text exchange)."""

    role: Role
    policy: NegotiationPolicy = field(default_factory=NegotiationPolicy)
    discovery: bool = False
    leading: bool = True
    _results: dict[str, str] = field(default_factory=dict, init=False)
    _pending: dict[str, str] = field(default_factory=dict, init=False)
    _seen: set[str] = field(default_factory=set, init=False)
    _peer_declared: dict[str, str] = field(default_factory=dict, init=False)
    _we_declared: dict[str, str] = field(default_factory=dict, init=False)

    # ---- queries ----

    @property
    def has_pending(self) -> bool:
        """True while an offer of ours awaits the peer's answer (no stage transit until answered)."""
        return bool(self._pending)

    @property
    def peer_declarations(self) -> dict[str, str]:
        return dict(self._peer_declared)

    def result(self, name: str) -> str | None:
        """The agreed value of a negotiated key, or None if it was never (successfully) negotiated."""
        return self._results.get(name)

    def _peer_sender(self) -> Sender:
        return Sender.INITIATOR if self.role is Role.TARGET else Sender.TARGET

    # ---- receiving ----

    def begin_text_negotiation(self) -> None:
        """Start a new full-feature Text negotiation: keys may be declared afresh (RFC 7143 6.2)."""
        self._seen.clear()

    def receive(self, pairs: Iterable[tuple[str, str]], stage: Stage) -> list[tuple[str, str]]:
        """Consume the peer's pairs (offers, declarations, answers); return our answers in order."""
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in self._seen:
                raise NegotiationError(f"key {key} sent twice in one negotiation")
            self._seen.add(key)
            if key in self._pending:
                self._take_answer(key, value)
                continue
            answer = self._take_offer(key, value, stage)
            if answer is not None:
                answers.append((key, answer))
        self._clamp_first_burst(answers)
        return answers

    def _take_offer(self, key: str, value: str, stage: Stage) -> str | None:
        defn = lookup(key)
        if defn is None:
            return None if value in _NON_VALUES else NOT_UNDERSTOOD
        if value in _NON_VALUES:
            return None  # an answer to nothing we offered: ignore
        if key in ("IFMarker", "OFMarker"):
            return "No"
        if key in ("IFMarkInt", "OFMarkInt"):
            return REJECT
        if defn.kind is Kind.SPECIAL:
            if stage is Stage.FULL_FEATURE:
                return REJECT
            raise NegotiationError(f"key {key} not allowed in stage {stage.name}")
        if stage not in defn.stages:
            if stage is Stage.FULL_FEATURE:
                return REJECT
            raise NegotiationError(f"key {key} not allowed in stage {stage.name}")
        if not defn.senders & self._peer_sender():
            return REJECT
        if defn.kind is Kind.DECLARATIVE:
            return self._take_declaration(defn, value)
        if key in self._results:
            raise NegotiationError(f"key {key} renegotiated")
        if defn.use is Use.LO and not self.leading:
            return IRRELEVANT
        if self.discovery and defn.irrelevant_in_discovery:
            return IRRELEVANT
        try:
            offered = _parse_typed(defn, value)
        except TextError:
            return REJECT
        answer = self._answer(defn, offered)
        if answer != REJECT:
            self._results[key] = answer
        return answer

    def _take_declaration(self, defn: KeyDef, value: str) -> str | None:
        if defn.name == "MaxRecvDataSegmentLength":
            try:
                _parse_typed(defn, value)
            except TextError:
                return REJECT
        self._peer_declared[defn.name] = value
        return None

    def _answer(self, defn: KeyDef, offered: bool | int | list[str]) -> str:
        ours = getattr(self.policy, _POLICY_ATTR[defn.name])
        if defn.kind is Kind.LIST:
            assert isinstance(offered, list)
            for candidate in offered:
                if candidate in ours:
                    return candidate
            return REJECT
        if defn.kind is Kind.AND:
            return encode_boolean(bool(offered) and ours)
        if defn.kind is Kind.OR:
            return encode_boolean(bool(offered) or ours)
        assert isinstance(offered, int)
        if defn.kind is Kind.MIN:
            return str(min(offered, ours))
        return str(max(offered, ours))

    def _take_answer(self, key: str, value: str) -> None:
        offered = self._pending.pop(key)
        if value in _NON_VALUES:
            return  # tolerated: the default stays in force
        defn = KEYS[key]
        try:
            answer = _parse_typed(defn, value)
        except TextError as exc:
            raise NegotiationError(f"bad answer {key}={value[:64]}: {exc}") from None
        ok: bool
        if defn.kind is Kind.LIST:
            assert isinstance(answer, list)
            ok = len(answer) == 1 and answer[0] in offered.split(",")
        elif defn.kind is Kind.AND:
            ok = answer is False or offered == "Yes"
        elif defn.kind is Kind.OR:
            ok = answer is True or offered == "No"
        elif defn.kind is Kind.MIN:
            ok = isinstance(answer, int) and answer <= int(offered)
        else:
            ok = isinstance(answer, int) and answer >= int(offered)
        if not ok:
            raise NegotiationError(f"answer {key}={value[:64]} not allowed for offer {offered}")
        self._results[key] = value

    def _clamp_first_burst(self, answers: list[tuple[str, str]]) -> None:
        first, burst = self._results.get("FirstBurstLength"), self._results.get("MaxBurstLength")
        if first is None or burst is None or int(first) <= int(burst):
            return
        self._results["FirstBurstLength"] = burst
        for i, (key, _) in enumerate(answers):
            if key == "FirstBurstLength":
                answers[i] = (key, burst)

    # ---- offering ----

    def _default_acceptable(self, defn: KeyDef) -> bool:
        ours = getattr(self.policy, _POLICY_ATTR[defn.name])
        default = defn.default
        assert default is not None
        if defn.kind is Kind.LIST:
            return default in ours
        if defn.kind is Kind.AND:
            return ours or default == "No"
        if defn.kind is Kind.OR:
            return True
        if defn.kind is Kind.MIN:
            return int(default) <= ours
        return int(default) >= ours

    def _offer_names(self) -> list[str]:
        names: tuple[str, ...]
        if self.role is Role.INITIATOR:
            names = _INITIATOR_OFFERS + (_RFC7143_OFFERS if self.policy.offer_rfc7143_keys else ())
        else:
            names = tuple(
                n for n in _INITIATOR_OFFERS + _RFC7143_OFFERS if not self._default_acceptable(KEYS[n])
            )
        out = []
        for name in names:
            defn = KEYS[name]
            if name in self._results or name in self._pending or name in self._seen:
                continue
            if self.discovery and defn.irrelevant_in_discovery:
                continue
            if defn.use is Use.LO and not self.leading:
                continue
            out.append(name)
        return out

    def needs_offers(self) -> bool:
        """True if :meth:`offers` would offer a key (not counting the MaxRecvDataSegmentLength declaration)."""
        return bool(self._offer_names())

    def offers(self, stage: Stage = Stage.OPERATIONAL) -> list[tuple[str, str]]:
        """Our offers and declarations not yet made. An initiator offers its whole policy; a target
        offers only keys whose default it cannot accept (and declares MaxRecvDataSegmentLength)."""
        out: list[tuple[str, str]] = []
        if stage is Stage.SECURITY:
            return out
        for name in self._offer_names():
            value = self.policy.local_value(name)
            out.append((name, value))
            self._pending[name] = value
        if "MaxRecvDataSegmentLength" not in self._we_declared:
            value = str(self.policy.max_recv_data_segment_length)
            self._we_declared["MaxRecvDataSegmentLength"] = value
            out.append(("MaxRecvDataSegmentLength", value))
        return out

    def declare_max_recv_data_segment_length(self, value: int) -> tuple[str, str]:
        """A fresh MaxRecvDataSegmentLength declaration (e.g. in a full-feature Text exchange)."""
        defn = KEYS["MaxRecvDataSegmentLength"]
        if not defn.minimum <= value <= defn.maximum:
            raise ValueError(f"MaxRecvDataSegmentLength {value} out of range")
        self._we_declared["MaxRecvDataSegmentLength"] = str(value)
        return ("MaxRecvDataSegmentLength", str(value))

    # ---- result ----

    def negotiated(self) -> Negotiated:
        values: dict[str, object] = {}
        for name, attr in _NEGOTIATED_FIELD.items():
            defn = KEYS[name]
            raw = self._results.get(name, defn.default)
            assert raw is not None
            if defn.kind in (Kind.AND, Kind.OR):
                values[attr] = raw == "Yes"
            elif defn.kind is Kind.LIST:
                values[attr] = raw
            else:
                values[attr] = int(raw)
        burst = int(values["max_burst_length"])  # type: ignore[call-overload]
        if int(values["first_burst_length"]) > burst:  # type: ignore[call-overload]
            values["first_burst_length"] = burst
        ours = self._we_declared.get("MaxRecvDataSegmentLength", "8192")
        theirs = self._peer_declared.get("MaxRecvDataSegmentLength", "8192")
        return Negotiated(
            header_digest=self._results.get("HeaderDigest") == "CRC32C",
            data_digest=self._results.get("DataDigest") == "CRC32C",
            max_recv_data_segment_length=int(ours),
            max_xmit_data_segment_length=min(decode_number(theirs), KEYS["MaxRecvDataSegmentLength"].maximum),
            **values,  # type: ignore[arg-type]
        )
