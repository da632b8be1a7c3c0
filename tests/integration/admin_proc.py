"""A ``cistern serve`` process with its admin API (Unix socket + TCP with a token) for the admin tests.

The socket lives in a short temporary directory (AF_UNIX paths are limited to 107 bytes); the config file,
LUN files and the target's log live in the test module's artifacts folder.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peers

TOKEN = "test-token-0123456789abcdef"


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(self._path)
        self.sock = sock


class AdminServer:
    """One target process; ``api()`` talks to its Unix socket, ``http()`` to its TCP listener."""

    def __init__(self, folder: Path, targets_toml: str, admin_extra: str = "") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.sockdir = Path(tempfile.mkdtemp(prefix="cis-adm-"))
        self.socket = self.sockdir / "admin.sock"
        self.admin_port = peers.free_port()
        self.config = folder / "cistern.toml"
        self.log_path = folder / "cistern.log"
        self.config.write_text(
            f'[admin]\nsocket = "{self.socket}"\nlisten = "127.0.0.1:{self.admin_port}"\ntoken = "{TOKEN}"\n'
            + admin_extra
            + "\n"
            + targets_toml
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.iscsi_port = 0  # the test's iSCSI portal port, for its own use

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cistern", "-v", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"cistern serve exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            try:
                self.api("GET", "/api/_ping")
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.proc = None
        return proc.returncode

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _call(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        data = None
        if isinstance(body, bytes):  # raw bytes as they are (hostile bodies)
            data = body
            headers = {**headers, "Content-Type": "application/json"}
        elif body is not None:
            data = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            conn.request(method, path, body=data, headers=headers)
            rsp = conn.getresponse()
            raw = rsp.read()
        finally:
            conn.close()
        ctype = rsp.getheader("Content-Type", "")
        return rsp.status, (json.loads(raw) if "json" in ctype else raw.decode())

    def api(self, method: str, path: str, body: Any = None, *, expect: int | None = 200) -> Any:
        """A request on the Unix socket; asserts the status when ``expect`` is given."""
        status, answer = self._call(_Unix(str(self.socket)), method, path, body, {})
        if expect is not None:
            assert status == expect, f"{method} {path}: HTTP {status}: {answer}"
        return answer if expect is not None else (status, answer)

    def http(self, method: str, path: str, body: Any = None, *, token: bool = False) -> tuple[int, Any]:
        """A request on the TCP listener, with the bearer token when ``token``."""
        headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=60)
        return self._call(conn, method, path, body, headers)

    def metrics(self) -> str:
        status, text = self.http("GET", "/metrics")
        assert status == 200
        return str(text)

    def url(self, port: int, iqn: str, lun: int) -> str:
        return f"iscsi://127.0.0.1:{port}/{iqn}/{lun}"


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name{labels}`` in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.contextmanager
def one_target_server(folder: Path, iqn: str, lun_toml: str) -> Iterator[AdminServer]:
    """A started :class:`AdminServer` in a fresh ``folder`` serving one open target ``iqn`` on a free
    127.0.0.1 port (``iscsi_port``) with ``lun_toml`` as its ``[[targets.luns]]`` body; stopped, and its
    socket directory removed, afterwards."""
    shutil.rmtree(folder, ignore_errors=True)
    port = peers.free_port()
    toml = f'[[targets]]\nname = "{iqn}"\nportals = ["127.0.0.1:{port}"]\nopen = true\n\n[[targets.luns]]\n{lun_toml}'
    srv = AdminServer(folder, toml)
    srv.iscsi_port = port
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.sockdir, ignore_errors=True)
