"""Driving the sans-I/O :class:`~cistern.wire.login.InitiatorLogin` over a TCP connection (RFC 7143 6.3,
11.12, 11.13): Login Request/Response PDUs, text continuation with the C bit, status mapped to errors.

:func:`login` is the :data:`~cistern.initiator.session.LoginFn` the session uses both for the first login
and for reinstatement after a lost connection (same ISID, TSIH 0).
"""

from __future__ import annotations

import asyncio

from cistern.initiator.connection import IscsiProtocol, open_connection
from cistern.initiator.errors import AuthenticationError, ConnectionLost, LoginError, ProtocolError
from cistern.initiator.params import LoginResult, SessionConfig
from cistern.wire.chap import ChapAlgorithm, ChapCredentials
from cistern.wire.initiator_connection import InitiatorConnection, TimerEvent
from cistern.wire.login import InitiatorLogin, LoginProtocolError, LoginRejected, LoginStatus
from cistern.wire.login import LoginRequest as WireLoginRequest
from cistern.wire.pdu import LoginRequest, LoginResponse, login_flags
from cistern.wire.serial import sn_add
from cistern.wire.text import split_text

#: The login runs before MaxRecvDataSegmentLength is declared: 8192 is the default (RFC 7143 13.12).
LOGIN_SEGMENT = 8192
MD5 = int(ChapAlgorithm.MD5)


def _credentials(secret: object | None) -> ChapCredentials | None:
    if secret is None:
        return None
    user, value = secret.user, secret.secret  # type: ignore[attr-defined]
    return ChapCredentials(user, value.encode() if isinstance(value, str) else value)


def _rejected(exc: LoginRejected, config: SessionConfig) -> LoginError:
    status = exc.status
    if status == LoginStatus.AUTHENTICATION_FAILURE:
        who = f" as {config.chap.user!r}" if config.chap else " (no CHAP credentials given)"
        return AuthenticationError(
            f"authentication failed{who} at {config.host}:{config.port}", exc.status_class, exc.status_detail
        )
    if status == LoginStatus.AUTHORIZATION_FAILURE:
        return AuthenticationError(
            f"initiator {config.initiator_name} is not authorized for {config.target_name}",
            exc.status_class,
            exc.status_detail,
        )
    if status == LoginStatus.NOT_FOUND:
        return LoginError(f"target {config.target_name} not found at {config.host}:{config.port}", 2, 3)
    message = str(exc)
    if exc.target_address:
        message += f" (TargetAddress={exc.target_address})"
    return LoginError(message, exc.status_class, exc.status_detail)


async def login(
    config: SessionConfig, tsih: int = 0, cid: int = 0, cmdsn: int = 0
) -> tuple[IscsiProtocol, LoginResult]:
    """Open a connection to the portal and log in; the protocol is returned ready for full feature phase
    (reading paused until the session installs its handlers).

    ``tsih`` 0 logs in a new session (or reinstates one with the same ISID); a non-zero ``tsih`` adds
    connection ``cid`` to that session (MC/S, RFC 7143 6.3.4), or reinstates connection ``cid`` if the
    target still has one with that CID (6.3.4 connection reinstatement, ERL 2).
    """
    algorithms = tuple(config.chap_algorithms)
    try:
        return await _attempt(config, tsih, algorithms, cid, cmdsn)
    except (LoginError, ProtocolError, ConnectionLost) as exc:
        # CHAP_A fallback: some targets accept CHAP_A=7 (SHA-256) and then cannot take its 32-byte
        # CHAP_R (tgt 1.0.85 answers 0x0200).  Retry once offering MD5 only, as libiscsi does.
        if config.chap is None or algorithms == (MD5,) or isinstance(exc, AuthenticationError):
            raise
        if isinstance(exc, LoginError) and exc.status_class == 3:  # target busy/out of resources: no retry
            raise
        return await _attempt(config, tsih, (MD5,), cid, cmdsn)


async def _attempt(
    config: SessionConfig, tsih: int, algorithms: tuple[int, ...], cid: int = 0, cmdsn: int = 0
) -> tuple[IscsiProtocol, LoginResult]:
    protocol = await open_connection(
        config.host, config.port, config.connect_timeout, config.tls, config.target_name or config.host
    )
    try:
        return protocol, await _exchange(protocol, config, tsih, algorithms, cid, cmdsn)
    except BaseException:
        protocol.abort()
        raise


async def _exchange(
    protocol: IscsiProtocol,
    config: SessionConfig,
    tsih: int,
    algorithms: tuple[int, ...],
    cid: int = 0,
    cmdsn: int = 0,
) -> LoginResult:
    try:
        machine = InitiatorLogin(
            config.initiator_name,
            config.target_name,
            initiator_alias=config.initiator_alias,
            chap=_credentials(config.chap),
            mutual=_credentials(config.mutual_chap),
            chap_algorithms=algorithms,
            policy=config.policy,
            leading=tsih == 0,
        )
    except ValueError as exc:
        raise LoginError(f"bad login settings: {exc}") from exc
    expstatsn = 0
    # the whole login must end within login_timeout (the connection machine's login timer)
    loop = asyncio.get_running_loop()
    timers = InitiatorConnection(cid, loop.time(), login_timeout=config.login_timeout)
    request: WireLoginRequest | None = machine.start()
    response: LoginResponse | None = None
    while request is not None:
        segments = split_text(request.text, LOGIN_SEGMENT)
        for i, segment in enumerate(segments):
            last = i == len(segments) - 1
            transit = request.transit and last
            flags = login_flags(transit, not last, request.csg, request.nsg if transit else 0)
            protocol.send(
                LoginRequest(
                    flags, 0, 0, config.isid, tsih, 0, cid, cmdsn, expstatsn, immediate=True, data=segment
                )
            )
            if timers.handle_timer(loop.time()) is TimerEvent.LOGIN_TIMED_OUT:
                raise ConnectionLost(f"login did not complete within {config.login_timeout:g}s")
            frame = await protocol.next_login_frame(max(timers.login_deadline - loop.time(), 0.001))
            pdu = frame.pdu
            if not isinstance(pdu, LoginResponse):
                raise ProtocolError(
                    f"expected a Login Response, got {type(pdu).__name__ if pdu else frame.error}"
                )
            if pdu.version_active != 0 and pdu.status_class == 0:
                raise ProtocolError(f"target chose unsupported iSCSI version {pdu.version_active}")
            if pdu.status_class == 0 and pdu.isid != config.isid:
                raise ProtocolError("Login Response for another ISID")
            expstatsn = sn_add(pdu.statsn, 1)
            response = pdu
            if not last and (pdu.status_class != 0 or pdu.transit):
                break  # the target answered before the whole text arrived: let the machine judge it
        pdu = response
        assert pdu is not None
        try:
            request = machine.receive(
                pdu.csg,
                pdu.nsg,
                pdu.transit,
                pdu.cont,
                pdu.status_class,
                pdu.status_detail,
                bytes(pdu.data),
                pdu.tsih,
            )
        except LoginRejected as exc:
            raise _rejected(exc, config) from None
        except LoginProtocolError as exc:
            text = str(exc)
            if "mutual" in text or "CHAP" in text:
                raise AuthenticationError(f"CHAP with {config.host}:{config.port} failed: {text}") from None
            raise ProtocolError(f"login protocol error: {text}") from None
    result = machine.result
    assert result is not None and response is not None
    return LoginResult(
        negotiated=result.params,
        tsih=result.tsih,
        expstatsn=expstatsn,
        expcmdsn=response.expcmdsn,
        maxcmdsn=response.maxcmdsn,
        target_alias=result.target_alias,
        target_portal_group_tag=result.target_portal_group_tag,
    )
