"""A per-logical-unit LBA range lock: what makes COMPARE AND WRITE and WRITE ATOMIC atomic.

SBC-3 5.2 requires the read, compare and write of COMPARE AND WRITE to be one atomic operation with
respect to every other command that writes the same logical blocks; SBC-4 4.29 asks the same of WRITE
ATOMIC.  Ordinary writers (WRITE, WRITE AND VERIFY, WRITE SAME, ORWRITE, UNMAP, EXTENDED COPY's
destination) take the range *shared*: they never wait for each other, since SAM-5 gives SIMPLE tasks no
order among themselves.  Atomic operations take it *exclusive*: they wait for every overlapping holder and
every overlapping holder waits for them.  Waiters are served first come, first served among overlapping
ranges, so a stream of writes cannot starve a COMPARE AND WRITE.

The uncontended path is the hot path of every WRITE: :meth:`RangeLock.try_shared` is synchronous, appends
one :class:`Token` to a list and returns it to be released; cost is O(active ranges), no coroutine, no
future.  A token is an object, not a tuple: compiled, a tuple of fixed shape would be rebuilt at each use
as an object, and :meth:`RangeLock.release` would then find it by comparing fields instead of by identity.  Ranges are half-open ``[start, end)`` in logical blocks.
"""

from __future__ import annotations

import asyncio


class Token:
    """One range held or waited for, ``[start, end)`` in logical blocks: what :meth:`RangeLock.release`
    takes back."""

    __slots__ = ("end", "exclusive", "start")

    def __init__(self, start: int, end: int, exclusive: bool) -> None:
        self.start = start
        self.end = end
        self.exclusive = exclusive

    def conflicts(self, other: Token) -> bool:
        """Whether the two cannot be held at once: they overlap and one of them is exclusive."""
        return (self.exclusive or other.exclusive) and self.start < other.end and other.start < self.end


class RangeLock:
    """Shared/exclusive locks on half-open LBA ranges; see the module docstring."""

    __slots__ = ("_exclusive", "_held", "_waiters")

    def __init__(self) -> None:
        self._held: list[Token] = []
        self._exclusive = 0  # how many of _held are exclusive
        self._waiters: list[tuple[Token, asyncio.Future[None]]] = []

    @property
    def active(self) -> int:
        """Number of ranges currently held."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _grantable(self, token: Token, ahead: int) -> bool:
        if token.exclusive or self._exclusive:
            for held in self._held:
                if token.conflicts(held):
                    return False
        return not any(token.conflicts(self._waiters[i][0]) for i in range(ahead))

    def try_shared(self, start: int, end: int) -> Token | None:
        """Take ``[start, end)`` shared if that needs no waiting; the token, or None."""
        token = Token(start, end, False)
        if (not self._exclusive and not self._waiters) or self._grantable(token, len(self._waiters)):
            self._held.append(token)
            return token
        return None

    async def shared(self, start: int, end: int) -> Token:
        token = self.try_shared(start, end)
        if token is not None:
            return token
        return await self._wait(Token(start, end, False))

    async def exclusive(self, start: int, end: int) -> Token:
        token = Token(start, end, True)
        if not self._waiters and self._grantable(token, 0):
            self._held.append(token)
            self._exclusive += 1
            return token
        return await self._wait(token)

    async def _wait(self, token: Token) -> Token:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (token, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            elif fut.done() and not fut.cancelled():
                self.release(token)  # granted while being cancelled: give it back
            raise
        return token

    def release(self, token: Token) -> None:
        self._held.remove(token)  # found by identity
        if token.exclusive:
            self._exclusive -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        i = 0
        while i < len(self._waiters):
            token, fut = self._waiters[i]
            if fut.done():  # cancelled: its own handler removes it
                i += 1
                continue
            if self._grantable(token, i):
                del self._waiters[i]
                self._held.append(token)
                if token.exclusive:
                    self._exclusive += 1
                fut.set_result(None)
                continue
            i += 1
