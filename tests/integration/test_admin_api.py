"""The admin API against its own OpenAPI description (issue 11, "Must show" 5): schemathesis generates
requests for every operation (bounded examples) and no answer may be a server error (5xx); the token
rules of the TCP listener and the named error bodies are checked directly.  Its own server: the
generated requests may add and remove objects."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peers
import pytest
from admin_proc import TOKEN, AdminServer, metric_value, one_target_server

pytestmark = [pytest.mark.peers, pytest.mark.timeout(300)]

IQN = "iqn.2026-11.org.cistern.test:api"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test_admin_api"


@pytest.fixture(scope="module")
def server() -> Iterator[AdminServer]:
    lun = 'lun = 0\nbackend = "file"\npath = "lun0.img"\nsize = "16M"\n'
    with one_target_server(ARTIFACTS, IQN, lun) as srv:
        yield srv


def test_tcp_listener_token_rules(server: AdminServer) -> None:
    status, body = server.http("GET", "/api/targets")
    assert status == 200 and body["targets"][0]["name"] == IQN
    status, body = server.http("GET", "/api/config")  # holds CHAP secrets
    assert status == 401 and body["error"]["cause"] == "missing or wrong bearer token"
    status, body = server.http("POST", f"/api/targets/{IQN}/luns/0/resize", {"size": "32M"})
    assert status == 401
    status, body = server.http("POST", f"/api/targets/{IQN}/luns/0/resize", {"size": "8M"}, token=True)
    # refused by the host checks (a size below the file's hides data) before the live check (shrinking)
    assert status in (400, 409) and body["error"]["object"] == f"target {IQN} LUN 0", body
    assert "would hide data" in body["error"]["cause"] or "shrinking" in body["error"]["cause"], body
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
        cwd=ARTIFACTS,  # schemathesis keeps a .schemathesis/ cache in its working directory
    )
    (ARTIFACTS / "schemathesis.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def _cli(server: AdminServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cistern", "admin", "--socket", str(server.socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_tables_json_and_named_errors(server: AdminServer) -> None:
    server.api("POST", "/api/config/reload")  # whatever schemathesis applied, back to the file
    lun = str(ARTIFACTS / "cli-lun5.img")
    added = _cli(server, "lun", "add", IQN, "5", "--path", lun, "--size", "4M")
    assert added.returncode == 0 and f"add      target {IQN} LUN 5" in added.stdout, added
    grown = _cli(server, "--json", "lun", "resize", IQN, "5", "8M")
    assert grown.returncode == 0 and json.loads(grown.stdout)["applied"][0]["action"] == "resize"
    listing = _cli(server, "--json", "targets")
    luns = {entry["lun"]: entry for entry in json.loads(listing.stdout)["targets"][0]["luns"]}
    assert luns[5]["size_bytes"] == 8 * 1024 * 1024
    table = _cli(server, "targets")
    assert table.returncode == 0 and IQN in table.stdout and "8.0 MiB" in table.stdout
    shrink = _cli(server, "lun", "resize", IQN, "5", "1M")
    assert shrink.returncode == 1
    assert shrink.stderr.strip().splitlines()[-1].startswith(f"Error: target {IQN} LUN 5: size:"), shrink
    missing = _cli(server, "lun", "remove", IQN, "77")
    assert missing.returncode == 1 and f"target {IQN} LUN 77: no such LUN" in missing.stderr
    removed = _cli(server, "lun", "remove", IQN, "5")
    assert removed.returncode == 0, removed
    diff_file = ARTIFACTS / "same.toml"
    diff_file.write_text(server.api("GET", "/api/config?format=toml"))
    same = _cli(server, "diff", str(diff_file))
    assert same.returncode == 0 and same.stdout.strip() == "no difference", same


def test_refused_login_is_counted_and_shown(server: AdminServer) -> None:
    server.api("POST", f"/api/targets/{IQN}/acl", None, expect=None)  # (open target: refused, 409)
    body = {"name": IQN + "-closed", "portals": [f"127.0.0.1:{server.iscsi_port}"], "acl": [IQN + ":nobody"]}
    server.api("POST", "/api/targets", body, expect=201)
    refused = subprocess.run(
        ["iscsi-inq", f"iscsi://127.0.0.1:{server.iscsi_port}/{IQN}-closed/0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
    text = server.metrics()
    assert (
        metric_value(text, "cistern_logins_total", target=IQN + "-closed", result="authorization_failure")
        == 1
    )
    events = server.api("GET", "/api/events")["events"]
    assert any(e["kind"] == "refused" and "authorization failure" in e["message"] for e in events), events


def test_chap_alua_and_session_end_live(server: AdminServer) -> None:
    import asyncio

    from cistern.initiator.client import connect
    from cistern.initiator.errors import LoginError

    url = f"iscsi://127.0.0.1:{server.iscsi_port}/{IQN}/0"

    async def scenario() -> None:
        old = await connect(url, initiator_name="iqn.2026-11.org.cistern.test:old")
        try:
            tsih = next(
                s["tsih"]
                for s in server.api("GET", "/api/sessions")["sessions"]
                if s["initiator"].endswith(":old")
            )
            chap = {"chap": {"username": "admin-user", "secret": "a-secret-of-16-chars"}}
            await asyncio.to_thread(server.api, "PUT", f"/api/targets/{IQN}/auth", {"auth": chap})
            # new logins need CHAP now; the existing session is kept and still works
            try:
                await connect(url, initiator_name="iqn.2026-11.org.cistern.test:new")
                raise AssertionError("a login without CHAP was admitted")
            except LoginError:
                pass
            new = await connect(
                url,
                initiator_name="iqn.2026-11.org.cistern.test:new",
                chap=("admin-user", "a-secret-of-16-chars"),
            )
            await new.logout()
            assert await old.report_luns()
            # ALUA: the portal group goes standby; the view says so
            await asyncio.to_thread(
                server.api, "PUT", f"/api/targets/{IQN}/portal_groups/1/alua", {"state": "standby"}
            )
            view = server.api("GET", f"/api/targets/{IQN}")
            assert view["portal_groups"][0]["alua_state"] == "standby"
            await asyncio.to_thread(
                server.api, "PUT", f"/api/targets/{IQN}/portal_groups/1/alua", {"state": "active/optimized"}
            )
            # ending the session: it leaves the table
            await asyncio.to_thread(server.api, "DELETE", f"/api/sessions/{tsih}")
            for _ in range(100):
                if all(s["tsih"] != tsih for s in server.api("GET", "/api/sessions")["sessions"]):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"session {tsih} is still there")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 5)
            await asyncio.to_thread(server.api, "PUT", f"/api/targets/{IQN}/auth", {"auth": None})

    asyncio.run(scenario())


def test_hostile_bodies_get_named_errors(server: AdminServer) -> None:
    for body in (b"[" * 100_000, b'{"toml": "' + b"a = [" * 5_000 + b'"}', b"\xff\xfe", b"{" * 3):
        status, answer = server.api("POST", "/api/config/apply", body, expect=None)
        assert status == 400 and answer["error"]["object"] in ("request body", "config"), (status, answer)
    status, answer = server.api("POST", "/api/config/apply", b"x" * (2 << 20), expect=None)
    assert status == 413 and answer["error"]["object"] == "request body", (status, answer)
    assert server.api("GET", "/api/_ping") == {"status": "ok"}


def test_tls_listener(tmp_path: Path) -> None:
    """The TCP listener with ``tls_cert``/``tls_key`` from ``cistern tls``: a client holding the CA verifies
    the server certificate (one without it refuses the server), the token rules hold over TLS, and a
    plaintext HTTP request to the TLS port gets no HTTP answer; the server keeps serving."""
    import http.client
    import ssl

    pki = tmp_path / "pki"
    for args in (
        ["ca", "--name", "admin test CA"],
        ["target", "admin.cistern.test", "--host", "127.0.0.1", "--out", "admin"],
    ):
        made = subprocess.run(
            [sys.executable, "-m", "cistern", "tls", *args, "--dir", str(pki)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
    port = peers.free_port()
    toml = (
        f'[[targets]]\nname = "{IQN}-tls"\nportals = ["127.0.0.1:{port}"]\nopen = true\n\n'
        '[[targets.luns]]\nlun = 0\nbackend = "memory"\nsize = "1M"\n'
    )
    extra = f'tls_cert = "{pki / "admin.pem"}"\ntls_key = "{pki / "admin.key"}"\n'
    srv = AdminServer(ARTIFACTS / "tls", toml, extra)
    srv.start()
    try:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))

        def https(method: str, path: str, body: object = None, token: bool = False) -> tuple[int, Any]:
            conn = http.client.HTTPSConnection("127.0.0.1", srv.admin_port, timeout=30, context=trusted)
            headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
            return srv._call(conn, method, path, body, headers)

        status, body = https("GET", "/api/targets")
        assert status == 200 and body["targets"][0]["name"] == IQN + "-tls", body
        sock = ssl.create_connection(("127.0.0.1", srv.admin_port), timeout=30)
        with trusted.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert ("IP Address", "127.0.0.1") in tls.getpeercert()["subjectAltName"]
        # the token rules are the same over TLS
        assert https("GET", "/api/config")[0] == 401
        status, body = https("POST", f"/api/targets/{IQN}-tls/luns", {"lun": 1, "backend": "memory", "size": "1M"})
        assert status == 401 and body["error"]["cause"] == "missing or wrong bearer token", body
        status, body = https("POST", f"/api/targets/{IQN}-tls/luns", {"lun": 1, "backend": "memory", "size": "1M"}, True)
        assert status == 201 and body["applied"][0]["action"] == "add", body
        # a client without the CA does not accept the server's certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            conn = http.client.HTTPSConnection(
                "127.0.0.1", srv.admin_port, timeout=30, context=ssl.create_default_context()
            )
            try:
                conn.request("GET", "/api/_ping")
            finally:
                conn.close()
        # plaintext HTTP on the TLS port: no HTTP answer at all
        plain = http.client.HTTPConnection("127.0.0.1", srv.admin_port, timeout=30)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            try:
                plain.request("GET", "/api/targets")
                plain.getresponse().read()
            finally:
                plain.close()
        # the CLI verifies with --ca, and refuses the server without it
        cli = [sys.executable, "-m", "cistern", "admin", "--url", f"https://127.0.0.1:{srv.admin_port}"]
        listing = subprocess.run(
            [*cli, "--ca", str(pki / "ca.pem"), "--token", TOKEN, "--json", "targets"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        assert [lun["lun"] for lun in json.loads(listing.stdout)["targets"][0]["luns"]] == [0, 1]
        untrusted = subprocess.run([*cli, "targets"], capture_output=True, text=True, timeout=60)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr
        assert srv.api("GET", "/api/_ping") == {"status": "ok"}
    finally:
        srv.stop()
        shutil.rmtree(srv.sockdir, ignore_errors=True)
    assert "Traceback" not in srv.log_path.read_text(errors="replace")
