"""Sans-I/O iSCSI login state machines for target and initiator (RFC 7143 sections 6.3, 11.12, 11.13, 12, 13).

:class:`TargetLogin` consumes the fields of each Login Request (stage numbers, T/C bits, ISID/TSIH/CID
and the data segment) and returns a :class:`LoginStep`: the response text, the response stage fields,
the status (RFC 7143 11.13.5), and either ``done`` (full feature phase reached) or ``failed`` (send the
response, then close). :class:`InitiatorLogin` is the mirror: it produces :class:`LoginRequest` values
and consumes the target's responses, raising :class:`LoginRejected` for a non-zero status and
:class:`LoginProtocolError` when the target breaks the protocol.

Stages are 0 SecurityNegotiation, 1 LoginOperationalNegotiation, 3 FullFeaturePhase; NSG 2 is reserved.
Policy decisions made here (RFC 7143 6.3, 13): the security stage carries only the login declarations
(InitiatorName, TargetName, SessionType, InitiatorAlias), AuthMethod, CHAP_* and unknown keys
(answered NotUnderstood); an operational key there fails the login with 0x0200, as Linux LIO does.
A login declaration repeated with the same value is tolerated (older libiscsi resends InitiatorName
in the operational stage); with another value it fails with 0x0200.
A key sent without a value (``Key`` with no ``=``, :data:`~cistern.wire.text.NO_VALUE`, or ``Key=`` for a
key whose values are never empty) is answered for that key alone, as any inadmissible value is (RFC 7143
6.2): ``Reject`` for a key we know, ``NotUnderstood`` for one we do not; the login goes on.  InitiatorName
or TargetName without a value is a missing parameter (0x0207).
Neither PDUs nor sockets are known here; the integrator maps these values to Login PDUs and splits
long texts with the C bit (:func:`cistern.wire.text.split_text`).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cistern.wire.chap import (
    DEFAULT_ALGORITHMS,
    ChapCredentials,
    ChapError,
    ChapInitiator,
    ChapTarget,
)
from cistern.wire.constants import LoginStatus
from cistern.wire.keys import CHAP_KEYS, KEYS, LOGIN_DECLARATIVE_KEYS, Stage
from cistern.wire.negotiation import (
    REJECT,
    Negotiated,
    NegotiationError,
    NegotiationPolicy,
    Negotiator,
    Role,
)
from cistern.wire.text import (
    NO_VALUE,
    TextAccumulator,
    TextError,
    decode_number,
    encode_text,
    split_list,
)

__all__ = [
    "ChapAuth",
    "InitiatorLogin",
    "InitiatorLoginResult",
    "LoginOutcome",
    "LoginProtocolError",
    "LoginRejected",
    "LoginRequest",
    "LoginStatus",
    "LoginStep",
    "TargetInfo",
    "TargetLogin",
    "TargetPolicy",
]

#: A login that needs more request/response rounds than this is abusive.
MAX_LOGIN_EXCHANGES = 64
#: RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes.
MAX_ISCSI_NAME = 223
_SECURITY_KEYS = CHAP_KEYS | {"AuthMethod"}


# ---------------------------------------------------------------- policy objects (target side)


@dataclass(frozen=True, slots=True)
class ChapAuth:
    """CHAP required for a target (or for discovery): initiator secrets by user name, and the
    target's own credentials for mutual CHAP."""

    lookup_secret: Callable[[str], bytes | None]
    mutual: ChapCredentials | None = None
    require_mutual: bool = False
    algorithms: tuple[int, ...] = tuple(DEFAULT_ALGORITHMS)
    challenge_length: int | None = None


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What the login needs to know of one target. ``allowed_initiators=None`` admits everyone."""

    name: str
    allowed_initiators: frozenset[str] | None = None
    auth: ChapAuth | None = None
    limits: NegotiationPolicy | None = None
    alias: str | None = None
    #: the TargetPortalGroupTag to answer for this target on this connection (None: the policy's)
    portal_group_tag: int | None = None
    #: answer 0x0101/0x0102 with this TargetAddress ("host:port,tpgt") instead of logging in
    redirect: str | None = None
    redirect_permanent: bool = False
    removed: bool = False


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    lookup_target: Callable[[str], TargetInfo | None]
    portal_group_tag: int = 1
    limits: NegotiationPolicy = field(default_factory=NegotiationPolicy)
    discovery_enabled: bool = True
    discovery_auth: ChapAuth | None = None
    random_bytes: Callable[[int], bytes] = secrets.token_bytes
    #: a further check of the declared InitiatorName for a target (None: discovery), e.g. against the
    #: connection's TLS client certificate: returns why it is refused (login status 0x0202), or None
    authorize_initiator: Callable[[str, str | None], str | None] | None = None


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """A successful target-side login: everything the session layer needs."""

    session_type: str  # "Normal" or "Discovery"
    initiator_name: str
    initiator_alias: str | None
    target_name: str | None
    target: TargetInfo | None
    params: Negotiated
    auth_user: str | None
    isid: int
    tsih: int
    cid: int
    cmdsn: int


@dataclass(frozen=True, slots=True)
class LoginStep:
    """The target's answer to one Login Request."""

    text: bytes
    csg: int
    nsg: int
    transit: bool
    status: LoginStatus = LoginStatus.SUCCESS
    done: LoginOutcome | None = None
    failed: bool = False
    reason: str = ""

    @property
    def status_class(self) -> int:
        return self.status.status_class

    @property
    def status_detail(self) -> int:
        return self.status.status_detail


class _Fail(Exception):
    def __init__(self, status: LoginStatus, reason: str, text: bytes = b"") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.text = text


class _Auth(enum.Enum):
    START = "start"  # AuthMethod not yet negotiated
    AWAIT_CHAP_A = "await-chap-a"
    AWAIT_CHAP_R = "await-chap-r"
    DONE = "done"


def _check_name(value: str, key: str) -> str:
    if not value or value == NO_VALUE:  # "InitiatorName=" or "InitiatorName" alone: no name given
        raise _Fail(LoginStatus.MISSING_PARAMETER, f"{key} without a value")
    if len(value.encode()) > MAX_ISCSI_NAME or any(c.isspace() for c in value):
        raise _Fail(LoginStatus.INITIATOR_ERROR, f"bad {key}")
    return value


# ---------------------------------------------------------------- target


class TargetLogin:
    """Target-side login state machine for one connection (sans-I/O)."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._stage: Stage | None = None  # the CSG the next request must carry
        self._acc = TextAccumulator()
        self._finished = False
        self._exchanges = 0
        self._first_seen = False
        self._ids: tuple[int, int, int] = (0, 0, 0)
        self._declared: dict[str, str] = {}
        self._session_type = "Normal"
        self._target: TargetInfo | None = None
        self._known_target: str | None = None
        self._auth_cfg: ChapAuth | None = None
        self._auth = _Auth.START
        self._chap: ChapTarget | None = None
        self._auth_user: str | None = None
        self._negotiator: Negotiator | None = None
        self._sent_first_response = False

    @property
    def target_name(self) -> str | None:
        """The existing target the initiator asked for, once looked up, even if the login is then refused
        (None for discovery, an unknown TargetName, or not yet)."""
        return self._known_target

    @property
    def finished(self) -> bool:
        return self._finished

    def receive(
        self,
        csg: int,
        nsg: int,
        transit: bool,
        cont: bool,
        isid: int,
        tsih: int,
        cid: int,
        cmdsn: int,
        text_bytes: bytes,
        *,
        version_max: int = 0,
        version_min: int = 0,
    ) -> LoginStep:
        """Process one Login Request; never raises for peer input."""
        resp_csg = csg if csg in (0, 1) else (self._stage or 0)
        if self._finished:
            return self._failure(resp_csg, LoginStatus.INVALID_DURING_LOGIN, "login already finished")
        try:
            return self._receive(csg, nsg, transit, cont, isid, tsih, cid, cmdsn, text_bytes, version_min)
        except _Fail as f:
            return self._failure(resp_csg, f.status, f.reason, f.text)

    def _failure(self, csg: int, status: LoginStatus, reason: str, text: bytes = b"") -> LoginStep:
        self._finished = True
        return LoginStep(text=text, csg=csg, nsg=0, transit=False, status=status, failed=True, reason=reason)

    def _receive(
        self,
        csg: int,
        nsg: int,
        transit: bool,
        cont: bool,
        isid: int,
        tsih: int,
        cid: int,
        cmdsn: int,
        text_bytes: bytes,
        version_min: int,
    ) -> LoginStep:
        self._exchanges += 1
        if self._exchanges > MAX_LOGIN_EXCHANGES:
            raise _Fail(LoginStatus.INITIATOR_ERROR, "too many login exchanges")
        if transit and cont:
            raise _Fail(LoginStatus.INVALID_DURING_LOGIN, "T and C both set")
        if csg not in (Stage.SECURITY, Stage.OPERATIONAL):
            raise _Fail(LoginStatus.INVALID_DURING_LOGIN, f"invalid CSG {csg}")
        if transit and (nsg not in (Stage.OPERATIONAL, Stage.FULL_FEATURE) or nsg <= csg):
            raise _Fail(LoginStatus.INVALID_DURING_LOGIN, f"invalid transition {csg}->{nsg}")
        if not self._first_seen:
            if version_min > 0:
                raise _Fail(LoginStatus.UNSUPPORTED_VERSION, f"VersionMin {version_min} unsupported")
            self._ids = (isid, tsih, cid)
            self._first_seen = True
        elif (isid, tsih, cid) != self._ids:
            raise _Fail(LoginStatus.INVALID_DURING_LOGIN, "ISID/TSIH/CID changed during login")
        if self._stage is not None and csg != self._stage:
            raise _Fail(LoginStatus.INVALID_DURING_LOGIN, f"CSG {csg}, expected {int(self._stage)}")
        stage = Stage(csg)
        self._stage = stage
        try:
            pairs = self._acc.feed(text_bytes, final=not cont)
        except TextError as exc:
            raise _Fail(LoginStatus.INITIATOR_ERROR, f"malformed text: {exc}") from None
        if pairs is None:  # C bit: answer with an empty response until the final piece
            return LoginStep(text=b"", csg=csg, nsg=0, transit=False)
        self._acc.reset()
        return self._process(stage, nsg if transit else None, pairs, isid, tsih, cid, cmdsn)

    # -- request processing --

    def _process(
        self,
        stage: Stage,
        want: int | None,
        pairs: list[tuple[str, str]],
        isid: int,
        tsih: int,
        cid: int,
        cmdsn: int,
    ) -> LoginStep:
        declared: dict[str, str] = {}
        security: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in LOGIN_DECLARATIVE_KEYS or key in _SECURITY_KEYS:
                bucket = declared if key in LOGIN_DECLARATIVE_KEYS else security
                if key in bucket:
                    raise _Fail(LoginStatus.INITIATOR_ERROR, f"key {key} repeated")
                if not (key == "InitiatorAlias" and value == NO_VALUE):  # no alias given: none
                    bucket[key] = value
            else:
                rest.append((key, value))
        self._take_declarations(declared, tsih)
        negotiator = self._negotiator
        assert negotiator is not None
        out: list[tuple[str, str]] = []
        if not self._sent_first_response and self._session_type == "Normal":
            tag = self._target.portal_group_tag if self._target is not None else None
            out.append(
                ("TargetPortalGroupTag", str(tag if tag is not None else self._policy.portal_group_tag))
            )
            if self._target is not None and self._target.alias:
                out.append(("TargetAlias", self._target.alias))
        self._sent_first_response = True

        if stage is Stage.SECURITY:
            out += self._security(security)
            try:
                out += negotiator.receive(rest, Stage.SECURITY)
            except NegotiationError as exc:
                raise _Fail(LoginStatus.INITIATOR_ERROR, str(exc)) from None
            transit_to: int | None = None
            if want is not None and self._auth is _Auth.DONE:
                transit_to = want
                if want == Stage.FULL_FEATURE and negotiator.needs_offers():
                    # Our limits differ from the defaults, so we must offer keys: the RFC lets the
                    # target answer with a lower NSG, taking the initiator through the operational stage.
                    transit_to = Stage.OPERATIONAL
        else:
            if self._auth is not _Auth.DONE:
                if self._auth_cfg is not None:
                    raise _Fail(LoginStatus.AUTHENTICATION_FAILURE, "authentication required")
                self._auth = _Auth.DONE
            if security:
                raise _Fail(LoginStatus.INITIATOR_ERROR, "security key in operational stage")
            try:
                out += negotiator.receive(rest, Stage.OPERATIONAL)
            except NegotiationError as exc:
                raise _Fail(LoginStatus.INITIATOR_ERROR, str(exc)) from None
            out += negotiator.offers(Stage.OPERATIONAL)
            transit_to = want if want is not None and not negotiator.has_pending else None

        try:
            text = encode_text(out)
        except TextError as exc:  # our own configuration produced an unsendable value
            raise _Fail(LoginStatus.TARGET_ERROR, f"cannot encode response: {exc}") from None
        if transit_to is None:
            return LoginStep(text=text, csg=stage, nsg=0, transit=False)
        self._stage = Stage(transit_to)
        if transit_to != Stage.FULL_FEATURE:
            return LoginStep(text=text, csg=stage, nsg=transit_to, transit=True)
        self._finished = True
        outcome = LoginOutcome(
            session_type=self._session_type,
            initiator_name=self._declared["InitiatorName"],
            initiator_alias=self._declared.get("InitiatorAlias"),
            target_name=self._target.name if self._target is not None else None,
            target=self._target,
            params=negotiator.negotiated(),
            auth_user=self._auth_user,
            isid=isid,
            tsih=tsih,
            cid=cid,
            cmdsn=cmdsn,
        )
        return LoginStep(text=text, csg=stage, nsg=transit_to, transit=True, done=outcome)

    def _take_declarations(self, declared: dict[str, str], tsih: int) -> None:
        for key, value in declared.items():
            old = self._declared.get(key)
            if old is not None and old != value:
                raise _Fail(LoginStatus.INITIATOR_ERROR, f"{key} changed during login")
        first = not self._declared and self._negotiator is None
        if not first:
            self._declared.update(declared)
            return
        if "InitiatorName" not in declared:
            raise _Fail(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        _check_name(declared["InitiatorName"], "InitiatorName")
        session_type = declared.get("SessionType", "Normal")
        if session_type not in ("Normal", "Discovery"):
            raise _Fail(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType {session_type[:32]!r}")
        self._session_type = session_type
        limits = self._policy.limits
        if session_type == "Discovery":
            if not self._policy.discovery_enabled:
                raise _Fail(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, "discovery disabled")
            self._auth_cfg = self._policy.discovery_auth
            self._authorize(declared["InitiatorName"], None)
        else:
            name = declared.get("TargetName")
            if name is None:
                raise _Fail(LoginStatus.MISSING_PARAMETER, "TargetName missing")
            _check_name(name, "TargetName")
            target = self._policy.lookup_target(name)
            if target is None:
                raise _Fail(LoginStatus.NOT_FOUND, f"target {name} not found")
            self._known_target = target.name
            if target.removed:
                raise _Fail(LoginStatus.TARGET_REMOVED, f"target {name} removed")
            if target.redirect is not None:
                status = (
                    LoginStatus.TARGET_MOVED_PERMANENTLY
                    if target.redirect_permanent
                    else LoginStatus.TARGET_MOVED_TEMPORARILY
                )
                raise _Fail(status, "redirected", encode_text([("TargetAddress", target.redirect)]))
            allowed = target.allowed_initiators
            if allowed is not None and declared["InitiatorName"] not in allowed:
                raise _Fail(LoginStatus.AUTHORIZATION_FAILURE, "initiator not admitted to target")
            self._authorize(declared["InitiatorName"], name)
            self._target = target
            self._auth_cfg = target.auth
            limits = target.limits or limits
        self._declared.update(declared)
        self._negotiator = Negotiator(
            Role.TARGET, limits, discovery=session_type == "Discovery", leading=tsih == 0
        )

    def _authorize(self, initiator_name: str, target_name: str | None) -> None:
        check = self._policy.authorize_initiator
        if check is not None:
            reason = check(initiator_name, target_name)
            if reason is not None:
                raise _Fail(LoginStatus.AUTHORIZATION_FAILURE, reason)

    def _security(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        cfg = self._auth_cfg
        if self._auth is _Auth.START:
            method = keys.pop("AuthMethod", None)
            if method is None:
                if keys:
                    raise _Fail(LoginStatus.INITIATOR_ERROR, "CHAP keys before AuthMethod")
                if cfg is None:
                    self._auth = _Auth.DONE  # AuthMethod defaults to None
                return out
            try:
                offered = split_list(method)
            except TextError:
                offered = []
            supported = "CHAP" if cfg is not None else "None"
            if supported not in offered:
                raise _Fail(
                    LoginStatus.AUTHENTICATION_FAILURE,
                    f"AuthMethod {method[:64]!r} not acceptable",
                    encode_text([("AuthMethod", REJECT)]),
                )
            out.append(("AuthMethod", supported))
            if cfg is None:
                self._auth = _Auth.DONE
                if keys:
                    raise _Fail(LoginStatus.INITIATOR_ERROR, "CHAP keys with AuthMethod=None")
                return out
            self._chap = ChapTarget(
                cfg.lookup_secret,
                algorithms=cfg.algorithms,
                mutual=cfg.mutual,
                require_mutual=cfg.require_mutual,
                challenge_length=cfg.challenge_length,
                random_bytes=self._policy.random_bytes,
            )
            self._auth = _Auth.AWAIT_CHAP_A
            if not keys:
                return out
        if self._auth is _Auth.DONE:
            if keys:
                raise _Fail(LoginStatus.INITIATOR_ERROR, "security key after authentication")
            return out
        chap = self._chap
        assert chap is not None
        try:
            if self._auth is _Auth.AWAIT_CHAP_A:
                if set(keys) - {"CHAP_A"}:
                    raise _Fail(LoginStatus.INITIATOR_ERROR, "unexpected CHAP keys before CHAP_A")
                if "CHAP_A" not in keys:
                    return out  # the initiator has not proposed algorithms yet
                out += chap.select_algorithm(keys["CHAP_A"])
                self._auth = _Auth.AWAIT_CHAP_R
                return out
            if "CHAP_A" in keys or "AuthMethod" in keys:
                raise _Fail(LoginStatus.INITIATOR_ERROR, "CHAP_A/AuthMethod repeated")
            if "CHAP_R" not in keys:
                raise _Fail(LoginStatus.MISSING_PARAMETER, "CHAP_R missing")
            out += chap.verify(keys)
        except ChapError as exc:
            raise _Fail(LoginStatus(exc.status), str(exc)) from None
        self._auth_user = chap.user
        self._auth = _Auth.DONE
        return out


# ---------------------------------------------------------------- initiator


class LoginRejected(Exception):
    """The target answered with a non-zero status (RFC 7143 11.13.5)."""

    def __init__(self, status_class: int, status_detail: int, target_address: str | None = None) -> None:
        self.status_class = status_class
        self.status_detail = status_detail
        self.target_address = target_address
        try:
            name = LoginStatus((status_class << 8) | status_detail).name
        except ValueError:
            name = "UNKNOWN"
        super().__init__(f"login rejected: 0x{status_class:02x}{status_detail:02x} {name}")

    @property
    def status(self) -> int:
        return (self.status_class << 8) | self.status_detail


class LoginProtocolError(Exception):
    """The target broke the login protocol (or failed mutual authentication): drop the connection."""


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """One Login Request to send (C=0; the integrator splits long texts)."""

    text: bytes
    csg: int
    nsg: int
    transit: bool


@dataclass(frozen=True, slots=True)
class InitiatorLoginResult:
    session_type: str
    target_name: str | None
    params: Negotiated
    target_portal_group_tag: int | None
    target_alias: str | None
    tsih: int


class InitiatorLogin:
    """Initiator-side login state machine: ``start()``, then ``receive(...)`` per Login Response until
    it returns None (logged in; see :attr:`result`)."""

    def __init__(
        self,
        initiator_name: str,
        target_name: str | None,
        *,
        initiator_alias: str | None = None,
        chap: ChapCredentials | None = None,
        mutual: ChapCredentials | None = None,
        chap_algorithms: Sequence[int] = DEFAULT_ALGORITHMS,
        policy: NegotiationPolicy | None = None,
        leading: bool = True,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if mutual is not None and chap is None:
            raise ValueError("mutual CHAP needs initiator CHAP credentials")
        self._initiator_name = initiator_name
        self._target_name = target_name
        self._alias = initiator_alias
        self._session_type = "Normal" if target_name is not None else "Discovery"
        self._chap = (
            ChapInitiator(chap, mutual=mutual, algorithms=chap_algorithms, random_bytes=random_bytes)
            if chap is not None
            else None
        )
        self._negotiator = Negotiator(
            Role.INITIATOR, policy or NegotiationPolicy(), discovery=target_name is None, leading=leading
        )
        self._stage = Stage.SECURITY
        self._auth = _Auth.START
        self._acc = TextAccumulator()
        self._asked: int = Stage.OPERATIONAL
        self._exchanges = 0
        self._tpgt: int | None = None
        self._target_alias: str | None = None
        self.result: InitiatorLoginResult | None = None

    def _offered_methods(self) -> str:
        """CHAP credentials without mutual CHAP offer ``CHAP,None`` and follow the target's choice (as
        libiscsi does); with mutual CHAP the target must authenticate itself, so only ``CHAP``."""
        if self._chap is None:
            return "None"
        return "CHAP" if self._chap.mutual else "CHAP,None"

    def start(self) -> LoginRequest:
        pairs = [("InitiatorName", self._initiator_name)]
        if self._alias:
            pairs.append(("InitiatorAlias", self._alias))
        pairs.append(("SessionType", self._session_type))
        if self._target_name is not None:
            pairs.append(("TargetName", self._target_name))
        pairs.append(("AuthMethod", self._offered_methods()))
        self._asked = Stage.OPERATIONAL
        return LoginRequest(encode_text(pairs), Stage.SECURITY, Stage.OPERATIONAL, True)

    def receive(
        self,
        csg: int,
        nsg: int,
        transit: bool,
        cont: bool,
        status_class: int,
        status_detail: int,
        text_bytes: bytes,
        tsih: int = 0,
    ) -> LoginRequest | None:
        """Consume one Login Response. Returns the next request, or None once in full feature phase.
        Raises LoginRejected (non-zero status) or LoginProtocolError."""
        if self.result is not None:
            raise LoginProtocolError("response after login completed")
        self._exchanges += 1
        if self._exchanges > MAX_LOGIN_EXCHANGES:
            raise LoginProtocolError("too many login exchanges")
        if status_class != 0:
            address = None
            try:
                for key, value in TextAccumulator().feed(text_bytes, final=True) or []:
                    if key == "TargetAddress":
                        address = value
            except TextError:
                pass
            raise LoginRejected(status_class, status_detail, address)
        if csg != self._stage:
            raise LoginProtocolError(f"response CSG {csg}, expected {int(self._stage)}")
        if transit and cont:
            raise LoginProtocolError("T and C both set")
        try:
            pairs = self._acc.feed(text_bytes, final=not cont)
        except TextError as exc:
            raise LoginProtocolError(f"malformed text: {exc}") from None
        if pairs is None:
            return LoginRequest(b"", self._stage, 0, False)  # fetch the rest of the continued text
        self._acc.reset()
        if transit and (
            nsg not in (Stage.OPERATIONAL, Stage.FULL_FEATURE) or nsg <= csg or nsg > self._asked
        ):
            raise LoginProtocolError(f"invalid transition {csg}->{nsg}")
        try:
            return self._process(pairs, nsg if transit else None, tsih)
        except (NegotiationError, ChapError) as exc:
            raise LoginProtocolError(str(exc)) from None

    def _process(
        self, pairs: list[tuple[str, str]], transit_to: int | None, tsih: int
    ) -> LoginRequest | None:
        security: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in _SECURITY_KEYS:
                if key in security:
                    raise LoginProtocolError(f"key {key} repeated")
                security[key] = value
            elif key == "TargetPortalGroupTag":
                try:
                    self._tpgt = decode_number(value, maximum=65535)
                except TextError:
                    raise LoginProtocolError("bad TargetPortalGroupTag") from None
            elif key == "TargetAlias":
                self._target_alias = None if value == NO_VALUE else value
            elif key in LOGIN_DECLARATIVE_KEYS:
                continue  # a target echoing our declarations: harmless
            else:
                # Operational keys arriving early in the security stage are tolerated and negotiated.
                rest.append((key, value))
        out: list[tuple[str, str]] = []
        if self._stage is Stage.SECURITY:
            out += self._security(security, transit_to)
        elif security:
            raise LoginProtocolError("security key in operational stage")
        out += self._negotiator.receive(rest, Stage.OPERATIONAL)

        if transit_to is not None:
            if self._stage is Stage.SECURITY and self._auth is not _Auth.DONE:
                raise LoginProtocolError("target left security stage before authentication completed")
            self._stage = Stage(transit_to)
            if transit_to == Stage.FULL_FEATURE:
                self.result = InitiatorLoginResult(
                    session_type=self._session_type,
                    target_name=self._target_name,
                    params=self._negotiator.negotiated(),
                    target_portal_group_tag=self._tpgt,
                    target_alias=self._target_alias,
                    tsih=tsih,
                )
                return None
            out += self._negotiator.offers(Stage.OPERATIONAL)
        if self._stage is Stage.SECURITY:
            self._asked = Stage.OPERATIONAL
            return LoginRequest(encode_text(out), Stage.SECURITY, Stage.OPERATIONAL, True)
        self._asked = Stage.FULL_FEATURE
        return LoginRequest(encode_text(out), Stage.OPERATIONAL, Stage.FULL_FEATURE, True)

    def _security(self, keys: dict[str, str], transit_to: int | None) -> list[tuple[str, str]]:
        chap = self._chap
        if self._auth is _Auth.START:
            method = keys.pop("AuthMethod", None)
            offered = self._offered_methods()
            if method is None:
                if chap is None and transit_to is not None:
                    self._auth = _Auth.DONE  # target accepted the default AuthMethod=None
                    return []
                raise LoginProtocolError("target did not answer AuthMethod")
            if method not in offered.split(","):
                raise LoginProtocolError(f"target answered AuthMethod={method[:32]}, offered {offered}")
            if method == "None":
                self._auth = _Auth.DONE
                return []
            assert chap is not None
            self._auth = _Auth.AWAIT_CHAP_A
            return chap.offer()
        if chap is None or self._auth is _Auth.DONE:
            if keys:
                raise LoginProtocolError("unexpected security keys")
            return []
        if self._auth is _Auth.AWAIT_CHAP_A:
            if "CHAP_C" not in keys:
                raise LoginProtocolError("target sent no CHAP challenge")
            out = chap.respond(keys)
            self._auth = _Auth.AWAIT_CHAP_R
            if not chap.mutual:
                self._auth = _Auth.DONE
            return out
        # AWAIT_CHAP_R: the target's mutual response
        chap.verify_target(keys)
        self._auth = _Auth.DONE
        return []


# Keep the key table referenced for readers: login-stage keys come from cistern.wire.keys.
assert all(k in KEYS for k in LOGIN_DECLARATIVE_KEYS | _SECURITY_KEYS)
