"""The admin HTTP API, ``/metrics`` and the dashboard, served by aiohttp from the target's own process.

Two listeners (bound at start by :mod:`cistern.control.listeners`, which imports this module, and so
aiohttp, only when the first admin client connects) share one application:

* a Unix socket (on by default, mode 0600 in a 0700 directory): file permissions are the access control,
  so every request on it may read and change;
* an optional TCP listener (``[admin] listen``, TLS with ``tls_cert``/``tls_key``): the dashboard,
  ``/metrics`` and the read-only API for anyone who can reach it; the running config (it holds CHAP
  secrets) and every change need ``Authorization: Bearer TOKEN`` with the configured ``token``.

Every error answer is JSON ``{"error": {"object": ..., "cause": ..., "issues": [...]}}`` naming the object
and the cause.  The routes are described by the OpenAPI document at ``/api/openapi.json``
(:mod:`cistern.control.openapi`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import tomllib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cistern import __version__
from cistern.config.admin import AdminConfig
from cistern.control.live import AdminError, ApplyReport, Controller
from cistern.control.looplag import LoopLag
from cistern.control.metrics import CONTENT_TYPE, make_registry, render
from cistern.control.openapi import openapi_document
from cistern.control.views import session_view, sessions_view, stats_view, target_view, targets_view

log = logging.getLogger("cistern.control")

MAX_BODY = 1 << 20  # bytes of a request body
_TCP_KEY = web.AppKey("tcp", bool)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _OneLineBadRequests(logging.Filter):
    """aiohttp logs a malformed HTTP request (it already answered 400) with a traceback: make it one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "admin HTTP: refused a malformed request: %s"
            record.args = (" ".join(str(exc).split()),)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_OneLineBadRequests())


def _error(status: int, obj: str, cause: str, issues: list[str] | None = None) -> web.Response:
    body = {
        "error": {"object": obj, "cause": cause, "issues": issues or [f"{obj}: {cause}" if obj else cause]}
    }
    return web.json_response(body, status=status)


def _is_tcp(request: web.Request) -> bool:
    """True for the TCP listener (a sockname tuple); False for the Unix socket (a path)."""
    transport = request.transport
    return transport is None or isinstance(transport.get_extra_info("sockname"), tuple)


class AdminApp:
    """The aiohttp application of one server (see the module docstring).

    Built by :class:`~cistern.control.listeners.AdminListeners` when the first admin client connects:
    :meth:`setup` returns aiohttp's low-level server, the protocol factory of every admin connection;
    ``lag`` samples the loop since the server started (``started``, a ``time.time()``)."""

    def __init__(self, controller: Controller, admin: AdminConfig, lag: LoopLag, started: float) -> None:
        self.controller = controller
        self.admin = admin
        self.lag = lag
        self.registry = make_registry(controller.server, self.lag)
        self.started = started
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors, self._access])
        self._routes()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)

    # ---- lifecycle

    async def setup(self) -> web.Server:
        """Freeze the application; the answer makes a ``RequestHandler`` protocol per call."""
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        return server

    async def cleanup(self) -> None:
        """End the open admin connections (aiohttp's graceful shutdown) and the application."""
        await self._runner.cleanup()

    # ---- middlewares

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AdminError as exc:
            return web.json_response(exc.as_dict(), status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            cause = {404: "no such endpoint", 405: f"method {request.method} not allowed here"}.get(
                exc.status, exc.reason
            )
            return _error(exc.status, request.path, cause)
        except Exception as exc:  # a bug of ours: still a named JSON error, and a log line with the trace
            log.exception("admin API: %s %s failed", request.method, request.path)
            return _error(500, request.path, f"internal error: {type(exc).__name__}: {exc}")

    @web.middleware
    async def _access(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_tcp(request):
            public = request.method in ("GET", "HEAD") and request.path != "/api/config"
            if not public:
                token = self.admin.token
                if token is None:
                    return _error(
                        403, request.path, "needs the admin token, and none is set: use the admin Unix socket"
                    )
                given = request.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return _error(401, request.path, "missing or wrong bearer token")
        return await handler(request)

    # ---- routes

    def _routes(self) -> None:
        r = self.app.router
        r.add_get("/", self.dashboard)
        r.add_get("/dashboard.js", self.dashboard_js)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api", self.index)
        r.add_get("/api/_ping", self.ping)
        r.add_get("/api/openapi.json", self.openapi)
        r.add_get("/api/sysinfo", self.sysinfo)
        r.add_get("/api/config", self.config_get)
        r.add_post("/api/config/save", self.config_save)
        r.add_post("/api/config/diff", self.config_diff)
        r.add_post("/api/config/apply", self.config_apply)
        r.add_post("/api/config/reload", self.config_reload)
        r.add_get("/api/targets", self.targets)
        r.add_post("/api/targets", self.target_add)
        r.add_get("/api/targets/{target}", self.target)
        r.add_delete("/api/targets/{target}", self.target_remove)
        r.add_post("/api/targets/{target}/luns", self.lun_add)
        r.add_delete("/api/targets/{target}/luns/{lun}", self.lun_remove)
        r.add_post("/api/targets/{target}/luns/{lun}/resize", self.lun_resize)
        r.add_post("/api/targets/{target}/luns/{lun}/rescan", self.lun_rescan)
        r.add_post("/api/targets/{target}/acl", self.acl_add)
        r.add_delete("/api/targets/{target}/acl/{initiator}", self.acl_remove)
        r.add_put("/api/targets/{target}/auth", self.auth_set)
        r.add_put("/api/targets/{target}/portal_groups/{tag}/alua", self.alua_set)
        r.add_post("/api/targets/{target}/portal_groups/{tag}/portals", self.portal_add)
        r.add_delete("/api/targets/{target}/portal_groups/{tag}/portals/{portal}", self.portal_remove)
        r.add_get("/api/sessions", self.sessions)
        r.add_get("/api/sessions/{tsih}", self.session)
        r.add_delete("/api/sessions/{tsih}", self.session_kill)
        r.add_get("/api/stats", self.stats)
        r.add_get("/api/events", self.events)

    # ---- helpers

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AdminError("request body", f"not JSON: {exc}") from None
        except RecursionError:
            raise AdminError("request body", "JSON nested too deeply") from None
        except web.HTTPRequestEntityTooLarge:
            raise AdminError("request body", f"larger than {MAX_BODY} bytes", 413) from None
        if not isinstance(data, dict):
            raise AdminError("request body", f"must be a JSON object, not {type(data).__name__}")
        return data

    @staticmethod
    def _int(request: web.Request, name: str, obj: str, low: int, high: int) -> int:
        text = request.match_info[name]
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            raise AdminError(f"{obj} {text}", f"{name} must be a number in {low}..{high}", 404)
        return int(text)

    @staticmethod
    def _flag(request: web.Request, name: str) -> bool:
        value = request.query.get(name, "false").lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise AdminError(f"query parameter {name}", f"{value!r} is not true or false")
        return value in ("true", "1", "yes")

    @staticmethod
    def _report(report: ApplyReport, status: int = 200) -> web.Response:
        return web.json_response(report.as_dict(), status=status)

    def _new_config(self, body: dict[str, Any]) -> Any:
        text = body.get("toml")
        if not isinstance(text, str):
            raise AdminError("request body", 'needs "toml": the config file text')
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AdminError("config", f"not valid TOML: {exc}") from None
        except RecursionError:
            raise AdminError("config", "not valid TOML: nested too deeply") from None
        base = self.controller.config_path.parent if self.controller.config_path else None
        return self.controller.parse(data, base_dir=base)

    # ---- handlers: pages and metrics

    async def dashboard(self, request: web.Request) -> web.Response:
        text = resources.files("cistern.control").joinpath("static/index.html").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="text/html")

    async def dashboard_js(self, request: web.Request) -> web.Response:
        text = resources.files("cistern.control").joinpath("static/dashboard.js").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="application/javascript")

    async def metrics(self, request: web.Request) -> web.Response:
        body = render(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def index(self, request: web.Request) -> web.Response:
        routes = sorted(
            {
                f"{route.method} {route.resource.canonical}"
                for route in self.app.router.routes()
                if route.resource
            }
        )
        return web.json_response({"endpoints": [r for r in routes if not r.startswith("HEAD")]})

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(__version__))

    async def sysinfo(self, request: web.Request) -> web.Response:
        c = self.controller
        return web.json_response(
            {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_seconds": round(time.time() - self.started, 3),
                "config_path": str(c.config_path) if c.config_path else None,
                "targets": len(c.server.targets),
                "sessions": len(c.server.sessions),
                "token_configured": self.admin.token is not None,
            }
        )

    # ---- handlers: config

    async def config_get(self, request: web.Request) -> web.Response:
        if request.query.get("format") == "toml":
            return web.Response(text=self.controller.dump(), content_type="application/toml")
        return web.json_response(self.controller.config.dump())

    async def config_save(self, request: web.Request) -> web.Response:
        path = await self.controller.save()
        return web.json_response({"saved": str(path)})

    async def config_diff(self, request: web.Request) -> web.Response:
        new = self._new_config(await self._body(request))
        return web.json_response({"changes": [c.as_dict() for c in self.controller.plan(new)]})

    async def config_apply(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        end = body.get("end_sessions", False)
        if not isinstance(end, bool):
            raise AdminError("request body", "end_sessions must be true or false")
        new = self._new_config(body)
        return self._report(await self.controller.apply(new, end_sessions=end))

    async def config_reload(self, request: web.Request) -> web.Response:
        return self._report(await self.controller.reload())

    # ---- handlers: targets, LUNs, ACL, auth, ALUA

    async def targets(self, request: web.Request) -> web.Response:
        return web.json_response({"targets": targets_view(self.controller)})

    async def target(self, request: web.Request) -> web.Response:
        return web.json_response(target_view(self.controller, request.match_info["target"]))

    async def target_add(self, request: web.Request) -> web.Response:
        return self._report(await self.controller.target_add(await self._body(request)), 201)

    async def target_remove(self, request: web.Request) -> web.Response:
        return self._report(await self.controller.target_remove(request.match_info["target"]))

    async def lun_add(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return self._report(await self.controller.lun_add(request.match_info["target"], body), 201)

    async def lun_remove(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        lun = self._int(request, "lun", f"target {target} LUN", 0, 16383)
        return self._report(await self.controller.lun_remove(target, lun))

    async def lun_resize(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        lun = self._int(request, "lun", f"target {target} LUN", 0, 16383)
        size = (await self._body(request)).get("size")
        if isinstance(size, bool) or not isinstance(size, int | str):
            raise AdminError(f"target {target} LUN {lun}", 'needs "size": bytes or a size like "2G"')
        return self._report(await self.controller.lun_resize(target, lun, size))

    async def lun_rescan(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        lun = self._int(request, "lun", f"target {target} LUN", 0, 16383)
        return self._report(await self.controller.rescan(target, lun))

    async def acl_add(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        initiator = (await self._body(request)).get("initiator")
        if not isinstance(initiator, str):
            raise AdminError(f"target {target} ACL", 'needs "initiator": an iSCSI name')
        return self._report(await self.controller.acl_add(target, initiator), 201)

    async def acl_remove(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        end = self._flag(request, "end_sessions")
        return self._report(
            await self.controller.acl_remove(target, request.match_info["initiator"], end_sessions=end)
        )

    async def auth_set(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        body = await self._body(request)
        end = self._flag(request, "end_sessions")
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise AdminError(f"target {target} auth", '"auth" must be an object or null')
        return self._report(await self.controller.auth_set(target, auth, end_sessions=end))

    async def alua_set(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        tag = self._int(request, "tag", f"target {target} portal group", 1, 65535)
        state = (await self._body(request)).get("state")
        if not isinstance(state, str):
            raise AdminError(f"target {target} portal group {tag}", 'needs "state": an ALUA state name')
        return self._report(await self.controller.alua_set(target, tag, state))

    async def portal_add(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        tag = self._int(request, "tag", f"target {target} portal group", 1, 65535)
        portal = (await self._body(request)).get("portal")
        if not isinstance(portal, str):
            raise AdminError(f"target {target} portal group {tag}", 'needs "portal": "HOST:PORT"')
        return self._report(await self.controller.portal_add(target, tag, portal), 201)

    async def portal_remove(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        tag = self._int(request, "tag", f"target {target} portal group", 1, 65535)
        return self._report(await self.controller.portal_remove(target, tag, request.match_info["portal"]))

    # ---- handlers: sessions, stats, events

    async def sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": sessions_view(self.controller.server)})

    def _session_arg(self, request: web.Request) -> int:
        return self._int(request, "tsih", "session", 1, 65535)

    async def session(self, request: web.Request) -> web.Response:
        session = self.controller.session(self._session_arg(request))
        return web.json_response(session_view(session))

    async def session_kill(self, request: web.Request) -> web.Response:
        session = self.controller.session(self._session_arg(request))
        self.controller.kill_session(session)
        return web.json_response({"ended": session.tsih})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(stats_view(self.controller.server, self.lag))

    async def events(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.isascii() or not since.isdigit():
            raise AdminError("query parameter since", f"{since!r} is not an event number")
        events = self.controller.server.monitor.since(int(since))
        return web.json_response({"events": [e.as_dict() for e in events]})
