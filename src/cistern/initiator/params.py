"""What an initiator session needs to log in and to stay up: target, identity, credentials, timers,
and the reconnect policy (RFC 7143 sections 6, 7.1.4 Time2Wait, 6.3.5 session reinstatement)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cistern.wire.chap import DEFAULT_ALGORITHMS
from cistern.wire.negotiation import Negotiated, NegotiationPolicy

DEFAULT_INITIATOR_NAME = "iqn.2024-01.org.cistern:initiator"
DEFAULT_PORT = 3260


@dataclass(frozen=True, slots=True)
class ChapSecret:
    """CHAP credentials: ``user`` is sent as CHAP_N, ``secret`` is the shared secret."""

    user: str
    secret: str


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a session recovers from a lost connection (session reinstatement with the same ISID).

    ``max_attempts`` logins are tried, waiting ``initial_delay`` then multiplying by ``backoff`` up to
    ``max_delay``; 0 disables reconnecting (outstanding commands then fail with ConnectionLost).
    A command is re-issued at most ``max_reissue`` times before it fails with SessionFailed.
    """

    max_attempts: int = 8
    initial_delay: float = 0.2
    backoff: float = 2.0
    max_delay: float = 5.0
    max_reissue: int = 3

    def delays(self) -> list[float]:
        out, delay = [], self.initial_delay
        for _ in range(self.max_attempts):
            out.append(delay)
            delay = min(self.max_delay, delay * self.backoff)
        return out


NO_RECONNECT = ReconnectPolicy(max_attempts=0)


def new_isid() -> bytes:
    """A random ISID of type 0x80 (RFC 7143 11.12.5: 'Random' qualifier)."""
    return bytes([0x80]) + os.urandom(5)


@dataclass(slots=True)
class SessionConfig:
    host: str
    port: int = DEFAULT_PORT
    target_name: str | None = None  # None: a Discovery session
    initiator_name: str = DEFAULT_INITIATOR_NAME
    initiator_alias: str | None = None
    chap: ChapSecret | None = None
    mutual_chap: ChapSecret | None = None  # the target's name and secret for mutual CHAP
    chap_algorithms: tuple[int, ...] = tuple(int(a) for a in DEFAULT_ALGORITHMS)  # CHAP_A offer
    policy: NegotiationPolicy = field(default_factory=NegotiationPolicy)
    isid: bytes = field(default_factory=new_isid)
    connect_timeout: float = 10.0
    login_timeout: float = 15.0
    nop_interval: float = 10.0  # send a NOP-Out after this long without traffic (0: never)
    nop_timeout: float = 10.0  # ...and drop the connection if no NOP-In comes back in this time
    logout_timeout: float = 5.0
    retry_unit_attention: int = 3
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    tls: TlsConfig | None = None  # None: plain TCP
    #: MC/S: connections opened at connect time (RFC 7143 4.2.2, MaxConnections must allow them)
    connections: int = 1
    #: how commands are spread over the connections: "round_robin" or "least_queue_depth"
    load_balance: str = "round_robin"
    #: ERL 2 connection recovery: "new_cid" (Logout reason 2 for the failed CID on a surviving
    #: connection, then a new CID; falls back to "reinstate" when no connection survives) or
    #: "reinstate" (log in again with the same CID, RFC 7143 6.3.4)
    connection_recovery: str = "new_cid"

    def __post_init__(self) -> None:
        if not 1 <= self.connections <= 65535:
            raise ValueError(f"connections={self.connections}: must be 1..65535")
        if self.load_balance not in ("round_robin", "least_queue_depth"):
            raise ValueError(f"load_balance={self.load_balance!r}: round_robin or least_queue_depth")
        if self.connection_recovery not in ("new_cid", "reinstate"):
            raise ValueError(f"connection_recovery={self.connection_recovery!r}: new_cid or reinstate")

    @property
    def discovery(self) -> bool:
        return self.target_name is None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """iSCSI inside TLS 1.3 (cistern TLS portals, or any target behind a TLS front such as socat).

    ``ca``: the CA file the target's certificate must chain to (None: the system's trust store);
    ``certificate``/``key``: our client certificate (mutual TLS); ``server_name``: the name the target's
    certificate must carry (subject CN or a subjectAltName).  By default that is the TargetName for a
    normal session and the host we connect to for a discovery session.
    """

    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(slots=True)
class LoginResult:
    """What a successful login gives the full feature phase."""

    negotiated: Negotiated
    tsih: int
    expstatsn: int
    expcmdsn: int
    maxcmdsn: int
    target_alias: str | None = None
    target_portal_group_tag: int | None = None
