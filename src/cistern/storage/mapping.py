"""Allocation status of a store's bytes: which ranges hold data (mapped) and which are holes.

This is the storage side of logical block provisioning (SBC-3 4.7) and of GET LBA STATUS (SBC-3 5.16):
a store answers :meth:`~cistern.storage.base.BackingStore.extents` with a list of :class:`Extent`
covering the asked range in order, each either *mapped* (physical space allocated: the data may be
anything) or not (deallocated: reads back as zeroes).  Stores that keep their own bookkeeping (RAM)
use a :class:`PageMap`; file stores ask the filesystem (``SEEK_DATA``/``SEEK_HOLE``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_MAX_EXTENTS = 1024


@dataclass(frozen=True, slots=True)
class Extent:
    """``length`` bytes from ``offset`` that are all mapped or all deallocated."""

    offset: int
    length: int
    mapped: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


def coalesce(extents: Iterable[Extent]) -> list[Extent]:
    """Merge neighbouring extents of the same status and drop empty ones."""
    out: list[Extent] = []
    for e in extents:
        if e.length <= 0:
            continue
        if out and out[-1].mapped == e.mapped and out[-1].end == e.offset:
            last = out.pop()
            e = Extent(last.offset, last.length + e.length, e.mapped)
        out.append(e)
    return out


class PageMap:
    """One byte per ``page`` bytes of a ``size``-byte store: 1 when the page holds data, 0 when not.

    A write maps every page it touches; an unmap deallocates only the pages it covers completely (a
    partly unmapped page stays mapped, its unmapped bytes zeroed by the store).  Searches use
    ``bytearray.find``, so even a large map is scanned at C speed.
    """

    __slots__ = ("_map", "page", "size")

    def __init__(self, size: int, page: int) -> None:
        if page <= 0 or page & (page - 1):
            raise ValueError("page must be a power of two")
        self.size = size
        self.page = page
        self._map = bytearray(-(-size // page))

    def resize(self, size: int) -> None:
        """Cover a store grown to ``size`` bytes (the new pages unmapped); shrinking is not supported."""
        if size < self.size:
            raise ValueError("a page map does not shrink")
        self.size = size
        self._map.extend(bytes(-(-size // self.page) - len(self._map)))

    def _span(self, offset: int, length: int) -> tuple[int, int]:
        """Pages touched by ``[offset, offset+length)``: (first, end) with end exclusive."""
        return offset // self.page, -(-(offset + length) // self.page)

    def mark(self, offset: int, length: int) -> None:
        """Record that ``[offset, offset+length)`` now holds data."""
        if length > 0:
            first, end = self._span(offset, length)
            self._map[first:end] = b"\x01" * (end - first)

    def whole_pages(self, offset: int, length: int) -> tuple[int, int]:
        """The byte range of the pages lying completely inside ``[offset, offset+length)``.

        The last page may be a partial one at the end of the store; it counts as whole when the range
        reaches the store's end.  Returns ``(start, end)``; ``start >= end`` when there is none.
        """
        stop = offset + length
        start = -(-offset // self.page) * self.page
        end = stop if stop >= self.size else stop // self.page * self.page
        return start, end

    def clear(self, offset: int, length: int) -> tuple[int, int]:
        """Deallocate the pages lying completely inside the range; returns their byte range."""
        start, end = self.whole_pages(offset, length)
        if start < end:
            first, last = start // self.page, -(-end // self.page)
            self._map[first:last] = bytes(last - first)
        return start, end

    def mapped_bytes(self) -> int:
        """Bytes of the store that are mapped (whole pages, the last one clipped to the size)."""
        n = self._map.count(1) * self.page
        if self._map and self._map[-1]:
            n -= len(self._map) * self.page - self.size
        return n

    def extents(self, offset: int, length: int, max_extents: int = DEFAULT_MAX_EXTENTS) -> list[Extent]:
        """Extents covering ``[offset, offset+length)`` in order, at most ``max_extents`` of them."""
        out: list[Extent] = []
        stop = offset + length
        pos = offset
        m = self._map
        while pos < stop and len(out) < max_extents:
            idx = pos // self.page
            mapped = bool(m[idx])
            nxt = m.find(b"\x00" if mapped else b"\x01", idx + 1)
            end = stop if nxt < 0 else min(stop, nxt * self.page)
            out.append(Extent(pos, end - pos, mapped))
            pos = end
        return out
