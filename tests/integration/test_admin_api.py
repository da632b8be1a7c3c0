"""The admin API against its own OpenAPI description (issue 11, "Must show" 5): schemathesis generates
requests for every operation (bounded examples) and no answer may be a server error (5xx); the token
rules of the TCP listener and the named error bodies are checked directly.  Its own server: the
generated requests may add and remove objects."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from admin_proc import TOKEN, AdminServer

pytestmark = [pytest.mark.peers, pytest.mark.timeout(300)]

IQN = "iqn.2026-11.org.cistern.test:api"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test_admin_api"


@pytest.fixture(scope="module")
def server() -> Iterator[AdminServer]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    port = peers.free_port()
    toml = (
        f'[[targets]]\nname = "{IQN}"\nportals = ["127.0.0.1:{port}"]\nopen = true\n\n'
        '[[targets.luns]]\nlun = 0\nbackend = "file"\npath = "lun0.img"\nsize = "16M"\n'
    )
    srv = AdminServer(ARTIFACTS, toml)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.sockdir, ignore_errors=True)


def test_tcp_listener_token_rules(server: AdminServer) -> None:
    status, body = server.http("GET", "/api/targets")
    assert status == 200 and body["targets"][0]["name"] == IQN
    status, body = server.http("GET", "/api/config")  # holds CHAP secrets
    assert status == 401 and body["error"]["cause"] == "missing or wrong bearer token"
    status, body = server.http("POST", f"/api/targets/{IQN}/luns/0/resize", {"size": "32M"})
    assert status == 401
    status, body = server.http("POST", f"/api/targets/{IQN}/luns/0/resize", {"size": "8M"}, token=True)
    assert status == 409 and body["error"]["object"] == f"target {IQN} LUN 0", body
    assert "shrinking" in body["error"]["cause"]
    status, body = server.http("DELETE", "/api/targets/iqn.2026-11.org.example:nothing", token=True)
    assert status == 404 and body["error"] == {
        "object": "target iqn.2026-11.org.example:nothing",
        "cause": "no such target",
        "issues": ["target iqn.2026-11.org.example:nothing: no such target"],
    }
    status, body = server.http("POST", "/api/targets", b"not json", token=True)
    assert status == 400 and body["error"]["object"] == "request body", body


def test_schemathesis_finds_no_server_error(server: AdminServer) -> None:
    st = peers.require_tool("st")
    base = f"http://127.0.0.1:{server.admin_port}"
    run = subprocess.run(
        [
            st,
            "run",
            f"{base}/api/openapi.json",
            "--url",
            base,
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "11",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "30",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    (ARTIFACTS / "schemathesis.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in server.log_path.read_text(errors="replace")
