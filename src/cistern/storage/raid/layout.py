"""Where array bytes live on the members: md's RAID 0, 1, 5, 6 and 10 layouts.

All offsets here are in a member's *data area* (the superblock area before ``data_offset`` is not
counted).  A *row* is one chunk-sized band of member data offsets, ``[row*chunk, (row+1)*chunk)``; a stripe
of RAID 0/5/6 is one row across every member.

- RAID 0: array chunk ``c`` is on member ``c % n`` at row ``c // n``.
- RAID 1: every member holds the whole array (rows are only the lock/rebuild granule).
- RAID 5 left-symmetric (md's default, ALGORITHM_LEFT_SYMMETRIC): in stripe ``s`` parity is on member
  ``n-1 - s % n`` and data chunk ``i`` on member ``(pd + 1 + i) % n``.
- RAID 6 left-symmetric: P on ``pd = n-1 - s % n``, Q on ``(pd + 1) % n``, data ``i`` on
  ``(pd + 2 + i) % n``; Q's coefficient of data chunk ``i`` is g^i.
- RAID 10 near-2 (md ``--layout=n2``): chunk ``c`` has copies in the slots ``2c`` and ``2c+1`` of the
  row-major sequence of (row, member) slots: member ``slot % n``, row ``slot // n``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

LEVELS = (0, 1, 5, 6, 10)
MIN_MEMBERS = {0: 2, 1: 2, 5: 3, 6: 4, 10: 2}
REDUNDANCY = {0: 0, 1: 1, 5: 1, 6: 2, 10: 1}  # members that may fail (RAID 1: n-1, RAID 10: 1 per pair)


@dataclass(frozen=True, slots=True)
class Piece:
    """A part of an array range inside one chunk: stripe/chunk ``index`` and the chunk-relative span."""

    index: int  # RAID 0/5/6: stripe; RAID 10: array chunk; RAID 1: row
    chunk: int  # RAID 0/5/6: data chunk number within the stripe (0..k-1); else 0
    lo: int  # byte offset within the chunk
    hi: int
    buf_off: int  # offset of this piece in the caller's buffer


@dataclass(frozen=True, slots=True)
class Geometry:
    """A level, member count, chunk size and usable bytes per member (a multiple of ``chunk``)."""

    level: int
    members: int
    chunk: int
    member_size: int

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"RAID level {self.level} is not one of {LEVELS}")
        if self.members < MIN_MEMBERS[self.level]:
            raise ValueError(f"RAID {self.level} needs at least {MIN_MEMBERS[self.level]} members, not {self.members}")
        if self.chunk < 4096 or self.chunk & (self.chunk - 1):
            raise ValueError(f"chunk {self.chunk} must be a power of two of at least 4096 bytes")
        if self.member_size % self.chunk or self.member_size <= 0:
            raise ValueError("member_size must be a positive multiple of chunk")

    @property
    def rows(self) -> int:
        return self.member_size // self.chunk

    @property
    def data_chunks(self) -> int:
        """k: data chunks per stripe (RAID 0/5/6)."""
        return {0: self.members, 5: self.members - 1, 6: self.members - 2}.get(self.level, 1)

    @property
    def parity(self) -> bool:
        return self.level in (5, 6)

    @property
    def size(self) -> int:
        """Array capacity in bytes."""
        if self.level == 1:
            return self.member_size
        if self.level == 10:
            return (self.rows * self.members // 2) * self.chunk
        return self.rows * self.data_chunks * self.chunk

    # ---- RAID 0/5/6 stripes

    def stripe_roles(self, stripe: int) -> list[int]:
        """Member index of each role: data 0..k-1, then P (RAID 5/6), then Q (RAID 6)."""
        n = self.members
        if self.level == 0:
            return list(range(n))
        pd = n - 1 - stripe % n
        if self.level == 5:
            return [(pd + 1 + i) % n for i in range(n - 1)] + [pd]
        if self.level == 6:
            return [(pd + 2 + i) % n for i in range(n - 2)] + [pd, (pd + 1) % n]
        raise ValueError("stripe_roles is for RAID 0/5/6")

    # ---- RAID 10

    def copies(self, chunk_no: int) -> list[tuple[int, int]]:
        """(member, row) of both copies of array chunk ``chunk_no`` (RAID 10 near-2)."""
        n = self.members
        return [(slot % n, slot // n) for slot in (2 * chunk_no, 2 * chunk_no + 1)]

    def row_chunks(self, row: int) -> list[tuple[int, int]]:
        """(member, array chunk) for every slot of a RAID 10 row."""
        n = self.members
        return [(m, (row * n + m) // 2) for m in range(n)]

    # ---- splitting a range

    def pieces(self, offset: int, length: int) -> Iterator[Piece]:
        """Split ``[offset, offset+length)`` of the array into chunk-bounded pieces, in order."""
        c = self.chunk
        pos, end = offset, offset + length
        while pos < end:
            cno, lo = divmod(pos, c)
            n = min(c - lo, end - pos)
            if self.level == 1 or self.level == 10:
                yield Piece(cno, 0, lo, lo + n, pos - offset)
            else:
                stripe, i = divmod(cno, self.data_chunks)
                yield Piece(stripe, i, lo, lo + n, pos - offset)
            pos += n

    def rows_of(self, offset: int, length: int) -> list[int]:
        """Member rows that a write of the array range touches (sorted, unique): the lock granule."""
        if length <= 0:
            return []
        if self.level == 10:
            rows: set[int] = set()
            for p in self.pieces(offset, length):
                rows.update(r for _, r in self.copies(p.index))
            return sorted(rows)
        first = next(self.pieces(offset, 1)).index
        last = next(self.pieces(offset + length - 1, 1)).index
        return list(range(first, last + 1))
