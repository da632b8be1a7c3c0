"""One tape cartridge on disk: a directory named after its barcode in the library directory.

Files (format version 1)::

    <library>/<barcode>/meta.json   barcode, capacity, flags (WORM, write-protect), load count, MAM
                                    attributes written by hosts; replaced atomically (write + rename)
    <library>/<barcode>/data        the bytes of every data block, appended in order
    <library>/<barcode>/index       one 32-byte record per logical object (data block or filemark)
    <library>/<barcode>/synced      the sync mark: how many objects the last sync made durable

Index record ``n`` (big-endian) describes logical object ``n`` (SSC-3 4.2.3: logical object
identifiers count blocks and filemarks alike), so LOCATE and READ POSITION are O(1)::

    0  u64  data offset            12 u32 crc32c of the stored bytes   16 u8 kind (1 block, 2 filemark,
    8  u32  stored length          20 u32 filemarks before this object       3 compressed block)
    24 u32  crc32c of bytes 0..23  28 u32 kind 3: the block's length before compression; else 0

A compressed block (written while the drive's DCE is set, and only when DEFLATE made it smaller) is a
zlib stream; reading it checks the crc32c of the stored bytes, zlib's own checksum and the length.

The filemark list (record numbers of filemarks, for SPACE filemarks and file numbers) is rebuilt from
the index when the cartridge is opened: the index is the only truth.  Writing in the middle (after
LOCATE or REWIND) truncates both files at that object first: a tape has no "insert".

The sync mark (16 bytes, big-endian: ``u64 objects``, ``u32 crc32c`` of those 8 bytes, ``u32 0``) is
rewritten in place and fdatasynced by :meth:`Cartridge.sync` after ``data`` and ``index``: the objects
before it were acknowledged as durable (a non-immediate WRITE FILEMARKS, REWIND, ...), the ones after
it only as buffered (BUFFERED MODE 1: a real drive loses its buffer when the power goes).

Recovery rule, applied on every open: drop a partial trailing index record; keep the longest prefix of
records whose own checksums, offsets and filemark counts are consistent; then walk back from the end
dropping records whose data is missing or fails its crc32c; then drop every object after the sync mark
(when the mark is there and intact; cartridges without one keep the checksummed prefix); truncate
``data`` after the last kept record.  Data is written before its index record and
:meth:`Cartridge.sync` fdatasyncs ``data``, then ``index``, then the mark, so after a crash (kill -9 or
power loss) the cartridge ends exactly at the last sync: everything up to it reads back, the next READ
reports END-OF-DATA, and a host that appends after END-OF-DATA continues right after its last
acknowledged filemark rather than after the torn remains of an unfinished file.  All methods are
blocking; the tape LU runs them off the event loop.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from bisect import bisect_left
from dataclasses import dataclass

import crc32c

FORMAT_VERSION = 1
KIND_BLOCK = 1
KIND_FILEMARK = 2
KIND_COMPRESSED = 3
COMPRESSION_LEVEL = 1  # zlib: fast; a tape drive compresses at line rate
RECORD = struct.Struct(">QIIBxxxI")  # offset, stored length, data crc, kind, filemarks before (24 bytes)
RECORD_SIZE = 32
SYNC_MARK = "synced"
BARCODE_RE = re.compile(r"[A-Z0-9]{1,32}")
MIN_CAPACITY = 1 << 20


class CartridgeError(ValueError):
    """A cartridge cannot be created or opened (message says why)."""


class CorruptBlock(Exception):
    """A block's data does not match its crc32c (MEDIUM ERROR for the reader)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One index record: a data block (``stored`` bytes at ``offset``, ``length`` bytes once
    decompressed) or a filemark."""

    offset: int
    stored: int
    crc: int
    kind: int
    filemarks_before: int
    length: int

    @property
    def is_filemark(self) -> bool:
        return self.kind == KIND_FILEMARK


def _encode(rec: Record) -> bytes:
    head = RECORD.pack(rec.offset, rec.stored, rec.crc, rec.kind, rec.filemarks_before)
    logical = rec.length if rec.kind == KIND_COMPRESSED else 0
    return head + struct.pack(">II", crc32c.crc32c(head), logical)


def _decode(raw: bytes | memoryview) -> Record | None:
    head = bytes(raw[:24])
    check, logical = struct.unpack_from(">II", raw, 24)
    if crc32c.crc32c(head) != check:
        return None
    offset, stored, crc, kind, fm = RECORD.unpack(head)
    if kind not in (KIND_BLOCK, KIND_FILEMARK, KIND_COMPRESSED) or (kind == KIND_FILEMARK and stored):
        return None
    return Record(offset, stored, crc, kind, fm, logical if kind == KIND_COMPRESSED else stored)


def _encode_mark(objects: int) -> bytes:
    head = struct.pack(">Q", objects)
    return head + struct.pack(">II", crc32c.crc32c(head), 0)


def _decode_mark(raw: bytes) -> int | None:
    """The object count of a sync mark; None when missing, short or torn."""
    if len(raw) < 16 or struct.unpack_from(">I", raw, 8)[0] != crc32c.crc32c(raw[:8]):
        return None
    return int(struct.unpack_from(">Q", raw, 0)[0])


def _read_mark(path: str) -> int | None:
    """The sync mark of the cartridge at ``path``; None when it has none or it is torn."""
    try:
        with open(os.path.join(path, SYNC_MARK), "rb") as f:
            return _decode_mark(f.read(16))
    except FileNotFoundError:
        return None


def check_barcode(barcode: str) -> str:
    """``barcode`` if it is 1..32 characters of A-Z and 0-9 (SMC-3 volume tag), else ``ValueError``."""
    if not BARCODE_RE.fullmatch(barcode):
        raise ValueError(f"{barcode!r}: a barcode is 1..32 characters A-Z, 0-9")
    return barcode


def _write_json_atomic(path: str, obj: object) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def create_cartridge(
    library: str, barcode: str, capacity: int, *, worm: bool = False, write_protect: bool = False
) -> str:
    """Create an empty cartridge directory; return its path.  ``CartridgeError`` if it exists or the
    capacity is below 1 MiB; ``ValueError`` for a bad barcode; ``OSError`` from the filesystem."""
    check_barcode(barcode)
    if capacity < MIN_CAPACITY:
        raise CartridgeError(f"capacity {capacity} is below 1 MiB")
    path = os.path.join(library, barcode)
    if os.path.exists(path):
        raise CartridgeError(f"cartridge {barcode} already exists in {library}")
    os.makedirs(library, exist_ok=True)
    tmp = os.path.join(library, f".{barcode}.new")
    os.makedirs(tmp, exist_ok=True)
    for name in ("data", "index"):
        with open(os.path.join(tmp, name), "wb"):
            pass
    with open(os.path.join(tmp, SYNC_MARK), "wb") as f:
        f.write(_encode_mark(0))
        os.fsync(f.fileno())
    meta = {
        "format": FORMAT_VERSION,
        "barcode": barcode,
        "capacity": capacity,
        "worm": worm,
        "write_protect": write_protect,
        "load_count": 0,
        "attributes": {},
    }
    _write_json_atomic(os.path.join(tmp, "meta.json"), meta)
    os.rename(tmp, path)
    return path


def read_meta(path: str) -> dict[str, object]:
    """The cartridge's meta.json; ``CartridgeError`` when missing or malformed."""
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise CartridgeError(f"{path}: unreadable meta.json ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CartridgeError(f"{path}: not a cistern cartridge (format {FORMAT_VERSION})")
    cap = meta.get("capacity")
    if not isinstance(cap, int) or cap < MIN_CAPACITY or not isinstance(meta.get("barcode"), str):
        raise CartridgeError(f"{path}: bad capacity or barcode in meta.json")
    return meta


class Cartridge:
    """An open cartridge; see the module docstring.  Raises ``CartridgeError`` from the constructor
    when the directory is not a cartridge, ``OSError`` for I/O failures."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.meta = read_meta(path)
        self.barcode = str(self.meta["barcode"])
        self.capacity = int(self.meta["capacity"])  # type: ignore[call-overload]
        self.worm = bool(self.meta.get("worm"))
        self.write_protect = bool(self.meta.get("write_protect"))
        self.recovered = 0  # index records dropped by the recovery rule on this open
        mode = os.O_RDONLY if self.write_protect else os.O_RDWR
        self._data = os.open(os.path.join(path, "data"), mode)
        try:
            self._index = os.open(os.path.join(path, "index"), mode)
        except OSError:
            os.close(self._data)
            raise
        self._mark = -1  # the sync mark's fd (None of it on a write-protected cartridge)
        if not self.write_protect:
            try:
                self._mark = os.open(os.path.join(path, SYNC_MARK), os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                os.close(self._data)
                os.close(self._index)
                raise
        self.synced = 0  # objects the sync mark covers
        self.records = 0  # number of logical objects
        self.data_end = 0  # bytes of data in use
        self.filemarks: list[int] = []  # record numbers of filemarks, ascending
        self.dirty = False
        self._recover()

    # -- open / recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        size = os.fstat(self._index).st_size
        n = size // RECORD_SIZE
        raw = os.pread(self._index, n * RECORD_SIZE, 0) if n else b""
        view = memoryview(raw)
        end = 0
        fms: list[int] = []
        good = 0
        recs: list[Record] = []
        for i in range(n):
            rec = _decode(view[i * RECORD_SIZE : (i + 1) * RECORD_SIZE])
            if rec is None or rec.offset != end or rec.filemarks_before != len(fms):
                break
            recs.append(rec)
            if rec.is_filemark:
                fms.append(i)
            end += rec.stored
            good = i + 1
        data_size = os.fstat(self._data).st_size
        mark = self._read_mark()
        if mark is not None and mark < good:  # objects after the last sync: lost with the buffer
            good = mark
            del fms[bisect_left(fms, good) :]
        while good:
            rec = recs[good - 1]
            if rec.is_filemark:
                break
            if rec.offset + rec.stored <= data_size:
                data = os.pread(self._data, rec.stored, rec.offset)
                if len(data) == rec.stored and crc32c.crc32c(data) == rec.crc:
                    break
            good -= 1
            if fms and fms[-1] == good:
                fms.pop()
        self.recovered = n - good
        self.records = good
        self.data_end = recs[good - 1].offset + recs[good - 1].stored if good else 0
        self.filemarks = fms
        self.synced = good
        if not self.write_protect:
            if size != good * RECORD_SIZE or data_size != self.data_end:
                os.ftruncate(self._index, good * RECORD_SIZE)
                os.ftruncate(self._data, self.data_end)
                os.fdatasync(self._index)
                os.fdatasync(self._data)
            if mark != good:
                self._write_mark(good)

    def _read_mark(self) -> int | None:
        return _read_mark(self.path)

    def _write_mark(self, objects: int) -> None:
        if os.pwrite(self._mark, _encode_mark(objects), 0) != 16:
            raise OSError(f"short write to {self.path}/{SYNC_MARK}")
        os.fdatasync(self._mark)
        self.synced = objects

    # -- reading -----------------------------------------------------------------------------------

    def record(self, n: int) -> Record:
        """Index record ``n`` (0 <= n < records)."""
        if not 0 <= n < self.records:
            raise IndexError(n)
        raw = os.pread(self._index, RECORD_SIZE, n * RECORD_SIZE)
        rec = _decode(raw) if len(raw) == RECORD_SIZE else None
        if rec is None:
            raise CorruptBlock(n)
        return rec

    def read_block(self, rec: Record, limit: int | None = None) -> bytes:
        """The data of block ``rec`` (at most ``limit`` bytes), decompressed; ``CorruptBlock`` when the
        stored bytes fail their crc32c (checked when the whole block is read, always for a compressed
        one) or do not decompress to the recorded length."""
        if rec.kind == KIND_COMPRESSED:
            stored = os.pread(self._data, rec.stored, rec.offset)
            if len(stored) != rec.stored or crc32c.crc32c(stored) != rec.crc:
                raise CorruptBlock(rec.offset)
            try:
                data = zlib.decompress(stored, bufsize=max(rec.length, 1))
            except zlib.error:
                raise CorruptBlock(rec.offset) from None
            if len(data) != rec.length:
                raise CorruptBlock(rec.offset)
            return data if limit is None or limit >= rec.length else data[:limit]
        want = rec.stored if limit is None else min(limit, rec.stored)
        data = os.pread(self._data, want, rec.offset)
        if len(data) != want or (want == rec.stored and crc32c.crc32c(data) != rec.crc):
            raise CorruptBlock(rec.offset)
        return data

    def filemarks_before(self, n: int) -> int:
        """How many filemarks precede logical object ``n`` (the file number at ``n``)."""
        return bisect_left(self.filemarks, n)

    # -- writing -----------------------------------------------------------------------------------

    def truncate(self, n: int) -> None:
        """Drop logical objects ``n`` and after (overwrite / ERASE)."""
        if n >= self.records:
            return
        end = self.record(n).offset
        os.ftruncate(self._index, n * RECORD_SIZE)
        os.ftruncate(self._data, end)
        self.records = n
        self.data_end = end
        del self.filemarks[bisect_left(self.filemarks, n) :]
        self.dirty = True
        if n < self.synced:  # the host overwrites: what followed is no longer there to recover
            self._write_mark(n)

    def append_block(self, data: bytes | memoryview, compress: bool = False) -> int:
        """Append one data block at the end of data (DEFLATE-compressed when ``compress`` and that makes
        it smaller); returns the bytes it takes on the medium."""
        n = len(data)
        kind = KIND_BLOCK
        stored: bytes | memoryview = data
        if compress and n:
            packed = zlib.compress(data, COMPRESSION_LEVEL)
            if len(packed) < n:
                stored, kind = packed, KIND_COMPRESSED
        size = len(stored)
        if size:
            written = os.pwrite(self._data, stored, self.data_end)
            if written != size:
                raise OSError(f"short write to {self.path}/data")
        rec = Record(self.data_end, size, crc32c.crc32c(stored), kind, len(self.filemarks), n)
        os.pwrite(self._index, _encode(rec), self.records * RECORD_SIZE)
        self.records += 1
        self.data_end += size
        self.dirty = True
        return size

    def append_blocks(self, data: memoryview, block_length: int, compress: bool = False) -> int:
        """Append ``len(data) // block_length`` blocks of ``block_length`` bytes (fixed mode); returns
        the bytes they take on the medium."""
        return sum(
            self.append_block(data[off : off + block_length], compress)
            for off in range(0, len(data), block_length)
        )

    def append_filemarks(self, count: int) -> None:
        """Append ``count`` filemarks."""
        recs = bytearray()
        for i in range(count):
            rec = Record(self.data_end, 0, 0, KIND_FILEMARK, len(self.filemarks), 0)
            recs += _encode(rec)
            self.filemarks.append(self.records + i)
        if recs:
            os.pwrite(self._index, recs, self.records * RECORD_SIZE)
        self.records += count
        self.dirty = True

    def sync(self) -> None:
        """Make every object durable: fdatasync ``data``, then ``index``, then move the sync mark to
        the end of data (after a crash the cartridge ends here, see the module docstring)."""
        if self.dirty:
            os.fdatasync(self._data)
            os.fdatasync(self._index)
            if self.records != self.synced:
                self._write_mark(self.records)
            self.dirty = False

    # -- metadata ----------------------------------------------------------------------------------

    def save_meta(self) -> None:
        """Write meta.json atomically (load count, MAM attributes)."""
        _write_json_atomic(os.path.join(self.path, "meta.json"), self.meta)

    def count_load(self) -> None:
        self.meta["load_count"] = int(self.meta.get("load_count", 0)) + 1  # type: ignore[call-overload]
        if not self.write_protect:
            self.save_meta()

    @property
    def load_count(self) -> int:
        return int(self.meta.get("load_count", 0))  # type: ignore[call-overload]

    def close(self) -> None:
        """Sync and close the files (idempotent)."""
        if self._data < 0:
            return
        try:
            if not self.write_protect:
                self.sync()
        finally:
            os.close(self._data)
            os.close(self._index)
            if self._mark >= 0:
                os.close(self._mark)
            self._data = self._index = self._mark = -1


def cartridge_summary(path: str) -> dict[str, object]:
    """Barcode, capacity, used bytes, blocks, files (filemarks), flags of a cartridge, read without
    changing it (no recovery is written; objects after the sync mark, which the next load drops, are
    not counted)."""
    meta = read_meta(path)
    idx_size = os.path.getsize(os.path.join(path, "index"))
    n = idx_size // RECORD_SIZE
    mark = _read_mark(path)
    if mark is not None:
        n = min(n, mark)
    files = 0
    used = 0
    if n:
        with open(os.path.join(path, "index"), "rb") as f:
            raw = f.read(n * RECORD_SIZE)
        last = _decode(raw[(n - 1) * RECORD_SIZE :])
        if last is not None:
            used = last.offset + last.stored
            files = last.filemarks_before + (1 if last.is_filemark else 0)
    return {
        "barcode": meta["barcode"],
        "capacity": meta["capacity"],
        "used": used,
        "objects": n,
        "files": files,
        "worm": bool(meta.get("worm")),
        "write_protect": bool(meta.get("write_protect")),
        "load_count": meta.get("load_count", 0),
    }
