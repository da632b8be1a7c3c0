"""Run a command's coroutine eagerly: inline until it finishes or waits on a future that is not done.

``loop.create_task`` defers a coroutine's first step to the next loop iteration, which for a RAM-backed
read is the whole cost of the command twice over: the response goes out one iteration later.  This runs the
first step at once (as Python 3.12's eager task factory does) and resumes the coroutine from the awaited
future's done callback, the way ``asyncio.Task`` steps it.  No cancellation support is needed here: a
command that is aborted is marked so and finishes normally, its response suppressed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("cistern.target")


def run_eager(coro: Coroutine[Any, Any, None]) -> None:
    """Start ``coro`` now; it keeps running on the current loop from futures' callbacks."""
    _step(coro)


def _step(coro: Coroutine[Any, Any, None], _done: object = None) -> None:
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        return
    except Exception:
        log.exception("command coroutine failed")
        return
    if yielded is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration
        asyncio.get_running_loop().call_soon(_step, coro)
        return
    if getattr(yielded, "_asyncio_future_blocking", None):
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(lambda fut: _step(coro, fut))
        return
    coro.throw(RuntimeError(f"coroutine yielded {yielded!r}, not a future"))
