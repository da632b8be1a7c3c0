"""Benchmark workloads: one bounded run of ``qemu-img bench`` or ``iscsi-perf`` against an iSCSI URL.

``qemu-img bench`` (QEMU's libiscsi block driver) does a fixed number of requests of one size at one
queue depth, sequential with wrap-around, and prints ``Run completed in S seconds.``. ``iscsi-perf``
(libiscsi) reads sequentially with ``-m`` requests in flight of ``-b`` 512-byte blocks until SIGINT and
prints a running ``iops average N``. Throughput is computed here from IOPS and the request size, in MiB/s.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time

import peers

KIB = 1024
MIB = 1024 * 1024

# Requests per qemu-img run, sized so tgt takes one to three seconds on a 2-core machine.
DEFAULT_COUNTS: dict[int, int] = {4 * KIB: 20000, 64 * KIB: 8000, MIB: 1500}

_COMPLETED = re.compile(r"Run completed in ([0-9.]+) seconds")
_IOPS_AVERAGE = re.compile(r"iops average (\d+)")
_CISTERN_BENCH = re.compile(r"([0-9.]+) IOPS, ([0-9.]+) MiB/s \((\d+) ops in ([0-9.]+) s\)")


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    """One row of the comparison: tool, direction, request size in bytes, queue depth."""

    tool: str  # "qemu-img" | "iscsi-perf" | "cistern-bench"
    write: bool
    block_size: int
    depth: int

    @property
    def name(self) -> str:
        size = f"{self.block_size // MIB}M" if self.block_size >= MIB else f"{self.block_size // KIB}k"
        return f"{self.tool} {'write' if self.write else 'read'} {size} qd{self.depth}"


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """One run: I/O rate, throughput, wall seconds, and the I/Os done (for CPU per I/O)."""

    iops: float
    mib_per_s: float
    seconds: float
    ios: float = 0.0


def default_workloads() -> list[Workload]:
    sizes = (4 * KIB, 64 * KIB, MIB)
    depths = (1, 32)
    rows = [Workload("qemu-img", write, bs, qd) for write in (False, True) for bs in sizes for qd in depths]
    rows += [Workload("iscsi-perf", False, bs, qd) for bs in sizes for qd in depths]
    return rows


def fill(url: str, size: int, timeout: float = 300.0) -> None:
    """Write every block of the LUN at ``url`` (1 MiB requests, depth 8) so later reads return real data."""
    count = max(1, size // MIB)
    peers.qemu_img(
        "bench", "-f", "raw", "-t", "none", "-w", "--pattern=0x5a", "-c", str(count), "-d", "8",
        "-s", str(MIB), url, timeout=timeout,
    )  # fmt: skip


def run_workload(
    workload: Workload, url: str, scale: float = 1.0, duration: float = 3.0, timeout: float = 120.0
) -> Measurement:
    """Run ``workload`` once against ``url``; raise :class:`peers.PeerCommandError` on failure."""
    if workload.tool == "qemu-img":
        return _qemu_img_bench(workload, url, scale, timeout)
    if workload.tool == "iscsi-perf":
        return _iscsi_perf(workload, url, duration, timeout)
    if workload.tool == "cistern-bench":
        return _cistern_bench(workload, url, duration, timeout)
    raise ValueError(f"unknown tool {workload.tool!r}")


def _qemu_img_bench(workload: Workload, url: str, scale: float, timeout: float) -> Measurement:
    count = max(1, int(DEFAULT_COUNTS.get(workload.block_size, 2000) * scale))
    args = ["bench", "-f", "raw", "-t", "none", "-c", str(count), "-d", str(workload.depth)]
    args += ["-s", str(workload.block_size)]
    if workload.write:
        args += ["-w", "--pattern=0xa5"]
    done = peers.qemu_img(*args, url, timeout=timeout)
    match = _COMPLETED.search(done.stdout)
    if match is None:
        raise peers.PeerCommandError(["qemu-img", *args, url], 0, done.stdout, done.stderr, "no result line")
    seconds = max(float(match.group(1)), 1e-6)
    iops = count / seconds
    return Measurement(iops=iops, mib_per_s=iops * workload.block_size / MIB, seconds=seconds, ios=count)


def _iscsi_perf(workload: Workload, url: str, duration: float, timeout: float) -> Measurement:
    binary = peers.require_tool("iscsi-perf")
    blocks = max(1, workload.block_size // 512)
    cmd = [binary, "-m", str(workload.depth), "-b", str(blocks), url]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=duration)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # iscsi-perf's documented way to stop: print and exit
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout - duration))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise peers.PeerCommandError(
                cmd, None, out.decode(errors="replace"), err.decode(errors="replace"), "ignored SIGINT"
            ) from None
    seconds = time.monotonic() - start
    text = out.decode(errors="replace")
    averages = _IOPS_AVERAGE.findall(text)
    if not averages:
        raise peers.PeerCommandError(cmd, proc.returncode, text, err.decode(errors="replace"), "no IOPS line")
    iops = float(averages[-1])
    return Measurement(
        iops=iops, mib_per_s=iops * workload.block_size / MIB, seconds=seconds, ios=iops * seconds
    )


def _cistern_bench(workload: Workload, url: str, duration: float, timeout: float) -> Measurement:
    """cistern's own initiator: ``cistern bench`` (random I/O for ``duration`` seconds)."""
    cmd = [
        sys.executable,
        "-m",
        "cistern",
        "bench",
        "-b",
        str(workload.block_size),
        "-d",
        str(workload.depth),
    ]
    cmd += ["-r", "0" if workload.write else "100", "-t", str(duration), url]
    done = peers.run(cmd, timeout=timeout)
    match = _CISTERN_BENCH.search(done.stdout)
    if match is None:
        raise peers.PeerCommandError(cmd, 0, done.stdout, done.stderr, "no result line")
    iops, seconds = float(match.group(1)), float(match.group(4))
    return Measurement(
        iops=iops, mib_per_s=iops * workload.block_size / MIB, seconds=seconds, ios=float(match.group(3))
    )
