"""``cistern admin ...``: change a running target through its admin API (Unix socket by default).

    cistern admin sessions                         initiator, ISID, TSIH, portal, connections, keys, bytes
    cistern admin targets
    cistern admin lun add TARGET LUN --backend file --path P --size 1G
    cistern admin lun remove TARGET LUN
    cistern admin lun resize TARGET LUN SIZE
    cistern admin lun rescan TARGET LUN           (a block device that grew)
    cistern admin acl add|remove TARGET INITIATOR [--end-sessions]
    cistern admin portal add|remove TARGET HOST:PORT [--tag N]
    cistern admin target add NAME --portal HOST:PORT (--open | --acl IQN ...)
    cistern admin target remove NAME
    cistern admin alua TARGET TAG STATE
    cistern admin session kill TSIH
    cistern admin save | reload | diff FILE | apply FILE

``--json`` prints the API's JSON answer; errors print one ``error: OBJECT: cause`` line each and exit 1.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cistern.config.admin import default_socket_path
from cistern.config.sizes import human_size

TIMEOUT = 60.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class AdminClient:
    """A small HTTP client for the admin API on a Unix socket or a TCP URL (with an optional token)."""

    def __init__(
        self,
        socket_path: Path | None,
        url: str | None,
        token: str | None,
        insecure: bool,
        ca: Path | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.url = urllib.parse.urlsplit(url) if url else None
        self.token = token
        self.insecure = insecure
        self.ca = ca

    def _connection(self) -> http.client.HTTPConnection:
        if self.url is None:
            path = self.socket_path or default_socket_path()
            return _UnixConnection(str(path), TIMEOUT)
        host, port = self.url.hostname or "127.0.0.1", self.url.port
        if self.url.scheme == "https":
            try:
                ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)
            except (OSError, ssl.SSLError) as exc:
                raise click.ClickException(f"--ca {self.ca}: cannot load the CA certificate: {exc}") from None
            if self.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(host, port or 443, timeout=TIMEOUT, context=ctx)
        return http.client.HTTPConnection(host, port or 80, timeout=TIMEOUT)

    def where(self) -> str:
        return self.url.geturl() if self.url else f"unix:{self.socket_path or default_socket_path()}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; returns the decoded JSON answer or raises ClickException naming the cause."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            rsp = conn.getresponse()
            raw = rsp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise click.ClickException(f"cannot reach the admin API at {self.where()}: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise click.ClickException(f"{self.where()} answered HTTP {rsp.status} without JSON") from None
        if rsp.status >= 400:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            issues = error.get("issues") or [f"{error.get('object', path)}: {error.get('cause', rsp.reason)}"]
            for issue in issues[:-1]:
                click.echo(f"error: {issue}", err=True)
            raise click.ClickException(str(issues[-1]))
        return answer


def _client(ctx: click.Context) -> AdminClient:
    client: AdminClient = ctx.obj["admin_client"]
    return client


def _json_mode(ctx: click.Context) -> bool:
    return bool(ctx.obj.get("admin_json"))


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _print_report(ctx: click.Context, answer: Any) -> None:
    if _json_mode(ctx):
        click.echo(json.dumps(answer, indent=2))
        return
    applied = answer.get("applied", [])
    for change in applied:
        click.echo(f"{change['action']:8} {change['object']}: {change['detail']}")
    for change in answer.get("restart_required", []):
        click.echo(f"restart  {change['object']}: {change['detail']}")
    if not applied and not answer.get("restart_required"):
        click.echo("no change")


def _path(target: str, *parts: object) -> str:
    return "/api/targets/" + "/".join(urllib.parse.quote(str(p), safe="") for p in (target, *parts))


@click.group("admin")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Admin Unix socket [default: the server's default socket].",
)
@click.option("--url", default=None, help="Admin HTTP URL instead of the socket, e.g. http://127.0.0.1:9470.")
@click.option(
    "--token",
    envvar="CISTERN_ADMIN_TOKEN",
    default=None,
    help="Bearer token for --url [$CISTERN_ADMIN_TOKEN].",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With an https URL: the CA certificate that signed the server's (e.g. 'cistern tls ca' output).",
)
@click.option("--insecure", is_flag=True, help="With an https URL: do not verify the certificate.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
@click.pass_context
def admin_group(
    ctx: click.Context,
    socket_path: Path | None,
    url: str | None,
    token: str | None,
    ca: Path | None,
    insecure: bool,
    as_json: bool,
) -> None:
    """Inspect and change a running target without restarting it."""
    if url is not None and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    ctx.obj = {"admin_client": AdminClient(socket_path, url, token, insecure, ca), "admin_json": as_json}


@admin_group.command("sessions")
@click.pass_context
def sessions(ctx: click.Context) -> None:
    """List sessions: initiator, ISID, TSIH, portal, connections, negotiated keys, bytes, commands in flight."""
    answer = _client(ctx).call("GET", "/api/sessions")
    if _json_mode(ctx):
        click.echo(json.dumps(answer, indent=2))
        return
    table = Table(title="Sessions")
    for column in (
        "TSIH",
        "Initiator",
        "ISID",
        "Target",
        "Portal",
        "Connections",
        "Keys",
        "Read",
        "Written",
        "In flight",
    ):
        table.add_column(column, overflow="fold")
    for s in answer["sessions"]:
        p = s["params"]
        keys = (
            f"HeaderDigest={'CRC32C' if p.get('header_digest') else 'None'} "
            f"DataDigest={'CRC32C' if p.get('data_digest') else 'None'}\n"
            f"MaxBurstLength={p.get('max_burst_length')} FirstBurstLength={p.get('first_burst_length')}\n"
            f"InitialR2T={'Yes' if p.get('initial_r2t') else 'No'} ImmediateData={'Yes' if p.get('immediate_data') else 'No'}"
        )
        conns = "\n".join(f"{c['cid']}: {c['peer']} -> {c['portal']}" for c in s["connections"])
        table.add_row(
            str(s["tsih"]),
            s["initiator"],
            s["isid"],
            s["target"] or "discovery",
            "\n".join(s.get("portals", [])),
            conns,
            keys,
            human_size(s["read_bytes"]),
            human_size(s["write_bytes"]),
            str(s["in_flight"]),
        )
    _console().print(table)


@admin_group.command("targets")
@click.pass_context
def targets(ctx: click.Context) -> None:
    """List targets, their portal groups, access and LUNs."""
    answer = _client(ctx).call("GET", "/api/targets")
    if _json_mode(ctx):
        click.echo(json.dumps(answer, indent=2))
        return
    table = Table(title="Targets", show_lines=True)
    for column in ("Target", "Portal groups", "Access", "LUNs", "Sessions"):
        table.add_column(column, overflow="fold")
    for t in answer["targets"]:
        groups = "\n".join(
            f"{g['tag']}: {', '.join(g['portals'])} [{g['alua_state']}]" for g in t["portal_groups"]
        )
        luns = "\n".join(f"{lun['lun']}: {_lun_text(lun)}" for lun in t["luns"])
        access = "open" if t["access"] == "open" else "\n".join(t["acl"])
        table.add_row(t["name"], groups, access, luns or "-", str(len(t["sessions"])))
    _console().print(table)


def _lun_text(lun: dict[str, Any]) -> str:
    kind = str(lun.get("kind", "device"))
    summary = f" ({lun['summary']})" if lun.get("summary") else ""
    if lun.get("size_bytes") is None:
        return kind + summary
    return f"{human_size(lun['size_bytes'])} {lun['path'] or kind}{summary}"


@admin_group.group("lun")
def lun_group() -> None:
    """Add, remove and resize LUNs of a running target."""


@lun_group.command("add")
@click.argument("target")
@click.argument("lun", type=click.IntRange(0, 16383))
@click.option(
    "--backend",
    type=click.Choice(["file", "memory", "block", "tape", "changer", "ses"]),
    default="file",
    show_default=True,
    help="RAID LUNs (a [raid] table) go through 'apply FILE'.",
)
@click.option("--path", default=None, help="Backing file or device.")
@click.option("--size", default=None, help="Size (bytes or K/M/G/T); creates a missing file.")
@click.option("--block-size", type=click.Choice(["512", "4096"]), default=None, help="[default: 512]")
@click.option("--read-only", is_flag=True)
@click.option("--thin", is_flag=True)
@click.option("--library", default=None, help="Tape library directory (a changer, or a standalone drive).")
@click.option("--cartridge", default=None, help="Barcode a standalone tape drive loads.")
@click.option("--slots", type=click.IntRange(1, 4096), default=None, help="Storage slots of a changer.")
@click.option("--cartridges", type=click.IntRange(0, 4096), default=None, help="Cartridges a new changer creates.")
@click.pass_context
def lun_add(
    ctx: click.Context,
    target: str,
    lun: int,
    backend: str,
    path: str | None,
    size: str | None,
    block_size: str | None,
    read_only: bool,
    thin: bool,
    library: str | None,
    cartridge: str | None,
    slots: int | None,
    cartridges: int | None,
) -> None:
    """Add LUN to TARGET (initiators get REPORTED LUNS DATA HAS CHANGED).  A changer comes with its drives:
    add them in one 'apply FILE' (a changer needs at least one drive)."""
    body: dict[str, Any] = {"lun": lun, "backend": backend}
    if block_size is not None:
        body["block_size"] = int(block_size)
    for key, value in (("path", path), ("library", library)):
        if value is not None:
            body[key] = str(Path(value).absolute())
    for key, given in (("size", size), ("cartridge", cartridge), ("slots", slots), ("cartridges", cartridges)):
        if given is not None:
            body[key] = given
    if read_only:
        body["read_only"] = True
    if thin:
        body["thin"] = True
    _print_report(ctx, _client(ctx).call("POST", _path(target, "luns"), body))


@lun_group.command("remove")
@click.argument("target")
@click.argument("lun", type=click.IntRange(0, 16383))
@click.pass_context
def lun_remove(ctx: click.Context, target: str, lun: int) -> None:
    """Remove LUN from TARGET (in-flight commands finish first)."""
    _print_report(ctx, _client(ctx).call("DELETE", _path(target, "luns", lun)))


@lun_group.command("resize")
@click.argument("target")
@click.argument("lun", type=click.IntRange(0, 16383))
@click.argument("size")
@click.pass_context
def lun_resize(ctx: click.Context, target: str, lun: int, size: str) -> None:
    """Grow a file or memory LUN to SIZE, or raise a block LUN's size cap (initiators get CAPACITY DATA
    HAS CHANGED; shrinking is refused)."""
    _print_report(ctx, _client(ctx).call("POST", _path(target, "luns", lun, "resize"), {"size": size}))


@lun_group.command("rescan")
@click.argument("target")
@click.argument("lun", type=click.IntRange(0, 16383))
@click.pass_context
def lun_rescan(ctx: click.Context, target: str, lun: int) -> None:
    """Serve the new size of a block device (or file) that grew (losetup -c, lvextend)."""
    _print_report(ctx, _client(ctx).call("POST", _path(target, "luns", lun, "rescan")))


@admin_group.group("portal")
def portal_group() -> None:
    """Serve a target on more portals, or on fewer (open connections stay)."""


@portal_group.command("add")
@click.argument("target")
@click.argument("portal")
@click.option("--tag", type=click.IntRange(1, 65535), default=1, show_default=True, help="Portal group.")
@click.pass_context
def portal_add(ctx: click.Context, target: str, portal: str, tag: int) -> None:
    """Listen for TARGET on PORTAL (HOST:PORT) too, in portal group --tag."""
    _print_report(ctx, _client(ctx).call("POST", _path(target, "portal_groups", tag, "portals"), {"portal": portal}))


@portal_group.command("remove")
@click.argument("target")
@click.argument("portal")
@click.option("--tag", type=click.IntRange(1, 65535), default=1, show_default=True, help="Portal group.")
@click.pass_context
def portal_remove(ctx: click.Context, target: str, portal: str, tag: int) -> None:
    """Stop serving TARGET on PORTAL (new logins there are refused; sessions on it stay)."""
    _print_report(ctx, _client(ctx).call("DELETE", _path(target, "portal_groups", tag, "portals", portal)))


@admin_group.group("acl")
def acl_group() -> None:
    """Allow or disallow initiators (new logins)."""


@acl_group.command("add")
@click.argument("target")
@click.argument("initiator")
@click.pass_context
def acl_add(ctx: click.Context, target: str, initiator: str) -> None:
    """Allow INITIATOR to log in to TARGET."""
    _print_report(ctx, _client(ctx).call("POST", _path(target, "acl"), {"initiator": initiator}))


@acl_group.command("remove")
@click.argument("target")
@click.argument("initiator")
@click.option("--end-sessions", is_flag=True, help="Also end the sessions INITIATOR has now.")
@click.pass_context
def acl_remove(ctx: click.Context, target: str, initiator: str, end_sessions: bool) -> None:
    """Disallow INITIATOR (its current sessions stay unless --end-sessions)."""
    query = "?end_sessions=true" if end_sessions else ""
    _print_report(ctx, _client(ctx).call("DELETE", _path(target, "acl", initiator) + query))


@admin_group.group("target")
def target_group() -> None:
    """Add or remove targets."""


@target_group.command("add")
@click.argument("name")
@click.option("--portal", "portals", multiple=True, help="HOST:PORT (repeatable) [default: 127.0.0.1:3260].")
@click.option("--open", "is_open", is_flag=True, help="Admit every initiator.")
@click.option("--acl", "acl", multiple=True, help="Initiator allowed to log in (repeatable).")
@click.pass_context
def target_add(
    ctx: click.Context, name: str, portals: tuple[str, ...], is_open: bool, acl: tuple[str, ...]
) -> None:
    """Add a target NAME (LUNs with `lun add`)."""
    body: dict[str, Any] = {"name": name}
    if portals:
        body["portals"] = list(portals)
    if is_open:
        body["open"] = True
    if acl:
        body["acl"] = list(acl)
    _print_report(ctx, _client(ctx).call("POST", "/api/targets", body))


@target_group.command("remove")
@click.argument("name")
@click.pass_context
def target_remove(ctx: click.Context, name: str) -> None:
    """Remove target NAME (its sessions are logged out)."""
    _print_report(ctx, _client(ctx).call("DELETE", _path(name)))


@admin_group.command("alua")
@click.argument("target")
@click.argument("tag", type=click.IntRange(1, 65535))
@click.argument("state")
@click.pass_context
def alua(ctx: click.Context, target: str, tag: int, state: str) -> None:
    """Move portal group TAG of TARGET to ALUA STATE (active/optimized, standby, ...)."""
    _print_report(
        ctx, _client(ctx).call("PUT", _path(target, "portal_groups", tag, "alua"), {"state": state})
    )


@admin_group.group("session")
def session_group() -> None:
    """Act on one session."""


@session_group.command("kill")
@click.argument("tsih", type=click.IntRange(1, 65535))
@click.pass_context
def session_kill(ctx: click.Context, tsih: int) -> None:
    """End session TSIH (logout request, then its connections close)."""
    answer = _client(ctx).call("DELETE", f"/api/sessions/{tsih}")
    click.echo(json.dumps(answer, indent=2) if _json_mode(ctx) else f"session {tsih} ended")


@admin_group.command("save")
@click.pass_context
def save(ctx: click.Context) -> None:
    """Write the running config to the file the server was started from (with rotated backups)."""
    answer = _client(ctx).call("POST", "/api/config/save")
    click.echo(json.dumps(answer, indent=2) if _json_mode(ctx) else f"saved to {answer['saved']}")


@admin_group.command("reload")
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read the server's config file and apply it (as SIGHUP does)."""
    _print_report(ctx, _client(ctx).call("POST", "/api/config/reload"))


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None


@admin_group.command("diff")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def diff(ctx: click.Context, file: Path) -> None:
    """Show what applying FILE to the running server would change."""
    answer = _client(ctx).call("POST", "/api/config/diff", {"toml": _read(file)})
    if _json_mode(ctx):
        click.echo(json.dumps(answer, indent=2))
        return
    for change in answer["changes"]:
        click.echo(f"{change['action']:8} {change['object']}: {change['detail']}")
    if not answer["changes"]:
        click.echo("no difference")


@admin_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--end-sessions", is_flag=True, help="End sessions no longer admitted by the new ACL/CHAP.")
@click.pass_context
def apply(ctx: click.Context, file: Path, end_sessions: bool) -> None:
    """Apply FILE to the running server live (nothing is applied if any object is invalid)."""
    body = {"toml": _read(file), "end_sessions": end_sessions}
    _print_report(ctx, _client(ctx).call("POST", "/api/config/apply", body))


def register(group: click.Group) -> None:
    """Add ``cistern admin`` to the top-level command group."""
    group.add_command(admin_group)
