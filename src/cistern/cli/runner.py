"""Running the target server from the command line: an event loop (uvloop when installed), SIGINT/SIGTERM
handlers that cancel the serve task, and a clean return once the server has shut down.

SIGHUP no longer kills the server: until live reload lands it is logged and ignored (``reload_hook``
lets the reload code take it over). Under systemd ``Type=notify`` (``NOTIFY_SOCKET`` set), ``READY=1``
is sent once the portals listen and ``STOPPING=1`` when a signal starts the shutdown (sd_notify(3)
datagram protocol, stdlib only: :func:`sd_notify`).

The server is :func:`cistern.target.server.serve` ``(config, *, on_ready) -> None``: it runs until
cancelled, then logs sessions out and flushes. A second signal cancels again, interrupting a slow shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cistern import accel
from cistern.config.model import Config
from cistern.heap import keep_freed_memory

log = logging.getLogger(__name__)

BoundAddresses = list[tuple[str, int]]
OnReady = Callable[[BoundAddresses], None]


class ServeFn(Protocol):
    def __call__(self, config: Config, *, on_ready: OnReady | None = None) -> Awaitable[None]: ...


#: called on SIGHUP when set (the config reload); None: log that SIGHUP is ignored
reload_hook: Callable[[], None] | None = None


def sd_notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to systemd's ``NOTIFY_SOCKET``;
    False when not run by systemd or when the socket cannot be reached (never raises)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("sd_notify(%s) failed: %s", state, exc)
        return False
    return True


def _on_sighup() -> None:
    if reload_hook is not None:
        reload_hook()
        return
    log.warning("SIGHUP received: configuration reload is not available in this build; still serving")


def load_serve() -> ServeFn:
    """The server entry point, imported late so the CLI works while the target package is incomplete:
    the target server with its admin API and SIGHUP reloads (:mod:`cistern.control.service`)."""
    from cistern.control.service import serve

    return serve


async def serve_until_signalled(config: Config, serve: ServeFn, on_ready: OnReady | None = None) -> None:
    """Run ``serve`` until SIGINT or SIGTERM, then cancel it and wait for its clean shutdown."""
    loop = asyncio.get_running_loop()

    def ready(bound: BoundAddresses) -> None:
        if on_ready is not None:
            on_ready(bound)
        sd_notify("READY=1\nSTATUS=serving on " + ", ".join(f"{h}:{p}" for h, p in bound))

    task: asyncio.Future[None] = asyncio.ensure_future(serve(config, on_ready=ready))
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        name = signal.Signals(signum).name
        if received == 1:
            log.warning("%s received: shutting down (send again to stop at once)", name)
            sd_notify("STOPPING=1")
        else:
            log.warning("%s received again: stopping now", name)
        task.cancel()

    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, int(signum))
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            log.debug("cannot install a handler for %s", signal.Signals(signum).name)
    try:
        loop.add_signal_handler(signal.SIGHUP, _on_sighup)
        installed.append(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, ValueError):
        log.debug("cannot install a handler for SIGHUP")
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise  # we were cancelled ourselves, not by a signal
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory


def run_server(config: Config, on_ready: OnReady | None = None, serve: ServeFn | None = None) -> None:
    """Serve ``config`` until a signal arrives; blocks. Uses uvloop when it is installed."""
    serve_fn = serve if serve is not None else load_serve()
    factory = _loop_factory()
    keep_freed_memory()  # no brk/page-fault churn per burst of data buffers (cistern.heap)
    log.info("hot path: %s; event loop: %s", accel.describe(), "uvloop" if factory else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_until_signalled(config, serve_fn, on_ready))
