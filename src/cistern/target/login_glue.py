"""Maps Login Request/Response PDUs onto the sans-I/O :class:`~cistern.wire.login.TargetLogin` (RFC 7143 6.3, 11.12-13).

Owns what the state machine cannot know: the server's targets and sessions (TSIH checks, session
reinstatement), StatSN/ExpCmdSN/MaxCmdSN of the responses, splitting a long response text over several
Login Responses with the C bit, and switching the connection to full feature phase.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cistern.target.model import ChapSecret, TargetLimits, TargetSpec, portal_text
from cistern.wire import pdu as P
from cistern.wire.chap import ChapAlgorithm, ChapCredentials
from cistern.wire.login import (
    ChapAuth,
    LoginOutcome,
    LoginStatus,
    LoginStep,
    TargetInfo,
    TargetLogin,
    TargetPolicy,
)
from cistern.wire.negotiation import NegotiationPolicy
from cistern.wire.params import Negotiated
from cistern.wire.serial import sn_add

if TYPE_CHECKING:
    from cistern.target.connection import Connection
    from cistern.target.server import TargetServer
    from cistern.target.session import Session

log = logging.getLogger("cistern.target")

LOGIN_MAX_SEGMENT = 8192  # MaxRecvDataSegmentLength in force during login (RFC 7143 13.12)
_LOGGED_KEYS = (b"InitiatorName", b"TargetName", b"SessionType", b"CHAP_N")

_ALGORITHMS = {
    "MD5": ChapAlgorithm.MD5,
    "SHA1": ChapAlgorithm.SHA1,
    "SHA-1": ChapAlgorithm.SHA1,
    "SHA-256": ChapAlgorithm.SHA256,
    "SHA256": ChapAlgorithm.SHA256,
    "SHA3-256": ChapAlgorithm.SHA3_256,
}


def negotiation_policy(limits: TargetLimits) -> NegotiationPolicy:
    return NegotiationPolicy(
        header_digest=tuple(limits.header_digests),
        data_digest=tuple(limits.data_digests),
        max_connections=limits.max_connections,
        initial_r2t=limits.initial_r2t,
        immediate_data=limits.immediate_data,
        max_recv_data_segment_length=limits.max_recv_data_segment_length,
        max_burst_length=limits.max_burst_length,
        first_burst_length=min(limits.first_burst_length, limits.max_burst_length),
        default_time2wait=limits.default_time2wait,
        default_time2retain=limits.default_time2retain,
        max_outstanding_r2t=limits.max_outstanding_r2t,
        data_pdu_in_order=True,
        data_sequence_in_order=True,
        error_recovery_level=limits.error_recovery_level,
    )


def chap_auth(
    chap: ChapSecret,
    mutual: ChapSecret | None,
    algorithms: tuple[str, ...],
    guard: Callable[[str], bool] | None = None,
) -> ChapAuth:
    """CHAP settings for the login machine.  Mutual CHAP configured means mutual CHAP required (a one-way
    login fails authentication).  ``guard(user)`` is asked first for each CHAP_N: False answers as for an
    unknown user (a locked-out user fails whatever secret it gives)."""
    user, secret = chap.username, chap.secret.encode()

    def lookup(name: str) -> bytes | None:
        if guard is not None and not guard(name):
            return None
        return secret if name == user else None

    return ChapAuth(
        lookup_secret=lookup,
        mutual=ChapCredentials(mutual.username, mutual.secret.encode()) if mutual else None,
        require_mutual=mutual is not None,
        algorithms=tuple(_ALGORITHMS[a] for a in algorithms if a in _ALGORITHMS),
    )


def target_info(
    target: TargetSpec, portal_group_tag: int | None = None, guard: Callable[[str], bool] | None = None
) -> TargetInfo:
    auth = chap_auth(target.chap, target.mutual_chap, target.chap_algorithms, guard) if target.chap else None
    return TargetInfo(
        name=target.name,
        allowed_initiators=target.acl,
        auth=auth,
        limits=negotiation_policy(target.limits),
        alias=target.alias,
        portal_group_tag=portal_group_tag,
    )


class LoginDriver:
    """The login phase of one connection."""

    def __init__(self, server: TargetServer, conn: Connection) -> None:
        self.server = server
        self.conn = conn
        # TargetPortGroupTag: the tag of the portal group this connection's portal belongs to
        portal_targets = [t for t in server.targets.values() if t.serves(conn.portal) or not t.portals]
        tpgt = portal_targets[0].group_for(conn.portal).tag if portal_targets else 1

        def lookup(name: str) -> TargetInfo | None:
            target = server.targets.get(name)
            if target is None:
                return None
            # the tag of this target's portal group on this portal (targets sharing a portal may differ)
            return target_info(target, target.group_for(conn.portal).tag, self._chap_guard)

        discovery_auth = (
            chap_auth(
                server.discovery_chap,
                server.discovery_mutual_chap,
                ("SHA3-256", "SHA-256", "SHA1", "MD5"),
                self._chap_guard,
            )
            if (server.discovery_chap)
            else None
        )
        self.chap_user: str | None = None  # the CHAP_N of this login, for lockouts (never the secret)
        self.login = TargetLogin(
            TargetPolicy(
                lookup_target=lookup,
                portal_group_tag=tpgt,
                limits=negotiation_policy(TargetLimits()),
                discovery_auth=discovery_auth,
                authorize_initiator=lambda initiator, target: server.authorize_initiator(
                    conn, initiator, target
                ),
            )
        )
        self._names: dict[str, str] = {}  # InitiatorName, TargetName, SessionType, CHAP_N as sent (for logs)
        self._pending_text = b""  # rest of a response text longer than one PDU
        self._pending_step: LoginStep | None = None
        self._first = True

    def _chap_guard(self, user: str) -> bool:
        self.chap_user = user
        return not self.server.admission.locked("user", user, time.monotonic())

    def _remember_names(self, data: bytes | bytearray | memoryview) -> None:
        """Keep the keys an administrator needs in a log line (each cut to 223 characters)."""
        if len(self._names) >= len(_LOGGED_KEYS):
            return
        for item in bytes(data[:LOGIN_MAX_SEGMENT]).split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep and key in _LOGGED_KEYS:
                self._names.setdefault(key.decode(), value[:223].decode("utf-8", "replace"))

    def describe_peer(self) -> str:
        """``initiator X from HOST:PORT to target Y [as CHAP user Z]`` for log lines."""
        names = self._names
        target = names.get("TargetName") or (
            "discovery" if names.get("SessionType") == "Discovery" else "no target named"
        )
        text = (
            f"initiator {names.get('InitiatorName', '(no InitiatorName)')} from {self.conn.peer} to {target}"
        )
        if "CHAP_N" in names:
            text += f" as CHAP user {names['CHAP_N']!r}"
        return text

    def receive(self, pdu: P.LoginRequest) -> None:
        conn = self.conn
        if pdu.data:
            self._remember_names(pdu.data)
        if self._first:
            self._first = False
            conn.statsn = pdu.expstatsn  # the initiator's idea of the starting StatSN is as good as any
            if pdu.tsih != 0:
                # adding a connection to an existing session (MC/S, RFC 7143 6.3.1, 6.3.4)
                status = self._join_status(pdu)
                if status is not LoginStatus.SUCCESS:
                    self._respond(pdu, LoginStep(b"", pdu.csg, 0, False, status, failed=True), b"")
                    return
        if self._pending_text:
            if pdu.data:
                self._respond(
                    pdu, LoginStep(b"", pdu.csg, 0, False, LoginStatus.INITIATOR_ERROR, failed=True), b""
                )
                return
            step = self._pending_step
            assert step is not None
            self._send_piece(pdu, step)
            return
        step = self.login.receive(
            pdu.csg,
            pdu.nsg,
            pdu.transit,
            pdu.cont,
            int.from_bytes(pdu.isid, "big"),
            pdu.tsih,
            pdu.cid,
            pdu.cmdsn,
            bytes(pdu.data),
            version_max=pdu.version_max,
            version_min=pdu.version_min,
        )
        self._pending_text = step.text
        self._pending_step = step
        self._send_piece(pdu, step)

    def _join_status(self, pdu: P.LoginRequest) -> LoginStatus:
        """May this login (TSIH != 0) add connection CID to the session it names?  SUCCESS or why not."""
        session = self.server.sessions.get(pdu.tsih)
        if session is None or session.closed or session.isid != bytes(pdu.isid):
            return LoginStatus.SESSION_DOES_NOT_EXIST
        if session.discovery:
            return LoginStatus.CANT_INCLUDE_IN_SESSION
        # a CID already in the session is a connection reinstatement (RFC 7143 6.3.4): it does not count
        if pdu.cid not in session.connections and len(session.connections) >= session.params.max_connections:
            return LoginStatus.TOO_MANY_CONNECTIONS
        return LoginStatus.SUCCESS

    def _joined_session(self, pdu: P.LoginRequest, outcome: LoginOutcome) -> Session | LoginStatus:
        """The session a completed non-leading login joins, after the checks that need the login keys:
        same initiator, same target, a portal of the same portal group (RFC 7143 4.4.4.1, 6.3.1)."""
        status = self._join_status(pdu)
        session = self.server.sessions.get(pdu.tsih)
        if status is not LoginStatus.SUCCESS or session is None:
            return status
        target = session.target
        if (
            outcome.initiator_name != session.initiator_name
            or target is None
            or outcome.target_name != target.name
            or session.nexus is None
            or target.group_for(self.conn.portal).tag != session.nexus.tpgt
        ):
            return LoginStatus.CANT_INCLUDE_IN_SESSION
        return session

    def _send_piece(self, pdu: P.LoginRequest, step: LoginStep) -> None:
        text = self._pending_text
        if len(text) > LOGIN_MAX_SEGMENT and not step.failed:
            # RFC 7143 6.3: a long response goes in pieces with C=1 and T=0; the initiator asks for more
            cut = text.rfind(b"\0", 0, LOGIN_MAX_SEGMENT) + 1 or LOGIN_MAX_SEGMENT
            self._pending_text = text[cut:]
            piece = LoginStep(text[:cut], step.csg, 0, False)
            self._respond(pdu, piece, text[:cut], cont=True)
            return
        self._pending_text = b""
        self._pending_step = None
        self._respond(pdu, step, text)

    def _respond(self, pdu: P.LoginRequest, step: LoginStep, text: bytes, cont: bool = False) -> None:
        conn = self.conn
        session = None
        tsih = 0
        params = None
        expcmdsn, maxcmdsn = pdu.cmdsn, pdu.cmdsn
        if step.done is not None and not step.failed:
            outcome = step.done
            if pdu.tsih != 0:
                joined = self._joined_session(pdu, outcome)
                if isinstance(joined, LoginStatus):
                    step = LoginStep(
                        b"", pdu.csg, 0, False, joined, failed=True, reason="cannot join session"
                    )
                    text = b""
                else:
                    session = joined
                    # session-wide keys are the session's; the connection's own come from this login
                    params = Negotiated(session.params.session, outcome.params.connection)
                    expcmdsn, maxcmdsn = session.expcmdsn, session.maxcmdsn
            else:
                target = self.server.targets.get(outcome.target_name) if outcome.target_name else None
                refusal = self.server.session_refusal(outcome.initiator_name, pdu.isid, target)
                if refusal is None:
                    try:
                        session = self.server.new_session(
                            outcome.initiator_name,
                            pdu.isid,
                            target,
                            outcome.params,
                            pdu.cmdsn,
                            portal=conn.portal,
                        )
                        params = outcome.params
                        maxcmdsn = sn_add(pdu.cmdsn, session.queue_depth - 1)
                    except RuntimeError as exc:  # no free TSIH
                        refusal = str(exc)
                if refusal is not None:
                    step = LoginStep(
                        b"", step.csg, 0, False, LoginStatus.OUT_OF_RESOURCES, failed=True, reason=refusal
                    )
                    text = b""
            if session is not None:
                tsih = session.tsih
        elif step.failed and step.status == LoginStatus.AUTHENTICATION_FAILURE:
            self.server.auth_failed(conn, self.chap_user)
        rsp = P.LoginResponse(
            flags=P.login_flags(step.transit and not cont, cont, step.csg, step.nsg if step.transit else 0),
            version_max=0,
            version_active=0,
            isid=pdu.isid,
            tsih=tsih,
            itt=pdu.itt,
            statsn=conn.statsn,
            expcmdsn=expcmdsn,
            maxcmdsn=maxcmdsn,
            status_class=step.status_class,
            status_detail=step.status_detail,
            data=text,
        )
        if step.failed or step.done is not None:
            conn.statsn = sn_add(conn.statsn, 1)
        conn.send(rsp)
        if step.failed:
            reason = step.status.name.lower().replace("_", " ")
            log.warning(
                "login refused: %s: status 0x%04x (%s): %s",
                self.describe_peer(),
                int(step.status),
                reason,
                step.reason or "no detail",
                extra={"rate_key": conn.peer.rsplit(":", 1)[0], "peer": conn.peer},
            )
            self.server.monitor.login(
                self.login.target_name or "",
                portal_text(conn.portal),
                step.status.name.lower(),
                f"{conn.peer}: login refused ({reason}): {step.reason or 'no detail'}",
            )
            conn.close()
            return
        if session is not None:
            p = session.params
            log.info(
                "%s: %s logged in to %s (TSIH %d; HeaderDigest=%s DataDigest=%s MaxRecvDataSegmentLength=%d "
                "MaxBurstLength=%d FirstBurstLength=%d InitialR2T=%s ImmediateData=%s)",
                conn.peer,
                session.initiator_name,
                session.target.name if session.target else "discovery",
                session.tsih,
                "CRC32C" if p.header_digest else "None",
                "CRC32C" if p.data_digest else "None",
                p.max_recv_data_segment_length,
                p.max_burst_length,
                p.first_burst_length,
                "Yes" if p.initial_r2t else "No",
                "Yes" if p.immediate_data else "No",
                extra={"session": session.tsih, "peer": conn.peer},
            )
            self.server.monitor.login(
                session.target.name if session.target else "",
                portal_text(conn.portal),
                "ok",
                f"{conn.peer}: {session.initiator_name} logged in to "
                f"{session.target.name if session.target else 'discovery'} (TSIH {session.tsih})",
            )
            # joins the session's connection set; a connection with the same CID is reinstated (RFC 7143 6.3.4)
            assert params is not None
            conn.enter_full_feature(session, pdu.cid, params)
