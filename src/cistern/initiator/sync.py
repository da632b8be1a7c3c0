"""A small synchronous facade for scripts: the asyncio session runs on a private event loop in a
background thread, and every helper of :class:`~cistern.initiator.client.IscsiSession` is callable
as a plain blocking method.

    with cistern.initiator.sync.connect("iscsi://127.0.0.1/iqn.2024-01.org.example:disk/1") as s:
        s.write(1, 0, b"\\0" * 4096)
        data = s.read(1, 0, 8)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cistern.initiator import client
from cistern.initiator.client import DiscoveredTarget, IscsiSession

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cistern-initiator", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class SyncSession:
    """Blocking wrapper: ``s.read(...)``, ``s.write(...)``, ``s.inquiry(...)``... as on IscsiSession."""

    def __init__(self, runner: _LoopThread, session: IscsiSession) -> None:
        self._runner = runner
        self.session = session

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self.session, name)
        if not callable(attr) or not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._runner.run(attr(*args, **kwargs))
            if isinstance(result, memoryview):
                return bytes(result)  # do not hand out views into buffers the loop thread owns
            return result

        return call

    def close(self) -> None:
        try:
            self._runner.run(self.session.logout(), timeout=60)
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(where: Any, **kwargs: Any) -> SyncSession:
    runner = _LoopThread()
    try:
        session = runner.run(client.connect(where, **kwargs))
    except BaseException:
        runner.stop()
        raise
    return SyncSession(runner, session)


def discover(where: Any, **kwargs: Any) -> list[DiscoveredTarget]:
    return asyncio.run(client.discover(where, **kwargs))
