#!/usr/bin/env python3
"""Memory of an idle target: RSS of ``cistern demo`` after start, and per idle logged-in session.

Starts ``cistern demo`` on a free 127.0.0.1 port with its LUN file and its admin socket
(``$XDG_RUNTIME_DIR/cistern/admin.sock``) in a temporary directory, reads VmRSS from /proc/PID/status once
it listens, logs in ``--sessions`` sessions (raw iSCSI logins, each its own ISID, kept open and idle),
reads VmRSS again, and prints both and the growth per session.  Then it asks the admin API
``GET /api/stats`` twice over the Unix socket (the first request loads aiohttp, which an idle target has
not imported) and prints both answer times and the RSS after.  Stops the target by its PID.
Usage: ``python3 bench/rss.py [--sessions 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent / "tests" / "unit"), str(_HERE.parent / "tests" / "integration")]

import peers  # noqa: E402
from test_target_harness import Client  # noqa: E402

DEMO_IQN = "iqn.2026-11.org.cistern:demo"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _sessions(port: int, count: int) -> list[Client]:
    clients = []
    for i in range(count):
        client = await Client.open(port)
        client.isid = bytes([0x80, 0, 0, 0, i >> 8, i & 0xFF])
        await client.login("iqn.2026-11.org.cistern:rss-probe", DEMO_IQN)
        await client.ready()
        clients.append(client)
    return clients


async def _measure(pid: int, port: int, count: int, settle: float) -> tuple[int, int]:
    clients = await _sessions(port, count)
    await asyncio.sleep(settle)
    after = rss_kib(pid)
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
    return count, after


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(self._path))


def admin_request_ms(path: Path) -> float:
    """Milliseconds from connecting to the admin socket to the full answer of ``GET /api/stats``."""
    start = time.perf_counter()
    conn = _UnixHTTP(path)
    try:
        conn.request("GET", "/api/stats")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET /api/stats answered {response.status}")
    finally:
        conn.close()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before each reading")
    args = parser.parse_args()
    port = peers.free_port()
    with tempfile.TemporaryDirectory(prefix="cistern-rss-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cistern", "demo", "--portal", f"127.0.0.1:{port}", "--dir", tmp],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "XDG_RUNTIME_DIR": tmp},  # its own admin socket, not a shared default
        )
        admin_socket = Path(tmp) / "cistern" / "admin.sock"
        try:
            peers.wait_port("127.0.0.1", port, timeout=30)
            time.sleep(args.settle)
            idle = rss_kib(proc.pid)
            count, after = asyncio.run(_measure(proc.pid, port, args.sessions, args.settle))
            first_ms = admin_request_ms(admin_socket)
            next_ms = admin_request_ms(admin_socket)
            time.sleep(args.settle)
            loaded = rss_kib(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    print(f"idle demo target RSS: {idle / 1024:.1f} MiB")
    print(
        f"with {count} idle sessions: {after / 1024:.1f} MiB ({(after - idle) / count:.0f} KiB per session)"
    )
    print(
        f"admin API GET /api/stats: first {first_ms:.0f} ms (loads aiohttp), next {next_ms:.1f} ms; "
        f"RSS after: {loaded / 1024:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
