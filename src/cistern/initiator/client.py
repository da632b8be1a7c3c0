"""The public entry points: :func:`connect` (a logged-in :class:`IscsiSession`, an async context
manager in the asyncssh style) and :func:`discover` (SendTargets over a Discovery session, RFC 7143
appendix C)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from cistern.initiator.errors import IscsiError, LoginError
from cistern.initiator.login import login
from cistern.initiator.params import (
    DEFAULT_INITIATOR_NAME,
    ChapSecret,
    ReconnectPolicy,
    SessionConfig,
    TlsConfig,
)
from cistern.initiator.scsi_commands import ScsiCommands
from cistern.initiator.session import Session
from cistern.initiator.url import IscsiUrl, is_url, parse_portal, parse_url
from cistern.wire.negotiation import NegotiationPolicy


class IscsiSession(Session, ScsiCommands):
    """A logged-in session with the SCSI helpers.  ``lun`` is the URL's LUN, if one was given."""

    lun: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._block_sizes: dict[int, int] = {}

    async def __aenter__(self) -> IscsiSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.logout()


def _portal_of(where: str | tuple[str, int] | IscsiUrl) -> IscsiUrl:
    if isinstance(where, IscsiUrl):
        return where
    if isinstance(where, tuple):
        return IscsiUrl(where[0], int(where[1]))
    if is_url(where):
        return parse_url(where)
    host, port = parse_portal(where)
    return IscsiUrl(host, port)


def _chap(value: ChapSecret | tuple[str, str] | None) -> ChapSecret | None:
    if value is None or isinstance(value, ChapSecret):
        return value
    return ChapSecret(*value)


def make_config(
    where: str | tuple[str, int] | IscsiUrl,
    *,
    target: str | None = None,
    discovery: bool = False,
    initiator_name: str = DEFAULT_INITIATOR_NAME,
    chap: ChapSecret | tuple[str, str] | None = None,
    mutual_chap: ChapSecret | tuple[str, str] | None = None,
    header_digest: bool | None = None,
    data_digest: bool | None = None,
    policy: NegotiationPolicy | None = None,
    reconnect: ReconnectPolicy | None = None,
    tls: TlsConfig | None = None,
    error_recovery_level: int | None = None,
    **options: Any,
) -> tuple[SessionConfig, IscsiUrl]:
    url = _portal_of(where)
    if tls is None and url.tls:
        tls = TlsConfig()  # iscsis:// without settings: verify against the system's trust store
    target_name = None if discovery else (target or url.target)
    if not discovery and not target_name:
        raise ValueError("no target name: give target= or an iscsi://host/IQN URL")
    policy = policy or NegotiationPolicy()
    # MC/S and ERL: offer what was asked for (RFC 7143 13.2 MaxConnections, 13.20 ErrorRecoveryLevel)
    connections = int(options.get("connections", 1))
    if connections > policy.max_connections or error_recovery_level is not None:
        from dataclasses import replace as _replace

        policy = _replace(
            policy,
            max_connections=max(policy.max_connections, connections),
            error_recovery_level=(
                policy.error_recovery_level if error_recovery_level is None else error_recovery_level
            ),
        )
    digests: dict[str, tuple[str, ...]] = {}
    # True: require CRC32C; False: refuse; None: keep the policy (None only)
    for name, want in (("header_digest", header_digest), ("data_digest", data_digest)):
        if want is not None:
            digests[name] = ("CRC32C",) if want else ("None",)
    if digests:
        from dataclasses import replace

        policy = replace(policy, **digests)  # type: ignore[arg-type]
    config = SessionConfig(
        host=url.host,
        port=url.port,
        target_name=target_name,
        initiator_name=initiator_name,
        chap=_chap(chap) or url.chap,
        mutual_chap=_chap(mutual_chap),
        policy=policy,
        tls=tls,
        **options,
    )
    if reconnect is not None:
        config.reconnect = reconnect
    return config, url


async def connect(where: str | tuple[str, int] | IscsiUrl, **kwargs: Any) -> IscsiSession:
    """Log in to a target; ``where`` is an ``iscsi://`` URL or a ``(host, port)`` / ``"host:port"`` portal.

    Keyword arguments: ``target``, ``initiator_name``, ``chap=(user, secret)``, ``mutual_chap=(target
    user, target secret)``, ``header_digest``/``data_digest`` (True requires CRC32C), ``policy`` (a
    :class:`NegotiationPolicy`), ``reconnect`` (a :class:`ReconnectPolicy`), ``tls`` (a :class:`TlsConfig`:
    iSCSI inside TLS 1.3, also implied by an ``iscsis://`` URL) and any
    :class:`SessionConfig` field (``nop_interval``, ``nop_timeout``, ``login_timeout``, ``isid``...).
    """
    config, url = make_config(where, **kwargs)
    protocol, result = await login(config, 0)
    session = IscsiSession(config, login, protocol, result)
    session.lun = url.lun
    if config.connections > 1:
        allowed = result.negotiated.max_connections
        if allowed < config.connections:
            await session.logout()
            raise LoginError(
                f"{config.connections} connections requested, the target allows MaxConnections={allowed}"
            )
        try:
            await session.open_connections(config.connections)
        except BaseException:
            await session.close()
            raise
    return session


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    name: str
    portals: list[str] = field(default_factory=list)  # "host:port,tpgt"

    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for portal in self.portals:
            address = portal.rsplit(",", 1)[0]
            with contextlib.suppress(ValueError):
                out.append(parse_portal(address))
        return out


async def discover(where: str | tuple[str, int] | IscsiUrl, **kwargs: Any) -> list[DiscoveredTarget]:
    """SendTargets=All over a Discovery session; returns each target with its portals."""
    kwargs.pop("target", None)
    config, _ = make_config(where, discovery=True, **kwargs)
    config.nop_interval = 0
    protocol, result = await login(config, 0)
    session = IscsiSession(config, login, protocol, result)
    try:
        pairs = await session.text([("SendTargets", "All")])
    finally:
        await session.logout()
    return parse_send_targets(pairs)


def parse_send_targets(pairs: list[tuple[str, str]]) -> list[DiscoveredTarget]:
    targets: list[DiscoveredTarget] = []
    for key, value in pairs:
        if key == "TargetName":
            targets.append(DiscoveredTarget(value))
        elif key == "TargetAddress" and targets:
            targets[-1].portals.append(value)
    return targets


__all__ = [
    "DiscoveredTarget",
    "IscsiError",
    "IscsiSession",
    "LoginError",
    "TlsConfig",
    "connect",
    "discover",
    "make_config",
    "parse_send_targets",
]
