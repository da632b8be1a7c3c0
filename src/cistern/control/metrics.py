"""Prometheus metrics of a running server, read at scrape time from the counters the server keeps.

A :class:`ServerCollector` (prometheus-client custom collector) turns the per-LU
:class:`~cistern.scsi.stats.LuStats`, the per-nexus byte counters of each device server, the login
counters of :class:`~cistern.target.monitor.Monitor` and the session table into metric families; nothing
is pushed per command.  The names are listed in ``docs/metrics.md``; counters end in ``_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from cistern.scsi.lu import LogicalUnit
from cistern.scsi.stats import LATENCY_BUCKETS, SENSE_KEY_NAMES
from cistern.target.server import TargetServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LoopLag:
    """Event-loop lag: how late a sleep of ``interval`` seconds wakes up (a busy loop answers late)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.last = 0.0
        self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.last = max(0.0, loop.time() - start - self.interval)
            self.max = max(self.max, self.last)


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


def make_registry(server: TargetServer, lag: LoopLag | None = None) -> CollectorRegistry:
    """A registry with the server's metrics and the process metrics (memory, CPU, file descriptors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server, lag))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of ``registry``."""
    return generate_latest(registry)
