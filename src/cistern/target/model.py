"""Runtime model of what the target serves: targets, their portals, ACLs, CHAP credentials and LUNs.

Built from the declarative config (``cistern.config``) by :mod:`cistern.target.server`; kept separate from it
so the protocol code depends on a few plain objects rather than on the config schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cistern.scsi.server import DeviceServer


def portal_text(portal: tuple[str, int]) -> str:
    """``HOST:PORT`` (``[HOST]:PORT`` for IPv6) of a listening portal, as metrics and the admin API name it."""
    host, port = portal[0], portal[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ChapSecret:
    username: str
    secret: str


@dataclass(slots=True)
class TargetLimits:
    """What the target accepts and offers in operational negotiation (RFC 7143 section 13)."""

    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 262144
    max_outstanding_r2t: int = 1
    initial_r2t: bool = False
    immediate_data: bool = True
    header_digests: tuple[str, ...] = ("CRC32C", "None")
    data_digests: tuple[str, ...] = ("CRC32C", "None")
    default_time2wait: int = 2
    default_time2retain: int = 0
    max_connections: int = 8  # connections one session may have (MC/S, RFC 7143 13.2)
    error_recovery_level: int = 0  # the highest ErrorRecoveryLevel accepted (0, 1 or 2, RFC 7143 13.20)
    queue_depth: int = 128  # commands the CmdSN window admits per session
    max_write_buffer: int = 64 * 1024 * 1024  # largest EDTL a single write may have
    max_session_write_buffer: int = 256 * 1024 * 1024  # write buffers held at once by one session


@dataclass(slots=True)
class PortalGroupSpec:
    """One target portal group (RFC 7143 4.4.4.1): a SCSI target port, tag ``tag``.

    ``listen`` is what the config asked to listen on (matched against a connection's portal);
    ``portals`` is what SendTargets advertises (a port 0 replaced by the port really bound).
    ``relative_port`` is the RELATIVE TARGET PORT IDENTIFIER of the port (SPC-4 7.8.6.3).
    """

    tag: int
    listen: list[tuple[str, int]]
    portals: list[tuple[str, int]] = field(default_factory=list)
    relative_port: int = 0
    #: iSCSI inside TLS on these portals
    tls: bool = False

    def __post_init__(self) -> None:
        if not self.portals:
            self.portals = list(self.listen)
        if not self.relative_port:
            self.relative_port = self.tag


@dataclass(slots=True)
class TargetSpec:
    name: str
    device: DeviceServer
    alias: str | None = None
    tpgt: int = 1
    portals: list[tuple[str, int]] = field(default_factory=list)
    #: the target's portal groups; empty: one group made of ``portals`` with tag ``tpgt``
    portal_groups: list[PortalGroupSpec] = field(default_factory=list)
    acl: frozenset[str] | None = None  # None: open to every initiator name (explicit open mode)
    chap: ChapSecret | None = None  # the initiator must authenticate with this
    mutual_chap: ChapSecret | None = None  # the target answers the initiator's challenge with this
    chap_algorithms: tuple[str, ...] = ("SHA3-256", "SHA-256", "SHA1", "MD5")
    limits: TargetLimits = field(default_factory=TargetLimits)
    #: client-certificate names admitted over TLS (empty: any certificate the CA signed)
    tls_clients: frozenset[str] = frozenset()

    def admits(self, initiator_name: str) -> bool:
        return self.acl is None or initiator_name in self.acl

    def __post_init__(self) -> None:
        if not self.portal_groups:
            self.portal_groups = [PortalGroupSpec(self.tpgt, list(self.portals))]
        else:
            self.portals = [p for group in self.portal_groups for p in group.portals]
            self.tpgt = self.portal_groups[0].tag

    def group_for(self, portal: tuple[str, int] | None) -> PortalGroupSpec:
        """The portal group a connection on ``portal`` belongs to (the first group when none matches)."""
        for group in self.portal_groups:
            if portal in group.listen or portal in group.portals:
                return group
        return self.portal_groups[0]

    def serves(self, portal: tuple[str, int]) -> bool:
        return any(portal in g.listen or portal in g.portals for g in self.portal_groups)
