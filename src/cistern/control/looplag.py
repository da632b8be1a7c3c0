"""Event-loop lag of the serving process, sampled from start so ``/api/stats`` and ``/metrics`` can show it.

Kept apart from :mod:`cistern.control.metrics` (prometheus-client) and :mod:`cistern.control.http`
(aiohttp): the sampler runs from the moment the server starts, while those libraries are imported only when
the first admin client connects.
"""

from __future__ import annotations

import asyncio
import contextlib


class LoopLag:
    """Event-loop lag: how late a sleep of ``interval`` seconds wakes up (a busy loop answers late).

    ``last`` and ``max`` are seconds; :meth:`start` needs a running loop."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.last = 0.0
        self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.last = max(0.0, loop.time() - start - self.interval)
            self.max = max(self.max, self.last)
