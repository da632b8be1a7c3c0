"""The admin API after a cold start: the listeners are up before aiohttp is loaded, and the clients that
connect while it loads (Unix socket and TLS over TCP, at once, one sending its request in pieces) are all
answered by the same HTTP server as the clients after them; on the asyncio and the uvloop event loop."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from cistern.config.model import parse_config
from cistern.control.listeners import AdminListeners
from cistern.control.live import Controller
from cistern.security import pki
from cistern.target.server import build_server

TOKEN = "listener-test-token-0123"
IQN = "iqn.2026-11.org.cistern.test:listeners"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parts: list[bytes]) -> Any:
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.05)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    body = json.loads(await asyncio.wait_for(reader.readexactly(length), 30))
    writer.close()
    return status, body


def _get(path: str, host: str = "localhost") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


async def _cold_start(tmp_path: Path, port: int) -> None:
    pki.create_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    pki.issue(
        tmp_path / "ca.pem",
        tmp_path / "ca.key",
        tmp_path / "admin.pem",
        tmp_path / "admin.key",
        common_name="admin",
        names=["127.0.0.1"],
        server=True,
    )
    config = parse_config(
        {
            "admin": {
                "socket": str(tmp_path / "a.sock"),
                "listen": "127.0.0.1:0",
                "token": TOKEN,
                "tls_cert": str(tmp_path / "admin.pem"),
                "tls_key": str(tmp_path / "admin.key"),
            },
            "targets": [
                {
                    "name": IQN,
                    "portals": [f"127.0.0.1:{port}"],
                    "open": True,
                    "luns": [{"lun": 0, "backend": "memory", "size": "1M"}],
                }
            ],
        }
    )
    assert config.admin is not None
    listeners = AdminListeners(Controller(build_server(config), config, None), config.admin)
    await listeners.start()
    try:
        assert listeners.socket_path == tmp_path / "a.sock" and listeners.tcp_address is not None
        assert not listeners.loaded  # nothing asked yet: no HTTP server in memory
        trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

        async def unix(parts: list[bytes]) -> Any:
            return await _answer(*await asyncio.open_unix_connection(str(tmp_path / "a.sock")), parts)

        async def tls(parts: list[bytes]) -> Any:
            host, tcp_port = listeners.tcp_address  # type: ignore[misc]
            streams = await asyncio.open_connection(host, tcp_port, ssl=trusted, server_hostname="127.0.0.1")
            return await _answer(*streams, parts)

        targets = _get("/api/targets")
        first = await asyncio.gather(
            unix([_get("/api/_ping")]),
            unix([targets[:7], targets[7:20], targets[20:]]),  # one request in three pieces
            tls([_get("/api/targets", "127.0.0.1")]),
            tls([_get("/api/config", "127.0.0.1")]),  # the token rules hold for a waiting connection too
        )
        assert listeners.loaded
        assert first[0] == (200, {"status": "ok"})
        assert first[1][0] == 200 and [t["name"] for t in first[1][1]["targets"]] == [IQN]
        assert first[2][0] == 200 and [t["name"] for t in first[2][1]["targets"]] == [IQN]
        assert first[3][0] == 401 and first[3][1]["error"]["cause"] == "missing or wrong bearer token"
        # after the load, new connections go straight to aiohttp
        assert await unix([_get("/api/_ping")]) == (200, {"status": "ok"})
        assert (await tls([_get("/api/_ping", "127.0.0.1")]))[0] == 200
    finally:
        await listeners.stop()
    assert not (tmp_path / "a.sock").exists()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_first_clients_after_cold_start_are_answered(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(_cold_start(tmp_path, 3260), 60))  # the iSCSI portal is not bound
