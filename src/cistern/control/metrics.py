"""Prometheus metrics of a running server, read at scrape time from the counters the server keeps.

A :class:`ServerCollector` (prometheus-client custom collector) turns the per-LU
:class:`~cistern.scsi.stats.LuStats`, the per-nexus byte counters of each device server, the login
counters of :class:`~cistern.target.monitor.Monitor` and the session table into metric families; nothing
is pushed per command.  The names are listed in ``docs/metrics.md``; counters end in ``_total``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from cistern import __version__
from cistern.control.looplag import LoopLag
from cistern.scsi.changer import ChangerUnit
from cistern.scsi.lu import LogicalUnit
from cistern.scsi.stats import LATENCY_BUCKETS, SENSE_KEY_NAMES
from cistern.scsi.tape import TapeUnit
from cistern.scsi.unit import LogicalUnitBase
from cistern.storage.raid import as_raid
from cistern.target.model import portal_text
from cistern.target.server import TargetServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerCollector:
    """prometheus-client collector over one :class:`TargetServer` (see the module docstring)."""

    def __init__(self, server: TargetServer, lag: LoopLag | None = None) -> None:
        self.server = server
        self.lag = lag
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        server = self.server
        lun_labels = ["target", "lun"]
        read_bytes = CounterMetricFamily(
            "cistern_lun_read_bytes", "Bytes read from the LUN (data-in).", labels=lun_labels
        )
        write_bytes = CounterMetricFamily(
            "cistern_lun_write_bytes",
            "Bytes written to the LUN (data-out of WRITE commands).",
            labels=lun_labels,
        )
        commands = CounterMetricFamily(
            "cistern_lun_commands",
            "SCSI commands completed by the LUN, by kind.",
            labels=[*lun_labels, "kind"],
        )
        errors = CounterMetricFamily(
            "cistern_lun_errors", "CHECK CONDITION answers by sense key.", labels=[*lun_labels, "sense_key"]
        )
        latency = HistogramMetricFamily(
            "cistern_lun_command_latency_seconds",
            "Time from the command reaching the device server to its status.",
            labels=lun_labels,
        )
        depth = GaugeMetricFamily(
            "cistern_lun_queue_depth", "Commands the LUN is executing now.", labels=lun_labels
        )
        size = GaugeMetricFamily("cistern_lun_size_bytes", "Capacity of the LUN.", labels=lun_labels)
        for target in server.targets.values():
            for number, lu in sorted(target.device.luns.items()):
                labels = [target.name, str(number)]
                st = lu.stats
                read_bytes.add_metric(labels, st.read_bytes)
                write_bytes.add_metric(labels, st.write_bytes)
                commands.add_metric([*labels, "read"], st.read_commands)
                commands.add_metric([*labels, "write"], st.write_commands)
                commands.add_metric([*labels, "other"], st.other_commands)
                for key, count in enumerate(st.errors):
                    if count:
                        errors.add_metric([*labels, SENSE_KEY_NAMES[key]], count)
                cumulative = 0
                buckets: list[tuple[str, float]] = []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), st.latency_buckets, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric(labels, buckets, st.latency_sum)
                depth.add_metric(labels, st.in_flight)
                if isinstance(lu, LogicalUnit):  # disks; tapes have no fixed capacity
                    size.add_metric(labels, lu.num_blocks * lu.block_size)
        yield from (read_bytes, write_bytes, commands, errors, latency, depth, size)
        yield from _raid_families(server)
        yield from _tape_families(server)

        logins = CounterMetricFamily(
            "cistern_logins",
            "Login outcomes per target and portal: result is ok or the refusal's status.",
            labels=["target", "portal", "result"],
        )
        for (target_name, portal, outcome), count in sorted(server.monitor.logins.items()):
            logins.add_metric([target_name, portal, outcome], count)
        yield logins

        sessions = GaugeMetricFamily(
            "cistern_target_sessions", "Sessions logged in, per target.", labels=["target"]
        )
        conns = GaugeMetricFamily(
            "cistern_target_connections", "Connections in full feature phase, per target.", labels=["target"]
        )
        per_target = {name: [0, 0] for name in server.targets}
        s_labels = ["target", "initiator", "isid", "tsih"]
        s_read = CounterMetricFamily(
            "cistern_session_read_bytes", "Bytes read by the session.", labels=s_labels
        )
        s_write = CounterMetricFamily(
            "cistern_session_write_bytes", "Bytes written by the session.", labels=s_labels
        )
        for session in server.sessions:
            if session.target is None:
                continue
            counts = per_target.setdefault(session.target.name, [0, 0])
            counts[0] += 1
            counts[1] += len(session.connections)
            io = session.target.device.nexus_io.get(id(session.nexus)) if session.nexus is not None else None
            labels = [session.target.name, session.initiator_name, session.isid.hex(), str(session.tsih)]
            s_read.add_metric(labels, io[0] if io else 0)
            s_write.add_metric(labels, io[1] if io else 0)
        for name, (n_sessions, n_conns) in sorted(per_target.items()):
            sessions.add_metric([name], n_sessions)
            conns.add_metric([name], n_conns)
        yield from (sessions, conns, s_read, s_write)
        yield from _portal_families(server)
        polls = CounterMetricFamily(
            "cistern_busy_polls",
            "Busy polls after responses (busy_poll_us): caught the initiator's next command, or ran out of budget.",
            labels=["outcome"],
        )
        polls.add_metric(["caught"], server.poll_set.caught)
        polls.add_metric(["empty"], server.poll_set.empty)
        yield polls
        governor = server.poll_governor
        yield GaugeMetricFamily(
            "cistern_busy_poll_active",
            "1 while connections poll after their responses (busy_poll_mode always, or adaptive and polling "
            "measured cheaper than sleeping), else 0.",
            value=1 if governor.polling and server.busy_poll > 0 else 0,
        )
        cost = GaugeMetricFamily(
            "cistern_busy_poll_cpu_seconds_per_wait",
            "Server CPU per wait for an initiator in busy_poll_mode adaptive's last measuring turns, polling "
            "and sleeping (0: not measured yet).",
            labels=["way"],
        )
        cost.add_metric(["poll"], governor.poll_cost)
        cost.add_metric(["sleep"], governor.sleep_cost)
        yield cost

        if self.lag is not None:
            yield GaugeMetricFamily(
                "cistern_event_loop_lag_seconds",
                "How late the last 0.5 s timer of the event loop fired.",
                value=self.lag.last,
            )
        info = GaugeMetricFamily(
            "cistern_build_info", "Always 1; the version in a label.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info


def _portal_families(server: TargetServer) -> Iterator[Metric]:
    """Sessions and connections per target and the portal each connection came in on (a session with
    connections on two portals counts on both; discovery sessions have ``target=""``, as in logins)."""
    labels = ["target", "portal"]
    sessions = GaugeMetricFamily(
        "cistern_portal_sessions",
        "Sessions with at least one connection on the portal, per target and portal.",
        labels=labels,
    )
    conns = GaugeMetricFamily(
        "cistern_portal_connections", "Connections of logged-in sessions, per target and portal.", labels=labels
    )
    counts: dict[tuple[str, str], list[int]] = {}
    for target in server.targets.values():  # every served portal, also with nobody logged in
        for group in target.portal_groups:
            for listen in group.listen:
                counts.setdefault((target.name, portal_text(listen)), [0, 0])
    for session in server.sessions:
        name = session.target.name if session.target is not None else ""
        seen: set[str] = set()
        for conn in session.connections.values():
            key = (name, portal_text(conn.portal))
            entry = counts.setdefault(key, [0, 0])
            entry[1] += 1
            if key[1] not in seen:
                seen.add(key[1])
                entry[0] += 1
    for (name, portal), (n_sessions, n_conns) in sorted(counts.items()):
        sessions.add_metric([name, portal], n_sessions)
        conns.add_metric([name, portal], n_conns)
    yield from (sessions, conns)


RAID_STATES = ("clean", "degraded", "rebuilding", "checking", "resyncing", "failed")  # RaidStore.state
MEMBER_STATES = ("in_sync", "rebuilding", "faulty", "spare", "stale", "missing")


def _luns(server: TargetServer) -> Iterator[tuple[str, int, LogicalUnitBase]]:
    for target in server.targets.values():
        for number, lu in sorted(target.device.luns.items()):
            yield target.name, number, lu


def _raid_families(server: TargetServer) -> Iterator[Metric]:
    """Array and member state of every RAID LUN (the same snapshot ``cistern raid status`` prints)."""
    labels = ["target", "lun", "array"]
    state = GaugeMetricFamily(
        "cistern_raid_state", "1 for the array's current state, 0 for the others.", labels=[*labels, "state"]
    )
    degraded = GaugeMetricFamily(
        "cistern_raid_degraded", "1 while the array runs without full redundancy.", labels=labels
    )
    progress = GaugeMetricFamily(
        "cistern_raid_sync_progress_ratio",
        "Done fraction (0..1) of the running resync, rebuild, check or repair; absent when idle.",
        labels=[*labels, "action"],
    )
    speed = GaugeMetricFamily(
        "cistern_raid_sync_speed_bytes_per_second", "Speed of the running background action.", labels=labels
    )
    mismatches = GaugeMetricFamily(
        "cistern_raid_mismatched_stripes", "Stripes whose parity or copies disagreed in the last check or repair.", labels=labels
    )
    member_state = GaugeMetricFamily(
        "cistern_raid_member_state",
        "1 for each member's current state, 0 for the others.",
        labels=[*labels, "member", "role", "state"],
    )
    member_errors = CounterMetricFamily(
        "cistern_raid_member_errors", "I/O errors counted against the member.", labels=[*labels, "member"]
    )
    for target_name, number, lu in _luns(server):
        store = as_raid(getattr(lu, "store", None))
        if store is None:
            continue
        st = store.status()
        base = [target_name, str(number), str(st["name"])]
        for name in RAID_STATES:
            state.add_metric([*base, name], 1.0 if st["state"] == name else 0.0)
        degraded.add_metric(base, 1.0 if store.degraded or store.failed else 0.0)
        if st["sync_progress"] is not None:
            progress.add_metric([*base, str(st["sync_action"])], float(st["sync_progress"]))
        if st["sync_speed"] is not None:
            speed.add_metric(base, float(st["sync_speed"]))
        mismatches.add_metric(base, float(st["mismatch_cnt"]))
        for dev in st["devices"]:
            member = [*base, str(dev["name"]), str(dev["role"])]
            for name in MEMBER_STATES:
                member_state.add_metric([*member, name], 1.0 if dev["state"] == name else 0.0)
            member_errors.add_metric([*base, str(dev["name"])], float(dev["errors"]))
    yield from (state, degraded, progress, speed, mismatches, member_state, member_errors)


def _tape_families(server: TargetServer) -> Iterator[Metric]:
    """Tape drives (loaded cartridge, bytes) and changers (occupied elements)."""
    labels = ["target", "lun"]
    loaded = GaugeMetricFamily(
        "cistern_tape_loaded", "1 while the drive holds a cartridge (barcode in a label).",
        labels=[*labels, "barcode"],
    )
    host_bytes = CounterMetricFamily(
        "cistern_tape_host_bytes", "Bytes the drive exchanged with initiators, by direction.",
        labels=[*labels, "direction"],
    )
    medium_bytes = CounterMetricFamily(
        "cistern_tape_medium_bytes", "Bytes the drive wrote to or read from cartridges (after compression).",
        labels=[*labels, "direction"],
    )
    elements = GaugeMetricFamily(
        "cistern_changer_elements", "Elements of the medium changer, by kind and whether they hold a cartridge.",
        labels=[*labels, "kind", "full"],
    )
    for target_name, number, lu in _luns(server):
        base = [target_name, str(number)]
        if isinstance(lu, TapeUnit):
            loaded.add_metric([*base, lu.barcode or ""], 1.0 if lu.loaded else 0.0)
            host_bytes.add_metric([*base, "from_host"], float(lu.bytes_from_host))
            host_bytes.add_metric([*base, "to_host"], float(lu.bytes_to_host))
            medium_bytes.add_metric([*base, "written"], float(lu.bytes_written))
            medium_bytes.add_metric([*base, "read"], float(lu.bytes_read))
        elif isinstance(lu, ChangerUnit):
            for kind, where in lu.library.where.items():
                full = sum(1 for barcode in where if barcode is not None)
                elements.add_metric([*base, kind, "yes"], float(full))
                elements.add_metric([*base, kind, "no"], float(len(where) - full))
    yield from (loaded, host_bytes, medium_bytes, elements)


def make_registry(server: TargetServer, lag: LoopLag | None = None) -> CollectorRegistry:
    """A registry with the server's metrics and the process metrics (memory, CPU, file descriptors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server, lag))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of ``registry``."""
    return generate_latest(registry)
