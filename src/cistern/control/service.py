"""``cistern serve`` with live administration: the target server, its admin API and SIGHUP reloads.

:func:`serve` has the signature :mod:`cistern.cli.runner` expects (``config, *, on_ready``) plus the path
of the config file (by default the one the config was loaded from), which SIGHUP and ``POST /api/config/reload`` re-read and ``config save`` writes.
SIGHUP applies what can be applied live, logs what needs a restart, and refuses a file that does not
validate or cannot be applied, keeping the running config (with an ERROR log line naming the cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from cistern.config.admin import AdminConfig
from cistern.config.model import Config
from cistern.control.listeners import AdminListeners
from cistern.control.live import AdminError, Controller
from cistern.target.monitor import Monitor
from cistern.target.server import build_server

log = logging.getLogger("cistern.control")


async def reload_on_signal(controller: Controller) -> None:
    """What SIGHUP does (see the module docstring); never raises."""
    path = controller.config_path
    log.warning("SIGHUP: reloading %s", path)
    controller.server.reload_tls()  # new certificate/key/CA/CRL for new TLS connections; sessions stay
    try:
        report = await controller.reload()
    except AdminError as exc:
        log.error("SIGHUP: %s is not applied; the running config stays: %s", path, "; ".join(exc.issues))
        return
    except Exception:
        log.exception("SIGHUP: reloading %s failed", path)
        return
    log.warning("SIGHUP: %s applied: %d change(s) live", path, len(report.applied))
    for change in report.restart:
        log.warning("SIGHUP: %s needs a restart: %s", change.obj, change.detail)


class _ErrorEvents(logging.Handler):
    """ERROR log records of cistern become dashboard events (kind ``error``)."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__(logging.ERROR)
        self.monitor = monitor

    def emit(self, record: logging.LogRecord) -> None:
        self.monitor.event("error", record.getMessage())


async def serve(
    config: Config,
    *,
    on_ready: Callable[[list[tuple[str, int]]], None] | None = None,
    config_path: Path | None = None,
) -> None:
    """Serve ``config`` with its admin API until cancelled, then shut down cleanly.  ``config_path``
    (default: the file :func:`~cistern.config.model.load_config` read ``config`` from) is what SIGHUP
    re-reads and ``config save`` writes."""
    if config_path is None:
        config_path = config.source_path
    server = build_server(config)
    controller = Controller(server, config, config_path)
    admin = AdminListeners(controller, config.admin or AdminConfig())
    loop = asyncio.get_running_loop()
    errors = _ErrorEvents(server.monitor)
    logging.getLogger("cistern").addHandler(errors)
    hup = False
    reloads: set[asyncio.Task[None]] = set()
    try:
        bound = await server.start()
        await admin.start()
        if admin.socket_path is not None:
            log.info("admin API on unix:%s", admin.socket_path)
        if admin.tcp_address is not None:
            log.info("admin HTTP on %s:%d (metrics, dashboard)", *admin.tcp_address)
        if config_path is not None:

            def on_hup() -> None:
                task = loop.create_task(reload_on_signal(controller))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, on_hup)
                hup = True
        if on_ready is not None:
            on_ready(bound)
        await asyncio.Event().wait()
    finally:
        logging.getLogger("cistern").removeHandler(errors)
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.shield(admin.stop())
        await asyncio.shield(server.stop())
        await asyncio.shield(controller.wait_drained())
