"""The metadata area at the start of every RAID member: superblock (two copies) and write-intent bitmap.

Layout of a member (byte offsets)::

    0        superblock copy A (4 KiB)    } written alternately (event count even -> A, odd -> B) so a
    4096     superblock copy B (4 KiB)    } crash mid-write always leaves the previous one intact
    8192     write-intent bitmap (one bit per region of ``bitmap_region`` member bytes)
    DATA_OFFSET (1 MiB)  member data area (what layout.py addresses)

A superblock is ``MAGIC`` + version (u32) + payload length (u32) + CRC-32 of the payload (u32) + a JSON
payload: the array's identity and geometry (``array_uuid``, ``level``, ``layout``, ``chunk``,
``members``, ``member_size``), this device's ``device_uuid`` and ``role`` (-1 for a spare), the event
count ``events`` (bumped on every state change, as md's), ``clean`` (no write in flight at shutdown),
and the array's view of every role (``slots``: device uuid, state, recovery offset) and of its spares.
The copy with the highest event count and a good CRC wins; a member whose count is below the array's is
stale and is refused at assembly (mdadm: "kicking non-fresh ... from array").
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, field

MAGIC = b"CISTRAID"
VERSION = 1
SB_SIZE = 4096
BITMAP_OFFSET = 8192
DATA_OFFSET = 1 << 20
BITMAP_MAX_BYTES = DATA_OFFSET - BITMAP_OFFSET
_HDR = struct.Struct(">8sIII")

SLOT_STATES = ("in_sync", "rebuilding", "faulty", "missing")


class SuperblockError(ValueError):
    """Bytes that are not a valid cistern RAID superblock."""


@dataclass
class Slot:
    """One role of the array as the superblock records it."""

    device: str | None  # device uuid of the member holding the role, None when missing
    state: str = "in_sync"  # SLOT_STATES
    recovery_offset: int = 0  # rebuilding: member data bytes already rebuilt


@dataclass
class Superblock:
    array_uuid: str
    level: int
    chunk: int
    members: int
    member_size: int
    device_uuid: str
    role: int  # 0..members-1, or -1 for a spare
    events: int = 0
    clean: bool = True
    layout: str = "left-symmetric"
    slots: list[Slot] = field(default_factory=list)
    spares: list[str] = field(default_factory=list)
    bitmap_region: int = 0  # 0: no bitmap
    bitmap_valid_from: int | None = None  # events since which the bitmap has not been cleared
    data_offset: int = DATA_OFFSET
    mismatch_cnt: int = 0  # stripes found inconsistent by the last check/repair
    sync_action: str = "idle"  # what the array was doing when this was written

    def encode(self) -> bytes:
        payload = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        if _HDR.size + len(payload) > SB_SIZE:
            raise SuperblockError("superblock does not fit in 4 KiB (too many members or spares)")
        raw = _HDR.pack(MAGIC, VERSION, len(payload), zlib.crc32(payload)) + payload
        return raw.ljust(SB_SIZE, b"\0")

    @classmethod
    def decode(cls, raw: bytes) -> Superblock:
        if len(raw) < _HDR.size:
            raise SuperblockError("short superblock")
        magic, version, length, crc = _HDR.unpack_from(raw)
        if magic != MAGIC:
            raise SuperblockError("no cistern RAID superblock")
        if version != VERSION or length > SB_SIZE - _HDR.size:
            raise SuperblockError(f"unsupported superblock version {version}")
        payload = bytes(raw[_HDR.size : _HDR.size + length])
        if zlib.crc32(payload) != crc:
            raise SuperblockError("superblock checksum mismatch")
        try:
            d = json.loads(payload)
            d["slots"] = [Slot(**s) for s in d["slots"]]
            return cls(**d)
        except (ValueError, TypeError, KeyError) as exc:
            raise SuperblockError(f"malformed superblock: {exc}") from None

    def slot_offset(self) -> int:
        """Which copy this event count goes to."""
        return (self.events % 2) * SB_SIZE


def pick(copies: list[bytes]) -> Superblock | None:
    """The valid copy with the highest event count, or None when neither copy is valid."""
    best: Superblock | None = None
    for raw in copies:
        try:
            sb = Superblock.decode(raw)
        except SuperblockError:
            continue
        if best is None or sb.events > best.events:
            best = sb
    return best
