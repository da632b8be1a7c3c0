"""The target server: portals, the session table, discovery answers, and clean shutdown.

``serve(config)`` is what ``cistern serve`` and ``cistern demo`` run: it opens the backing stores, builds one
SCSI device server per target, listens on every portal, and on cancellation asks every session to log out
(Async Message, RFC 7143 11.9.1 event 1), closes the connections, and flushes and closes the stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from cistern.config.limits import LimitsConfig, somaxconn
from cistern.config.lun import LunConfig
from cistern.config.model import Config
from cistern.config.tape import TAPE_BACKENDS
from cistern.config.target import TargetConfig
from cistern.config.tls import TlsConfig
from cistern.scsi.alua import TPGS_BY_NAME, Alua, TargetPortGroup, parse_state
from cistern.scsi.lu import LogicalUnit
from cistern.scsi.raid_lu import RaidDiskUnit
from cistern.scsi.server import DeviceServer
from cistern.scsi.task import ITNexus
from cistern.scsi.unit import LogicalUnitBase
from cistern.security.admission import Admission, AdmissionLimits
from cistern.security.tls import target_context
from cistern.storage.base import BackingStore
from cistern.storage.factory import open_store
from cistern.storage.raid import as_raid
from cistern.target.busypoll import PollGovernor, PollSet
from cistern.target.connection import Connection
from cistern.target.gate import GatedConnection, TlsListener
from cistern.target.model import ChapSecret, PortalGroupSpec, TargetLimits, TargetSpec
from cistern.target.monitor import Monitor
from cistern.target.raid_luns import build_ses_luns, watch_raid
from cistern.target.session import Session, SessionTable
from cistern.target.tape_luns import build_tape_luns, close_now
from cistern.wire.buffers import WRITE_BUFFERS
from cistern.wire.keys import KEYS
from cistern.wire.negotiation import Negotiated
from cistern.wire.target_session import TargetSession, WriteBudget
from cistern.wire.text import NO_VALUE, TextError, decode_number, encode_text

log = logging.getLogger("cistern.target")


def _adaptive(busy_poll_mode: str) -> bool:
    """True for "adaptive", False for "always"; ValueError for anything else."""
    if busy_poll_mode not in ("adaptive", "always"):
        raise ValueError(f"busy_poll_mode must be 'adaptive' or 'always', not {busy_poll_mode!r}")
    return busy_poll_mode == "adaptive"


class TargetServer:
    """Everything one cistern process serves."""

    def __init__(
        self,
        targets: list[TargetSpec],
        *,
        stores: list[BackingStore] | None = None,
        discovery_chap: ChapSecret | None = None,
        login_timeout: float = 15.0,
        nop_interval: float = 10.0,
        nop_timeout: float = 75.0,
        discovery_mutual_chap: ChapSecret | None = None,
        tls: TlsConfig | None = None,
        limits: AdmissionLimits | None = None,
        listen_backlog: int = 0,
        max_write_buffers: int = 1 << 30,
        busy_poll_us: int = 0,
        busy_poll_mode: str = "adaptive",
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.stores = stores or []
        self.discovery_chap = discovery_chap
        self.discovery_mutual_chap = discovery_mutual_chap
        self.tls = tls
        self.tls_context: ssl.SSLContext | None = None
        self.tls_handshake_timeout = tls.handshake_timeout if tls is not None else 10.0
        self.admission = Admission(limits)
        self.listen_backlog = listen_backlog or somaxconn()
        #: the soft RLIMIT_NOFILE in force (0: unknown) and the descriptors open before any connection;
        #: cistern.target.gate closes a new connection that would leave fewer than FD_RESERVE free
        self.nofile_limit = 0
        self.base_descriptors = 0
        self.background: set[asyncio.Task[None]] = set()
        #: data buffers held by all sessions together, and their cap (TASK SET FULL beyond it)
        self.write_budget = WriteBudget(max_write_buffers)
        self.login_timeout = login_timeout
        self.nop_interval = nop_interval
        self.nop_timeout = nop_timeout
        #: seconds a connection polls for its initiator's next command after its responses (0: never);
        #: the sockets that may be polled (cistern.target.busypoll)
        self.busy_poll = busy_poll_us / 1e6
        self.poll_set = PollSet()
        #: whether polling pays on this machine ("adaptive": measured) or is always done ("always")
        self.poll_governor = PollGovernor(adaptive=_adaptive(busy_poll_mode))
        self.sessions = SessionTable()
        self.connections: set[Connection] = set()
        self._listeners: dict[tuple[str, int], Any] = {}  # asyncio.Server or TlsListener
        self._log_context: SessionLogContext | None = None
        self.bound: list[tuple[str, int]] = []
        self.monitor = Monitor()
        for target in self.targets.values():
            self.install_abort_hook(target)

    # ---- lifecycle

    async def start(self) -> list[tuple[str, int]]:
        self.nofile_limit = raise_nofile_limit()
        self.base_descriptors = open_descriptors()
        if self.tls is not None:
            self.tls_context = self._build_tls_context()
        self._log_context = SessionLogContext(self)
        log.addFilter(self._log_context)
        for store in self.stores:  # stores with background work (RAID rebuild, scrub, monitoring)
            start_background = getattr(store, "start_background", None)
            if start_background is not None:
                start_background()
        await self.sync_listeners()
        return self.bound

    # ---- TLS and admission (see cistern.target.gate, cistern.security)

    def _build_tls_context(self) -> ssl.SSLContext:
        tls = self.tls
        assert tls is not None
        try:
            return target_context(
                tls.certificate,
                tls.key,
                tls.ca,
                tls.crl,
                require_client_certificate=tls.require_client_certificate,
            )
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"TLS certificate/key/CA/CRL cannot be loaded: {exc}") from None

    def reload_tls(self) -> bool:
        """Re-read the TLS certificate, key, CA and CRL (SIGHUP, admin reload).  New connections use them;
        running sessions are not touched.  On an unreadable file the old context stays and an ERROR line says
        why; returns whether the new files are in use."""
        if self.tls is None:
            return False
        try:
            self.tls_context = self._build_tls_context()
        except (OSError, ValueError) as exc:
            log.error("TLS reload failed, the previous certificate stays in use: %s", exc)
            return False
        log.warning("TLS certificate, key, CA and CRL reloaded from %s", self.tls.certificate)
        return True

    def portal_is_tls(self, portal: tuple[str, int]) -> bool:
        return any(
            group.tls for t in self.targets.values() for group in t.portal_groups if portal in group.listen
        )

    def log_refusal(self, peer: str, portal: tuple[str, int], reason: str) -> None:
        """One WARNING line per refused connection (rate-limited by the log handler, not here)."""
        host, port = portal
        log.warning("%s: connection on %s:%d refused: %s", peer, host, port, reason)

    def authorize_initiator(
        self, conn: Connection, initiator_name: str, target_name: str | None
    ) -> str | None:
        """On a TLS connection the InitiatorName must be a name of the client certificate (``bind_initiator_name``)
        and, for a target listing ``tls_clients``, the certificate must carry one of them."""
        names: frozenset[str] | None = getattr(conn, "tls_names", None)
        if names is None or self.tls is None:
            return None
        if self.tls.bind_initiator_name and initiator_name not in names:
            return f"InitiatorName {initiator_name} is not a name of the TLS client certificate"
        target = self.targets.get(target_name) if target_name is not None else None
        if target is not None and target.tls_clients and not (names & target.tls_clients):
            return f"the TLS client certificate is not in tls_clients of {target.name}"
        return None

    def session_refusal(self, initiator_name: str, isid: bytes, target: TargetSpec | None) -> str | None:
        """Why a new session would exceed a session cap (a reinstated session does not count twice)."""

        def same_nexus(s: Session) -> bool:
            return s.initiator_name == initiator_name and s.isid == isid and s.target is target

        return self.admission.session_refusal(
            initiator_name,
            target.name if target is not None else None,
            (
                (s.initiator_name, s.target.name if s.target else None)
                for s in self.sessions
                if not same_nexus(s)
            ),
        )

    def auth_failed(self, conn: Connection, user: str | None) -> None:
        address = conn.peer.rsplit(":", 1)[0].strip("[]")
        for kind in self.admission.auth_failed(time.monotonic(), address, user):
            who = f"source address {address}" if kind == "address" else f"CHAP user {user!r}"
            log.warning(
                "%s locked out for %gs after %d failed logins",
                who,
                self.admission.limits.lockout_seconds,
                self.admission.limits.auth_failures,
            )

    async def open_listeners(self, portals: Iterable[tuple[str, int]]) -> None:
        """Listen on each of ``portals`` not listened on yet (the others stay as they are).  OSError names the
        portal (``filename``) that cannot be bound; the listeners opened by this call are closed again."""
        loop = asyncio.get_running_loop()
        opened: list[tuple[str, int]] = []
        try:
            for host, port in [p for p in dict.fromkeys(portals) if p not in self._listeners]:
                try:
                    server: Any
                    if self.portal_is_tls((host, port)):
                        server = TlsListener.listen(self, (host, port), self.listen_backlog)
                    else:
                        server = await loop.create_server(
                            lambda h=host, p=port: GatedConnection(self, (h, p)),  # type: ignore[misc]
                            host,
                            port,
                            reuse_address=True,
                            backlog=self.listen_backlog,
                        )
                except OSError as exc:
                    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                    hint = ""
                    if exc.errno == errno.EADDRINUSE:
                        hint = (
                            " (another cistern or iSCSI target, such as tgtd or LIO, already listens there)"
                        )
                    elif exc.errno == errno.EADDRNOTAVAIL:
                        hint = " (no interface of this host has that address)"
                    elif exc.errno == errno.EACCES:
                        hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                    if isinstance(exc, socket.gaierror):  # a host name that does not resolve
                        reason = f"cannot resolve {host}: {exc.strerror or exc}"
                    else:
                        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
                    # filename: the portal, so a live change can name it as the object
                    raise OSError(
                        exc.errno, f"cannot listen on portal {where}: {reason}{hint}", where
                    ) from None
                self._listeners[(host, port)] = server
                opened.append((host, port))
        except OSError:
            for key in opened:
                self._listeners.pop(key).close()
            raise

    async def sync_listeners(self) -> None:
        """Listen on every portal some target serves and stop listening on the others.

        Open connections are not touched: closing a listener only refuses new ones.  Raises OSError when a
        new portal cannot be bound (the listeners opened by this call are closed again first).
        """
        wanted = list(
            dict.fromkeys(
                portal
                for target in self.targets.values()
                for group in target.portal_groups
                for portal in group.listen
            )
        )
        await self.open_listeners(wanted)
        for key in [k for k in self._listeners if k not in wanted]:
            self._listeners.pop(key).close()
        self.bound = []
        for server in self._listeners.values():
            for sock in server.sockets:
                addr = sock.getsockname()
                self.bound.append((addr[0], addr[1]))
        # a portal given with port 0 gets its real port now: advertise that in SendTargets
        for target in self.targets.values():
            for group in target.portal_groups:
                group.portals = [self._bound_for(h, p) for h, p in group.listen]
            target.portals = [p for group in target.portal_groups for p in group.portals]

    def _bound_for(self, host: str, port: int) -> tuple[str, int]:
        if port:
            return host, port
        server = self._listeners.get((host, port))
        for sock in server.sockets if server is not None else ():
            addr = sock.getsockname()
            return addr[0], addr[1]
        for h, p in self.bound:
            if h == host or socket.getaddrinfo(host, None)[0][4][0] == h:
                return h, p
        return host, port

    def set_busy_poll(self, busy_poll_us: int, busy_poll_mode: str | None = None) -> None:
        """Change the busy-polling budget (microseconds, 0: off) of every connection, and whether the
        server measures that polling pays ("adaptive") or always polls ("always"; None: unchanged), live.
        ValueError (and nothing changed) for another mode."""
        adaptive = self.poll_governor.adaptive if busy_poll_mode is None else _adaptive(busy_poll_mode)
        self.busy_poll = busy_poll_us / 1e6
        if adaptive != self.poll_governor.adaptive:
            self.poll_governor.set_adaptive(adaptive)
        for conn in list(self.connections):
            conn.set_busy_poll(self.busy_poll)

    async def stop(self, logout_grace: float = 2.0) -> None:
        if self._log_context is not None:
            log.removeFilter(self._log_context)
            self._log_context = None
        servers = list(self._listeners.values())
        self._listeners.clear()
        for server in servers:
            server.close()
        for task in list(self.background):
            task.cancel()
        conns = [c for c in self.connections if c.session is not None]
        for conn in conns:
            conn.request_logout(int(logout_grace) or 1)
        deadline = asyncio.get_running_loop().time() + logout_grace
        while any(c in self.connections for c in conns) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        self.poll_set.close()
        WRITE_BUFFERS.clear()  # the recycled write buffers go back to the heap
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        for store in self.stores:
            try:
                await store.flush()
                await store.close()
            except OSError as exc:
                log.error("closing store: %s", exc)
        for target in self.targets.values():
            for lu in target.device.luns.values():
                try:
                    await lu.close()  # tape drives: sync and close the cartridge; changers: unlock
                except OSError as exc:
                    log.error("closing LUN %d: %s", lu.lun, exc)

    # ---- sessions

    def sessions_of(self, target_name: str) -> list[Session]:
        return [s for s in self.sessions if s.target is not None and s.target.name == target_name]

    def new_session(
        self,
        initiator_name: str,
        isid: bytes,
        target: TargetSpec | None,
        params: Negotiated,
        cmdsn: int,
        portal: tuple[str, int] | None = None,
    ) -> Session:
        """Create a session, reinstating (closing) any old one of the same I_T nexus (RFC 7143 6.3.5).

        ``portal`` is where the login arrived: it picks the target portal group, and so the SCSI target
        port (TPGT and relative target port) of the session's I_T nexus.
        """
        group = target.group_for(portal) if target is not None else None
        if target is None or group is None:
            old = self.sessions.find(initiator_name, isid, None)
        else:
            # the same initiator port through another portal group is another I_T nexus, not a reinstatement
            old = next(
                (
                    s
                    for s in self.sessions
                    if s.target is target
                    and s.initiator_name == initiator_name
                    and s.isid == isid
                    and (s.nexus is None or s.nexus.tpgt == group.tag)
                ),
                None,
            )
        if old is not None:
            log.info("reinstating session of %s ISID %s", initiator_name, isid.hex())
            self.end_session(old, reason="reinstated by a new login of the same initiator port")
        depth = target.limits.queue_depth if target else 8
        core = TargetSession(
            params,
            cmdsn,
            queue_depth=depth,
            discovery=target is None,
            max_write_buffer=target.limits.max_write_buffer if target else None,
            max_session_write_buffer=target.limits.max_session_write_buffer if target else None,
            budget=self.write_budget,
        )
        session = Session(self.sessions.allocate_tsih(), initiator_name, isid, target, core)
        if target is not None and group is not None:
            session.nexus = ITNexus(initiator_name, isid, target.name, group.tag, group.relative_port)
            target.device.nexus_added(session.nexus)
        self.sessions.add(session)
        return session

    def install_abort_hook(self, target: TargetSpec) -> None:
        """Let a target's device server abort other nexuses' tasks (PREEMPT AND ABORT)."""

        def hook(nexuses: frozenset[ITNexus], lun: int, name: str = target.name) -> None:
            for session in self.sessions_of(name):
                if session.nexus in nexuses:
                    for conn in list(session.connections.values()):
                        conn.abort_tasks_with_status(lun)

        target.device.abort_hook = hook

    def end_session(
        self, session: Session, exclude: Connection | None = None, reason: str = "logged out"
    ) -> None:
        """Close ``session`` and its connections; logs the end at INFO with ``reason``."""
        if session.closed:
            return
        session.closed = True
        session.core.ended = True
        log.info(
            "session ended: %s ISID %s on %s (TSIH %d): %s",
            session.initiator_name,
            session.isid.hex(),
            session.target.name if session.target is not None else "discovery",
            session.tsih,
            reason,
            extra={"session": session.tsih, "initiator": session.initiator_name},
        )
        self.sessions.remove(session)
        for conn in list(session.connections.values()):
            if conn is not exclude:
                conn.abort()
        if session.target is not None and session.nexus is not None:
            session.target.device.nexus_lost(session.nexus)

    def connection_closed(self, conn: Connection) -> None:
        session, machine = conn.session, conn.machine
        if session is None or machine is None:
            return
        now = time.monotonic()
        end_now = machine.close(now)
        if not session.closed:
            log.info(
                "%s: connection %d of %s (TSIH %d) closed without a logout (dropped by the initiator, "
                "the network or a protocol error)",
                conn.peer,
                conn.cid,
                session.initiator_name,
                session.tsih,
                extra={"session": session.tsih, "peer": conn.peer},
            )
        if session.closed:
            return
        if end_now:
            self.end_session(session, reason="its last connection closed")
            return
        deadline = session.core.next_timer()
        if deadline is not None:
            # RFC 7143 6.3.5 / 7.1.4: the session outlives its last connection for DefaultTime2Retain
            # seconds; a login with its ISID and TSIH continues it (a new CID or the same one).  At ERL 2 the
            # failed connection's tasks wait as long for TASK REASSIGN (7.2.3)
            if not session.core.connections:
                log.info(
                    "session TSIH %d has no connection: kept %d s (DefaultTime2Retain) for the initiator "
                    "to return",
                    session.tsih,
                    session.params.default_time2retain,
                    extra={"session": session.tsih},
                )
            self._arm_retain(session, deadline)

    def _arm_retain(self, session: Session, deadline: float) -> None:
        delay = max(0.0, deadline - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._retain_expired, session)

    def _retain_expired(self, session: Session) -> None:
        if session.closed:
            return
        if session.core.handle_timer(time.monotonic()):
            self.end_session(session, reason="DefaultTime2Retain expired with no connection")
            return
        deadline = session.core.next_timer()  # woken a little early, or the deadline moved
        if deadline is not None:
            self._arm_retain(session, deadline)

    # ---- discovery

    def visible_targets(self, initiator_name: str) -> list[TargetSpec]:
        return [t for t in self.targets.values() if t.admits(initiator_name)]

    def text_answer(self, conn: Connection, pairs: list[tuple[str, str]]) -> bytes:
        """Answer a full-feature-phase Text Request (SendTargets, RFC 7143 appendix C)."""
        session = conn.session
        assert session is not None
        out: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "MaxRecvDataSegmentLength" and not session.discovery:
                # RFC 7143 13.12: declarative, also in full feature phase; the next Data-In uses it
                defn = KEYS[key]
                try:
                    length = decode_number(value)
                except TextError:
                    length = -1
                if not defn.minimum <= length <= defn.maximum:
                    out.append((key, "Reject"))
                    continue
                conn.set_max_xmit(length)
                assert conn.params is not None
                out.append((key, str(conn.params.max_recv_data_segment_length)))
                continue
            if key != "SendTargets":
                out.append((key, "NotUnderstood"))
                continue
            if value == NO_VALUE or (value == "All" and not session.discovery):  # "SendTargets" alone
                out.append((key, "Reject"))
                continue
            # the TLS convention (docs/design.md): a discovery session reports the portals that speak its own
            # transport, TLS portals over TLS and plaintext portals in plaintext
            tls = getattr(conn, "tls_names", None) is not None
            for target in self.visible_targets(session.initiator_name):
                if (
                    value in ("All", "") and (value == "All" or target is session.target)
                ) or value == target.name:
                    out.append(("TargetName", target.name))
                    for group in target.portal_groups:
                        if group.tls != tls:
                            continue
                        for host, port in group.portals:
                            shown = conn.portal[0] if host in ("0.0.0.0", "::") else host
                            addr = f"[{shown}]" if ":" in shown else shown
                            out.append(("TargetAddress", f"{addr}:{port},{group.tag}"))
        return encode_text(out)


# ---------------------------------------------------------------------------------------------- config


def serial_for(target: str, lun: int) -> str:
    return hashlib.sha256(f"{target}/{lun}".encode()).hexdigest()[:16]


def _limits(params: Any) -> TargetLimits:
    limits = TargetLimits()
    for name in (
        "max_recv_data_segment_length",
        "max_burst_length",
        "first_burst_length",
        "max_outstanding_r2t",
        "initial_r2t",
        "immediate_data",
        "default_time2wait",
        "default_time2retain",
        "max_connections",
        "error_recovery_level",
    ):
        value = getattr(params, name, None)
        if value is not None:
            setattr(limits, name, value)
    if params.header_digest is not None:
        limits.header_digests = tuple(params.header_digest)
    if params.data_digest is not None:
        limits.data_digests = tuple(params.data_digest)
    limits.first_burst_length = min(limits.first_burst_length, limits.max_burst_length)
    return limits


def _alua(tcfg: TargetConfig) -> Alua:
    """The ALUA state of a target's device server: one target port group per portal group."""
    return Alua.from_groups(
        (
            TargetPortGroup(g.tag, (g.tag,), parse_state(g.alua_state), preferred=g.preferred)
            for g in tcfg.effective_portal_groups()
        ),
        TPGS_BY_NAME[tcfg.alua_mode],
    )


class SessionLogContext(logging.Filter):
    """Names the session in the target's WARNING and ERROR records.

    The connection code logs ``"%s: ...", peer``; when that peer is a connection of a logged-in session,
    the record gets ``session`` (the TSIH, for ``--log-format json``) and the text
    ``[session TSIH n, INITIATOR -> TARGET]``. Only WARNING and above are looked at (one pass over the
    open connections), so INFO/DEBUG traffic costs nothing.
    """

    def __init__(self, server: TargetServer) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "session", None) is not None:
            return True
        args = record.args
        if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
            return True
        for conn in self.server.connections:
            session = conn.session
            if session is not None and conn.peer == args[0]:
                target = session.target.name if session.target is not None else "discovery"
                record.session = session.tsih
                record.msg = (
                    f"{record.msg} [session TSIH {session.tsih}, {session.initiator_name} -> {target}]"
                )
                break
        return True


def build_lu(target_name: str, lcfg: LunConfig, store: BackingStore | None = None) -> LogicalUnit:
    """Open (or create) one LUN's backing store and build its logical unit; raises OSError/ValueError.
    With ``store`` (a live change of LU settings only), the unit is built over that open store instead."""
    reused = store is not None
    try:
        if store is not None:
            pass
        elif lcfg.raid is not None:
            from cistern.storage.raid.open import open_raid  # numpy, only when a RAID LUN is configured

            store = open_raid(lcfg.raid, block_size=lcfg.block_size, name=f"{target_name}/lun{lcfg.lun}")
        else:
            store = open_store(
                lcfg.backend,
                str(lcfg.path) if lcfg.path is not None else None,
                lcfg.size,
                lcfg.block_size,
                lcfg.read_only,
            )
    except OSError as exc:  # name the LUN; keep the errno
        text = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        raise OSError(exc.errno, f"target {target_name} LUN {lcfg.lun}: {text}") from None
    except ValueError as exc:
        raise ValueError(f"target {target_name} LUN {lcfg.lun}: {exc}") from None
    try:
        kwargs = {}
        for name in ("vendor", "product", "revision"):
            if getattr(lcfg, name, None):
                kwargs[name] = getattr(lcfg, name)
        raid = as_raid(store)
        unit_cls = RaidDiskUnit if raid is not None else LogicalUnit
        lu = unit_cls(
            store,  # type: ignore[arg-type]
            lun=lcfg.lun,
            serial=lcfg.serial or serial_for(target_name, lcfg.lun),
            read_only=lcfg.read_only,
            thin=lcfg.thin,
            removable=lcfg.removable,
            pr_state_path=lcfg.pr_state_path(),
            soft_threshold=lcfg.soft_threshold,
            sanitize_rate=lcfg.sanitize_rate,
            **kwargs,
        )
        if isinstance(lu, RaidDiskUnit) and raid is not None:
            lu.unwatch = watch_raid(raid, lu)
        return lu
    except BaseException:
        if not reused:
            with contextlib.suppress(Exception):
                store.close_sync()
        raise


def target_auth(tcfg: TargetConfig) -> tuple[ChapSecret | None, ChapSecret | None, tuple[str, ...]]:
    """(CHAP secret the initiator must answer, mutual CHAP secret, CHAP_A algorithm names) of a target."""
    chap = mutual = None
    algorithms: tuple[str, ...] = ("SHA3-256", "SHA-256", "SHA1", "MD5")
    if tcfg.auth is not None:
        algorithms = tuple(tcfg.auth.chap_algorithms)
        if tcfg.auth.chap is not None:
            c = tcfg.auth.chap
            chap = ChapSecret(c.username, c.secret)
            if c.mutual_username and c.mutual_secret:
                mutual = ChapSecret(c.mutual_username, c.mutual_secret)
    return chap, mutual, algorithms


def target_limits(tcfg: TargetConfig) -> TargetLimits:
    return _limits(tcfg.params)


def close_units_now(units: Iterable[LogicalUnitBase]) -> None:
    """Blocking close of logical units never served (a build that failed half-way): disk stores, tape
    cartridges, changer library locks."""
    for lu in units:
        if isinstance(lu, LogicalUnit):
            with contextlib.suppress(Exception):
                lu.store.close_sync()
        else:
            close_now(lu)


def build_target(tcfg: TargetConfig, stores: dict[int, BackingStore] | None = None) -> TargetSpec:
    """Open a target's stores (disks) and libraries (tape, changer) and build its runtime objects; on
    failure closes what it opened and raises OSError/ValueError.  ``stores``: already open stores to build
    some disk LUNs over (a live rebuild of the target), by LUN; they are not closed on failure."""
    luns: dict[int, LogicalUnitBase] = {}
    name = str(tcfg.name)
    given = stores or {}
    try:
        for lcfg in tcfg.luns:
            if lcfg.backend not in TAPE_BACKENDS and lcfg.backend != "ses":
                luns[lcfg.lun] = build_lu(name, lcfg, given.get(lcfg.lun))
        try:
            luns.update(build_tape_luns(tcfg, lambda lun: serial_for(name, lun)))
        except OSError as exc:  # name the target; keep the errno
            text = exc.strerror or str(exc)
            if exc.filename and str(exc.filename) not in text:
                text = f"{exc.filename}: {text}"
            raise OSError(exc.errno, f"target {name} tape library: {text}") from None
        except ValueError as exc:
            raise ValueError(f"target {name} tape library: {exc}") from None
        luns.update(build_ses_luns(tcfg, luns, lambda lun: serial_for(name, lun)))
    except BaseException:
        close_units_now(
            lu for lu in luns.values() if not (isinstance(lu, LogicalUnit) and lu.store in given.values())
        )
        raise
    groups = [
        PortalGroupSpec(g.tag, [(p.host, p.port) for p in g.portals], tls=g.tls)
        for g in tcfg.effective_portal_groups()
    ]
    device = DeviceServer(luns, target_name=str(tcfg.name), alua=_alua(tcfg))
    chap, mutual, algorithms = target_auth(tcfg)
    return TargetSpec(
        name=str(tcfg.name),
        device=device,
        alias=tcfg.alias,
        portal_groups=groups,
        acl=None if tcfg.open else frozenset(str(a) for a in tcfg.acl),
        chap=chap,
        mutual_chap=mutual,
        chap_algorithms=algorithms,
        limits=_limits(tcfg.params),
        tls_clients=frozenset(tcfg.tls_clients),
    )


def discovery_secret(config: Config) -> ChapSecret | None:
    if config.discovery_auth is not None and config.discovery_auth.chap is not None:
        return ChapSecret(config.discovery_auth.chap.username, config.discovery_auth.chap.secret)
    return None


def discovery_mutual_secret(config: Config) -> ChapSecret | None:
    chap = config.discovery_auth.chap if config.discovery_auth is not None else None
    if chap is not None and chap.mutual_username and chap.mutual_secret:
        return ChapSecret(chap.mutual_username, chap.mutual_secret)
    return None


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, so the fd limit is not the session cap; logs the
    limit in force at INFO and returns it (0 when it cannot be read: no descriptor check then)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the open-file limit: %s", exc)
        return 0
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.info(
            "open-file limit (RLIMIT_NOFILE): %d descriptors",
            soft if soft != resource.RLIM_INFINITY else target,
        )
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
        return soft
    log.info("open-file limit (RLIMIT_NOFILE): %d descriptors (soft limit raised from %d)", target, soft)
    return target


def open_descriptors() -> int:
    """How many file descriptors this process has open now (0 when /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def build_server(config: Config) -> TargetServer:
    """Open every store and build the runtime objects; raises OSError/ValueError with a clear message."""
    targets: list[TargetSpec] = []
    try:
        for tcfg in config.targets:
            targets.append(build_target(tcfg))
    except BaseException:
        for target in targets:
            close_units_now(target.device.luns.values())
        raise
    return TargetServer(
        targets,
        stores=[lu.store for t in targets for lu in t.device.luns.values() if isinstance(lu, LogicalUnit)],
        discovery_chap=discovery_secret(config),
        discovery_mutual_chap=discovery_mutual_secret(config),
        tls=config.tls,
        limits=(config.limits or LimitsConfig()).admission(),
        listen_backlog=(config.limits or LimitsConfig()).listen_backlog,
        max_write_buffers=(config.limits or LimitsConfig()).max_write_buffers,
        login_timeout=config.login_timeout,
        nop_interval=config.nop_interval,
        nop_timeout=config.nop_timeout,
        busy_poll_us=config.busy_poll_us,
        busy_poll_mode=config.busy_poll_mode,
    )


async def serve(config: Config, *, on_ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
    """Serve ``config`` until cancelled, then shut down cleanly (async logout, flush, close)."""
    server = build_server(config)
    try:
        bound = await server.start()
        if on_ready is not None:
            on_ready(bound)
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(server.stop())
