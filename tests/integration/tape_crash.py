"""Crash consistency of a tape drive (research note §1, T4): a writer, a kill -9, and a verifier.

The writer (``python tape_crash.py write URL FILES BLOCKS SIZE``) talks to the drive through cistern's
own initiator: REWIND, then per file ``BLOCKS`` variable-length WRITE(6) of ``SIZE`` bytes and one
non-immediate WRITE FILEMARKS(1); after each filemark's GOOD status it prints ``ACK <file>`` (flushed).
The test kills the target while the writer runs, restarts it and calls :func:`verify`: every block of
every acknowledged file must read back identically, each file ending in a filemark; after them the
drive may hold a prefix of the next file (blocks written but not yet made durable by a filemark may or
may not survive, but what is there must be right), then READ must report END-OF-DATA (BLANK CHECK
00/05) at once.

Block contents are a function of (file, block) only (:func:`block`), so the checker needs no state.
"""

from __future__ import annotations

import dataclasses
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

import crc32c

GOOD, CHECK_CONDITION = 0x00, 0x02
NO_SENSE, BLANK_CHECK, UNIT_ATTENTION, NOT_READY = 0x0, 0x8, 0x6, 0x2


def block(file: int, index: int, size: int) -> bytes:
    """The content of block ``index`` of file ``file``: a label then seeded random bytes."""
    label = f"CISTERN-TAPE file={file} block={index}\n".encode()
    return label + random.Random(file * 100_003 + index).randbytes(size - len(label))


def rewind_cdb() -> bytes:
    return bytes([0x01, 0, 0, 0, 0, 0])


def write6_cdb(length: int) -> bytes:
    """WRITE(6), variable length (FIXED=0): ``length`` bytes (SSC-4 6.30)."""
    return bytes([0x0A, 0]) + length.to_bytes(3, "big") + b"\0"


def read6_cdb(length: int) -> bytes:
    """READ(6), variable length, SILI=1 (SSC-4 6.4)."""
    return bytes([0x08, 0x02]) + length.to_bytes(3, "big") + b"\0"


def write_filemarks_cdb(count: int = 1, immed: bool = False) -> bytes:
    """WRITE FILEMARKS(6) (SSC-4 6.31)."""
    return bytes([0x10, 1 if immed else 0]) + count.to_bytes(3, "big") + b"\0"


def filemark(sense: Any) -> bool:
    """The FILEMARK bit: fixed sense byte 2 bit 7, or the stream commands descriptor (type 04h)."""
    raw: bytes = getattr(sense, "raw", b"") or b""
    if len(raw) >= 3 and raw[0] & 0x7F in (0x70, 0x71):
        return bool(raw[2] & 0x80)
    if len(raw) >= 8 and raw[0] & 0x7F in (0x72, 0x73):
        pos, end = 8, min(len(raw), 8 + raw[7])
        while pos + 2 <= end:
            if raw[pos] == 0x04 and pos + 3 < len(raw):
                return bool(raw[pos + 3] & 0x80)
            pos += 2 + raw[pos + 1]
    return False


def load_cdb() -> bytes:
    """LOAD UNLOAD with LOAD=1 (SSC-4 7.2): thread the cartridge in the drive, position at BOP."""
    return bytes([0x1B, 0, 0, 0, 0x01, 0])


def ready(s: Any, lun: int, timeout: float = 20.0, load: bool = False) -> None:
    """TEST UNIT READY until GOOD (unit attentions after a restart, becoming ready); with ``load``, a
    NOT READY drive gets a LOAD (a restarted drive holds its cartridge unloaded)."""
    deadline = time.monotonic() + timeout
    while True:
        r = s.execute(lun, bytes(6), check=False)
        if r.status == GOOD:
            return
        if load and r.sense is not None and r.sense.key == NOT_READY:
            s.execute(lun, load_cdb(), check=False)
        if time.monotonic() > deadline:
            raise RuntimeError(f"drive not ready: status {r.status} sense {r.sense}")
        time.sleep(0.1)


def writer(url: str, files: int, blocks: int, size: int) -> None:
    from cistern.initiator import sync
    from cistern.initiator.url import parse_url

    lun = parse_url(url).lun or 0
    with sync.connect(url) as s:
        ready(s, lun)
        s.execute(lun, rewind_cdb())
        print("READY", flush=True)
        for f in range(files):
            for i in range(blocks):
                s.execute(lun, write6_cdb(size), block(f, i, size))
            s.execute(lun, write_filemarks_cdb(1))
            print(f"ACK {f}", flush=True)
    print("DONE", flush=True)


@dataclasses.dataclass(frozen=True)
class Element:
    type: int  # 1 medium transport, 2 storage, 3 import/export, 4 data transfer (SMC-3 6.10)
    address: int
    full: bool


def read_element_status(s: Any, lun: int) -> list[Element]:
    """READ ELEMENT STATUS (B8h) for all element types, no volume tags (SMC-3 6.10)."""
    alloc = 65536
    cdb = bytes([0xB8, 0x00, 0, 0, 0xFF, 0xFF, 0]) + alloc.to_bytes(3, "big") + b"\0\0"
    data = bytes(s.execute(lun, cdb, read_length=alloc).data)
    out: list[Element] = []
    pos, end = 8, 8 + int.from_bytes(data[5:8], "big")
    while pos + 8 <= min(end, len(data)):
        etype, dlen = data[pos] & 0x0F, int.from_bytes(data[pos + 2 : pos + 4], "big")
        count = int.from_bytes(data[pos + 5 : pos + 8], "big")
        for d in range(pos + 8, pos + 8 + count, max(dlen, 1)):
            if d + 3 <= len(data):
                out.append(Element(etype, int.from_bytes(data[d : d + 2], "big"), bool(data[d + 2] & 1)))
        pos += 8 + count
    return out


def move_medium(s: Any, lun: int, transport: int, source: int, destination: int) -> None:
    """MOVE MEDIUM (A5h) (SMC-3 6.6)."""
    cdb = bytes([0xA5, 0]) + b"".join(x.to_bytes(2, "big") for x in (transport, source, destination))
    s.execute(lun, cdb + bytes(4))


@dataclasses.dataclass
class Verdict:
    ok: bool
    files_intact: int  # complete files (blocks + filemark) read back identically
    extra_blocks: int  # correct blocks after the acknowledged files
    objects: int  # logical objects (blocks and filemarks) read before END-OF-DATA
    end: str  # how reading ended
    problems: list[str]


def verify(s: Any, lun: int, acked: int, blocks: int, size: int, eod_within: float = 2.0) -> Verdict:
    """Read from BOT and check the rule stated in the module docstring."""
    problems: list[str] = []
    ready(s, lun, load=True)
    s.execute(lun, rewind_cdb())
    f = i = 0
    intact = extra = objects = 0
    end = ""
    limit = (acked + 2) * (blocks + 1) + 4
    for _ in range(limit):
        t0 = time.monotonic()
        r = s.execute(lun, read6_cdb(size), read_length=size, check=False)
        took = time.monotonic() - t0
        if r.status == GOOD:
            if bytes(r.data) != block(f, i, size):
                problems.append(f"file {f} block {i}: wrong data ({len(r.data)} bytes)")
                end = "bad data"
                break
            i += 1
            objects += 1
            if f >= acked:
                extra += 1
            continue
        sense = r.sense
        if r.status == CHECK_CONDITION and sense is not None and filemark(sense):
            if i != blocks:
                problems.append(f"file {f}: filemark after {i} of {blocks} blocks")
            if f < acked:
                intact += 1
            f, i = f + 1, 0
            objects += 1
            continue
        if (
            r.status == CHECK_CONDITION
            and sense is not None
            and (sense.key, sense.asc, sense.ascq)
            == (
                BLANK_CHECK,
                0x00,
                0x05,
            )
        ):
            end = f"END-OF-DATA after file {f} block {i} in {took:.2f}s"
            if took > eod_within:
                problems.append(f"END-OF-DATA took {took:.2f}s")
            break
        end = f"status {r.status} sense {sense}"
        problems.append(f"file {f} block {i}: unexpected {end}")
        break
    else:
        problems.append("no END-OF-DATA")
    if intact < acked:
        problems.append(f"only {intact} of {acked} acknowledged files read back")
    return Verdict(
        ok=not problems, files_intact=intact, extra_blocks=extra, objects=objects, end=end, problems=problems
    )


def cartridge_objects(folder: Path) -> list[bytes | None]:
    """The logical objects of a cartridge folder, read straight from its files (format of
    ``cistern.storage.tape.cartridge``: 32-byte index records ``offset u64, length u32, data crc32c u32,
    kind u8 (1 block, 2 filemark), 3 pad, filemarks-before u32, record crc32c u32, 4 pad``): data blocks
    as bytes, filemarks as None, up to the first record or block whose checksum does not match."""
    index = (folder / "index").read_bytes()
    data = (folder / "data").read_bytes()
    out: list[bytes | None] = []
    for pos in range(0, len(index) - 31, 32):
        head = index[pos : pos + 24]
        offset, length, crc, kind, _ = struct.unpack(">QIIBxxxI", head)
        if struct.unpack_from(">I", index, pos + 24)[0] != crc32c.crc32c(head):
            break
        if kind == 2:
            out.append(None)
            continue
        block_data = data[offset : offset + length]
        if kind != 1 or len(block_data) != length or crc32c.crc32c(block_data) != crc:
            break
        out.append(block_data)
    return out


def cartridge_files(objects: list[bytes | None]) -> tuple[list[bytes], bytes | None]:
    """The files of :func:`cartridge_objects` (the blocks before each filemark, joined) and the
    blocks after the last filemark (None when there are none)."""
    files: list[bytes] = []
    current: list[bytes] = []
    for obj in objects:
        if obj is None:
            files.append(b"".join(current))
            current = []
        else:
            current.append(obj)
    return files, (b"".join(current) if current else None)


def check_cartridge(objects: list[bytes | None], acked: int, blocks: int, size: int) -> list[str]:
    """Problems with the acknowledged prefix: ``acked`` files of ``blocks`` blocks, each then a filemark."""
    want: list[bytes | None] = []
    for f in range(acked):
        want += [block(f, i, size) for i in range(blocks)] + [None]
    if len(objects) < len(want):
        return [f"only {len(objects)} valid objects, {len(want)} acknowledged"]
    return [f"object {n} differs" for n, (a, b) in enumerate(zip(objects, want, strict=False)) if a != b]


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "write":
        sys.exit("usage: tape_crash.py write URL FILES BLOCKS SIZE")
    writer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
