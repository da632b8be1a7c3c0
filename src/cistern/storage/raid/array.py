"""A software RAID array as a :class:`~cistern.storage.base.BackingStore` over member stores.

Levels 0, 1, 5, 6 and 10 with md's layouts (layout.py), md-identical parity (gf.py), a superblock and
write-intent bitmap on every member (superblock.py) and an optional write journal (journal.py).

Member life cycle (states as md's ``dev-*/state``): ``in_sync`` → ``faulty`` when an I/O returns an error,
takes longer than ``member_timeout`` seconds, or its file disappears (its ``errors`` counted); a ``spare``
takes over a faulty/missing role as ``rebuilding`` (background, throttled between ``speed_min`` and
``speed_max`` bytes/s like md's ``speed_limit_min``/``max``: the minimum while foreground I/O is running,
the maximum when idle; the progress ``recovery_offset`` is checkpointed in the superblocks so a restart
resumes) and becomes ``in_sync`` when done.

I/O rules.  Reads of a role that is not readable (faulty, missing, or rebuilding beyond its recovery
offset) are reconstructed from the stripe's other members under the stripe's row lock.  RAID 5/6 writes
are reconstruct-writes under the row lock: the untouched part of the written span is read (degraded reads
where needed), parity is recomputed and data + parity are written to every writable member, after a
journal record when a journal is configured.  A write is acknowledged only while every touched stripe still
has at most the level's redundancy of unusable roles; otherwise it fails with :class:`OSError` (the device
server answers MEDIUM ERROR).  Errors: :class:`OSError` from every I/O method; :class:`RaidConfigError`
(a ValueError) from assembly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..base import BackingStore, StoreError
from . import gf
from .journal import Journal
from .layout import MIN_MEMBERS, REDUNDANCY, Geometry
from .locks import RowLocks
from .superblock import (
    BITMAP_MAX_BYTES,
    BITMAP_OFFSET,
    DATA_OFFSET,
    SB_SIZE,
    Slot,
    Superblock,
    pick,
)

log = logging.getLogger("cistern.raid")

WINDOW = 4 << 20  # rebuild/scrub work unit per member (bytes, rounded to whole chunks)
MAX_REPORTED_MISMATCHES = 64
#: mdadm --monitor event names logged as warnings (the others are informational)
ALERT_EVENTS = frozenset({"Fail", "FailSpare", "DegradedArray", "ArrayFailed", "RebuildAborted"})


class RaidConfigError(ValueError):
    """The members given cannot form (or do not form) the configured array."""


class ArrayFailedError(StoreError):
    """More members are unusable than the level tolerates for this stripe."""


@dataclass
class Member:
    """One member device: its store, where it came from, and its state in the array."""

    store: BackingStore
    name: str
    device_uuid: str
    role: int = -1  # -1: spare
    state: str = "spare"  # in_sync, rebuilding, faulty, spare, stale
    recovery_offset: int = 0
    errors: int = 0
    events: int = 0
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of a file member, to notice it vanishing

    def readable(self, off: int, length: int) -> bool:
        return self.state == "in_sync" or (self.state == "rebuilding" and off + length <= self.recovery_offset)

    @property
    def writable(self) -> bool:
        return self.state in ("in_sync", "rebuilding")


@dataclass
class SyncProgress:
    """The running (or last) background action: resync, recover, check, repair, bitmap-resync."""

    action: str = "idle"
    done: int = 0  # member data bytes processed
    total: int = 0
    started: float = 0.0
    speed: float = 0.0  # bytes/s of member data
    mismatches: int = 0  # stripes (RAID 5/6) or rows (RAID 1/10) found inconsistent
    mismatch_stripes: list[int] = field(default_factory=list)
    repaired: list[tuple[int, str]] = field(default_factory=list)  # (stripe, what was rewritten)
    bytes_copied: int = 0


def _arr(n: int) -> np.ndarray:
    return np.empty(n, dtype=np.uint8)


class RaidStore(BackingStore):
    """A RAID array; build it with :meth:`assemble` (see module docstring)."""

    supports_unmap = False

    def __init__(
        self,
        geometry: Geometry,
        slots: list[Member | None],
        spares: list[Member],
        *,
        array_uuid: str,
        events: int,
        block_size: int = 512,
        bitmap_region: int = 0,
        journal: Journal | None = None,
        member_timeout: float = 30.0,
        speed_min: int = 1 << 20,
        speed_max: int = 0,
        name: str = "raid",
    ) -> None:
        super().__init__(geometry.size, block_size=block_size)
        self.geometry = geometry
        self.slots = slots
        self.spares = spares
        self.stale: list[Member] = []
        self.array_uuid = array_uuid
        self.events = events
        self.name = name
        self.journal = journal
        self.member_timeout = member_timeout
        self.speed_min = speed_min
        self.speed_max = speed_max
        self.clean = True
        self.locks = RowLocks()
        self._sb_lock = asyncio.Lock()
        self.bitmap_region = bitmap_region
        nregions = -(-geometry.member_size // bitmap_region) if bitmap_region else 0
        self.bitmap = bytearray(-(-nregions // 8))
        self.bitmap_valid_from: int | None = None
        self.sync = SyncProgress()
        self.last_check: SyncProgress | None = None
        self.last_sync: SyncProgress | None = None
        self.resync_needed: str | None = None
        self.mismatch_cnt = 0  # from the superblock until this process runs a check
        self.lock_fds: list[int] = []  # flock()s that keep a second process off the members  # "full" or "dirty": parity/mirrors may disagree
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._inflight = 0
        self._last_foreground = 0.0
        self._last_write = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bg: asyncio.Task[Any] | None = None
        self._closed = False
        self._rr = 0
        self.failed = False
        self.auto_rebuild = True  # a spare takes over a faulty/missing role at once
        #: test hook (env CISTERN_RAID_WRITE_GAP, seconds): RAID 5/6 writes data, waits, then parity, so a
        #: crash test can land in the write hole every time
        self.write_gap = 0.0
        self.scrub_interval = 0.0  # seconds between background checks (0: never)

    # ------------------------------------------------------------------ assembly

    @classmethod
    async def assemble(
        cls,
        members: list[tuple[str, BackingStore]],
        spares: list[tuple[str, BackingStore]] = (),  # type: ignore[assignment]
        *,
        level: int,
        chunk: int = 512 * 1024,
        block_size: int = 512,
        bitmap_region: int = 0,
        journal_store: BackingStore | None = None,
        member_timeout: float = 30.0,
        speed_min: int = 1 << 20,
        speed_max: int = 0,
        size_tolerance: float = 0.01,
        assume_clean: bool = False,
        name: str = "raid",
        configured_members: int | None = None,
    ) -> RaidStore:
        """Assemble the array from its members (any order) or create it when no member has a superblock.

        ``configured_members`` is how many members the config lists when some of them could not be
        opened (absent files: those roles assemble as missing).
        Raises :class:`RaidConfigError` for an impossible layout, members of another array, a geometry
        that disagrees with the superblocks, or too few fresh members to run.
        """
        nconfigured = len(members) if configured_members is None else configured_members
        if nconfigured < MIN_MEMBERS.get(level, 2):
            raise RaidConfigError(f"RAID {level} needs at least {MIN_MEMBERS.get(level, 2)} members, got {len(members)}")
        everything = list(members) + list(spares)
        found: list[tuple[str, BackingStore, Superblock | None]] = []
        for mname, store in everything:
            if store.size < DATA_OFFSET + chunk:
                raise RaidConfigError(f"member {mname}: {store.size} bytes is too small (needs > {DATA_OFFSET + chunk})")
            buf = bytearray(2 * SB_SIZE)
            await store.read_into(0, memoryview(buf))
            found.append((mname, store, pick([bytes(buf[:SB_SIZE]), bytes(buf[SB_SIZE:])])))
        uuids = {sb.array_uuid for _, _, sb in found if sb is not None}
        if len(uuids) > 1:
            raise RaidConfigError("members belong to different arrays: " + ", ".join(
                f"{n}={sb.array_uuid}" for n, _, sb in found if sb is not None))
        sizes = [s.size - DATA_OFFSET for _, s in members]
        if max(sizes) - min(sizes) > size_tolerance * max(sizes):
            raise RaidConfigError(
                f"member sizes differ by more than {size_tolerance:.0%}: {min(sizes)}..{max(sizes)} bytes")
        journal = Journal(journal_store) if journal_store is not None else None
        if not uuids:
            if len(members) != nconfigured:
                raise RaidConfigError(f"no superblock on any member and {nconfigured - len(members)} member(s) "
                                      "absent: the array cannot be created")
            return await cls._create(found, len(members), level, chunk, block_size, bitmap_region, journal,
                                     member_timeout, speed_min, speed_max, assume_clean, name)
        auth = max((sb for _, _, sb in found if sb is not None), key=lambda sb: sb.events)
        if auth.level != level or auth.chunk != chunk:
            raise RaidConfigError(
                f"the members hold RAID {auth.level} with chunk {auth.chunk}, the config says RAID {level} "
                f"chunk {chunk}")
        if auth.members != nconfigured:
            raise RaidConfigError(f"the members hold a {auth.members}-member array, the config lists {nconfigured}")
        geometry = Geometry(level, auth.members, chunk, auth.member_size)
        by_dev = {sb.device_uuid: (n, st, sb) for n, st, sb in found if sb is not None}
        slots: list[Member | None] = []
        stale: list[Member] = []
        for role, slot in enumerate(auth.slots):
            got = by_dev.pop(slot.device, None) if slot.device else None
            if got is None or slot.state in ("faulty", "missing"):
                if got is not None:
                    n, st, sb = got
                    stale.append(Member(st, n, sb.device_uuid, role, "stale", events=sb.events))
                slots.append(None)
                continue
            n, st, sb = got
            if sb.events < auth.events:
                log.warning("raid %s: kicking non-fresh member %s (events %d < %d)", name, n, sb.events, auth.events)
                stale.append(Member(st, n, sb.device_uuid, role, "stale", events=sb.events))
                slots.append(None)
                continue
            slots.append(Member(st, n, sb.device_uuid, role, slot.state, slot.recovery_offset, events=sb.events))
        spare_members: list[Member] = []
        for dev in auth.spares:
            got = by_dev.pop(dev, None)
            if got is not None:
                spare_members.append(Member(got[1], got[0], dev))
        for n, st, sb in list(by_dev.values()):  # members of this array no longer in its view
            stale.append(Member(st, n, sb.device_uuid, -1, "stale", events=sb.events))
        for n, st, fsb in found:
            if fsb is None:  # a fresh device: a spare (e.g. the replacement of a failed member)
                if st.size - DATA_OFFSET < geometry.member_size:
                    raise RaidConfigError(f"member {n} is smaller than the array's members")
                spare_members.append(Member(st, n, str(uuid.uuid4())))
        arr = cls(geometry, slots, spare_members, array_uuid=auth.array_uuid, events=auth.events,
                  block_size=block_size, bitmap_region=auth.bitmap_region, journal=journal,
                  member_timeout=member_timeout, speed_min=speed_min, speed_max=speed_max, name=name)
        arr.stale = stale
        arr.bitmap_valid_from = auth.bitmap_valid_from
        arr.clean = auth.clean
        arr.mismatch_cnt = auth.mismatch_cnt
        if bitmap_region != auth.bitmap_region:
            log.info("raid %s: keeping the bitmap region of the superblock (%d)", name, auth.bitmap_region)
        for m in slots:
            if m is not None and arr.bitmap:
                await m.store.read_into(BITMAP_OFFSET, memoryview(arr.bitmap))
                break
        for m in arr.members():
            arr._note_ident(m)
        if not arr._stripes_servable():
            raise RaidConfigError(
                f"RAID {level} array {auth.array_uuid} cannot run: too few fresh members "
                f"({sum(1 for m in slots if m is not None)} of {auth.members})")
        await arr._recover_after_crash()
        await arr.write_superblocks()
        return arr

    @classmethod
    async def _create(cls, found: list[tuple[str, BackingStore, Superblock | None]], nmembers: int, level: int,
                      chunk: int, block_size: int, bitmap_region: int, journal: Journal | None,
                      member_timeout: float, speed_min: int, speed_max: int, assume_clean: bool,
                      name: str) -> RaidStore:
        member_size = min(st.size for _, st, _ in found[:nmembers]) - DATA_OFFSET
        member_size -= member_size % chunk
        try:
            geometry = Geometry(level, nmembers, chunk, member_size)
        except ValueError as exc:
            raise RaidConfigError(str(exc)) from None
        if bitmap_region:
            bitmap_region = max(bitmap_region, chunk)
            bitmap_region -= bitmap_region % chunk
            while -(-member_size // bitmap_region) > BITMAP_MAX_BYTES * 8:
                bitmap_region *= 2
        slots: list[Member | None] = [Member(st, n, str(uuid.uuid4()), i, "in_sync")
                                      for i, (n, st, _) in enumerate(found[:nmembers])]
        spares = [Member(st, n, str(uuid.uuid4())) for n, st, _ in found[nmembers:]]
        arr = cls(geometry, slots, spares, array_uuid=str(uuid.uuid4()), events=0, block_size=block_size,
                  bitmap_region=bitmap_region, journal=journal, member_timeout=member_timeout,
                  speed_min=speed_min, speed_max=speed_max, name=name)
        for m in arr.members():
            arr._note_ident(m)
        if journal is not None:
            await journal.reset()
        if not assume_clean and level != 0:
            arr.clean = False  # the initial resync makes parity/mirrors agree
            arr.resync_needed = "full"
        await arr.write_superblocks()
        if arr.bitmap:
            await arr._write_bitmap()
        log.info("raid %s: created RAID %d over %d members, chunk %d, %d bytes", name, level, nmembers, chunk,
                 geometry.size)
        return arr

    async def _recover_after_crash(self) -> None:
        if self.journal is not None:
            records = await self.journal.read_pending()
            applied = 0
            for rec in records:
                for role, off, data in rec:
                    m = self.slots[role] if 0 <= role < len(self.slots) else None
                    if m is not None and m.writable:
                        await m.store.write(DATA_OFFSET + off, data)
                        applied += 1
            if records:
                await self._flush_members()
                log.info("raid %s: journal replayed %d records (%d member writes)", self.name, len(records), applied)
            await self.journal.reset()
            self.clean = True
        if not self.clean and self.geometry.level != 0:
            self.resync_needed = "dirty" if self.bitmap else "full"
            log.warning("raid %s: unclean shutdown; resync %s", self.name,
                        "of the dirty bitmap regions" if self.bitmap else "of the whole array")
            if self.degraded and self.geometry.parity:
                log.warning("raid %s: unclean shutdown of a degraded RAID %d without a journal: stripes written "
                            "at the crash may be inconsistent (write hole)", self.name, self.geometry.level)

    def _note_ident(self, m: Member) -> None:
        path = getattr(m.store, "path", None)
        if isinstance(path, str):
            with contextlib.suppress(OSError):
                st = os.stat(path)
                m.ident = (st.st_dev, st.st_ino)

    # ------------------------------------------------------------------ state

    def members(self) -> list[Member]:
        return [m for m in self.slots if m is not None] + self.spares + self.stale

    def _stripes_servable(self) -> bool:
        """Whether every stripe still has at most the level's redundancy of unusable roles."""
        g = self.geometry
        bad = [i for i, m in enumerate(self.slots) if m is None or m.state != "in_sync"]
        if g.level == 0:
            return not bad
        if g.level == 1:
            return len(bad) < g.members
        if g.level == 10:
            badset = set(bad)
            return not any(
                {a for a, _ in g.copies(c)} <= badset for c in range(min(g.members, g.size // g.chunk)))
        return len(bad) <= REDUNDANCY[g.level]

    @property
    def degraded(self) -> bool:
        return any(m is None or m.state != "in_sync" for m in self.slots)

    @property
    def state(self) -> str:
        """clean, degraded, rebuilding, checking, resyncing or failed (md's array state + sync_action)."""
        if self.failed:
            return "failed"
        if self.sync.action == "recover":
            return "rebuilding"
        if self.sync.action in ("check", "repair"):
            return "checking"
        if self.degraded:
            return "degraded"
        if self.sync.action in ("resync", "bitmap-resync"):
            return "resyncing"
        return "clean"

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``cistern raid status``, SES and logs."""
        g = self.geometry
        sync = self.sync if self.sync.action != "idle" else None
        last = self.last_check
        return {
            "name": self.name,
            "uuid": self.array_uuid,
            "level": g.level,
            "layout": "left-symmetric" if g.parity else ("near-2" if g.level == 10 else "-"),
            "chunk": g.chunk,
            "members": g.members,
            "size": g.size,
            "state": self.state,
            "events": self.events,
            "sync_action": self.sync.action,
            "sync_progress": (sync.done / sync.total) if sync and sync.total else None,
            "sync_speed": sync.speed if sync else None,
            "mismatch_cnt": last.mismatches if last else self.mismatch_cnt,
            "mismatch_stripes": list(last.mismatch_stripes) if last else [],
            "devices": [
                {"name": m.name, "role": m.role, "state": m.state, "errors": m.errors,
                 "recovery_offset": m.recovery_offset}
                for m in self.members()
            ] + [{"name": "(missing)", "role": i, "state": "missing", "errors": 0, "recovery_offset": 0}
                 for i, m in enumerate(self.slots) if m is None],
        }

    def _emit(self, kind: str, **info: Any) -> None:
        info.setdefault("state", self.state)
        level = logging.WARNING if kind in ALERT_EVENTS else logging.INFO
        log.log(level, "raid %s: %s %s", self.name, kind, " ".join(f"{k}={v}" for k, v in info.items()))
        for fn in list(self.listeners):
            try:
                fn(kind, info)
            except Exception:  # a listener must not break the array
                log.exception("raid event listener failed")

    def _superblock(self, m: Member) -> Superblock:
        g = self.geometry
        return Superblock(
            array_uuid=self.array_uuid, level=g.level, chunk=g.chunk, members=g.members,
            member_size=g.member_size, device_uuid=m.device_uuid, role=m.role, events=self.events,
            clean=self.clean,
            slots=[Slot(None, "missing") if s is None else
                   Slot(s.device_uuid, s.state if s.state in ("in_sync", "rebuilding") else "faulty",
                        s.recovery_offset) for s in self.slots],
            spares=[s.device_uuid for s in self.spares],
            bitmap_region=self.bitmap_region, bitmap_valid_from=self.bitmap_valid_from,
            mismatch_cnt=self.last_check.mismatches if self.last_check else self.mismatch_cnt,
            sync_action=self.sync.action,
        )

    async def write_superblocks(self) -> None:
        """Bump the event count and write the superblock to every live member and spare."""
        async with self._sb_lock:
            self.events += 1
            targets = [m for m in self.members() if m.writable or m.state == "spare"]
            results = await asyncio.gather(
                *(self._meta_write(m, self._superblock(m).slot_offset(), self._superblock(m).encode())
                  for m in targets))
        for m, ok in zip(targets, results, strict=True):
            if ok:
                m.events = self.events
        if not all(results):
            await self.write_superblocks()

    async def _meta_write(self, m: Member, offset: int, data: bytes) -> bool:
        try:
            await self._timed(m.store.write(offset, data))
            return True
        except (OSError, TimeoutError) as exc:
            self._mark_failed(m, exc)
            return False

    async def _timed(self, aw: Any) -> Any:
        if self.member_timeout > 0:
            if asyncio.current_task() is None:  # run eagerly outside a task (target/engine.py)
                return await asyncio.wait_for(aw, self.member_timeout)
            async with asyncio.timeout(self.member_timeout):  # a timer handle, not a task per I/O
                return await aw
        return await aw

    def _mark_failed(self, m: Member, exc: BaseException | str) -> None:
        """Fail a member (its superblocks are written by the caller's next metadata update)."""
        if m.state in ("faulty", "stale"):
            return
        m.errors += 1
        was = m.state
        why = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        if was == "spare":
            m.state = "faulty"
            self.spares.remove(m)
            self.stale.append(m)
            self._emit("FailSpare", member=m.name, reason=why)
            return
        if not self.degraded:  # the bitmap now keeps what this member misses (its last superblock: m.events)
            self.bitmap_valid_from = m.events
        m.state = "faulty"
        if not self._stripes_servable():
            self.failed = True
        self._emit("Fail", member=m.name, role=m.role, reason=why)
        self._spawn(self._after_failure())

    async def _after_failure(self) -> None:
        await self.write_superblocks()
        if self.failed:
            self._emit("ArrayFailed")
        else:
            self._emit("DegradedArray")
            self._kick_recovery()

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ member I/O

    async def _mread(self, m: Member, off: int, n: int) -> np.ndarray | None:
        """Read ``n`` bytes of ``m``'s data area at ``off`` into a private array; None when it failed."""
        buf = _arr(n)
        try:
            await self._timed(m.store.read_into(DATA_OFFSET + off, memoryview(buf)))  # type: ignore[arg-type]
            return buf
        except (OSError, TimeoutError) as exc:
            self._mark_failed(m, exc)
            return None

    async def _mwrite(self, m: Member, off: int, data: Any) -> bool:
        try:
            await self._timed(m.store.write(DATA_OFFSET + off, memoryview(data).cast("B")))
            return True
        except (OSError, TimeoutError) as exc:
            self._mark_failed(m, exc)
            return False

    # ------------------------------------------------------------------ BackingStore

    async def read_into(self, offset: int, buf: memoryview) -> None:
        self._check_range(offset, len(buf))
        self._last_foreground = time.monotonic()
        out = np.frombuffer(buf, dtype=np.uint8) if len(buf) else None
        if out is None:
            return
        g = self.geometry
        pieces = list(g.pieces(offset, len(buf)))
        if len(pieces) == 1:
            p = pieces[0]
            await self._read_piece(p.index, p.chunk, p.lo, p.hi, out)
            return
        tasks = []
        runs: dict[int, list[tuple[int, Any]]] = {}  # member -> [(member offset, piece)] read directly
        c = g.chunk
        for p in pieces:
            if g.level in (0, 5, 6):
                mi = p.chunk if g.level == 0 else g.stripe_roles(p.index)[p.chunk]
                m = self.slots[mi]
                if m is not None and m.readable(p.index * c, c):
                    runs.setdefault(mi, []).append((p.index * c + p.lo, p))
                    continue
            tasks.append(self._read_piece(p.index, p.chunk, p.lo, p.hi, out[p.buf_off : p.buf_off + p.hi - p.lo]))
        for mi, items in runs.items():  # one member read per contiguous run of member offsets
            start = 0
            for i in range(1, len(items) + 1):
                if i == len(items) or items[i][0] != items[i - 1][0] + items[i - 1][1].hi - items[i - 1][1].lo:
                    tasks.append(self._read_run(mi, items[start:i], out))
                    start = i
        await asyncio.gather(*tasks)

    async def _read_run(self, mi: int, items: list[tuple[int, Any]], out: np.ndarray) -> None:
        """Read pieces lying back to back on member ``mi`` with one member read; on a member failure
        fall back to piece by piece (then reconstructed)."""
        m = self.slots[mi]
        first = items[0][0]
        last_off, last = items[-1]
        got = None
        if m is not None:
            got = await self._mread(m, first, last_off + last.hi - last.lo - first)
        for moff, p in items:
            dst = out[p.buf_off : p.buf_off + p.hi - p.lo]
            if got is not None:
                dst[:] = got[moff - first : moff - first + p.hi - p.lo]
            else:
                await self._read_piece(p.index, p.chunk, p.lo, p.hi, dst)

    async def _read_piece(self, index: int, chunk_i: int, lo: int, hi: int, out: np.ndarray) -> None:
        g = self.geometry
        c = g.chunk
        for _attempt in range(g.members + 2):
            if g.level == 0:
                m = self.slots[chunk_i]
                if m is None or not m.readable(0, 0):
                    break
                got = await self._mread(m, index * c + lo, hi - lo)
            elif g.level in (1, 10):
                if g.level == 1:
                    cands = [(m, index) for m in self.slots]
                else:
                    cands = [(self.slots[mi], row) for mi, row in g.copies(index)]
                usable = [(m, row) for m, row in cands if m is not None and m.readable(row * c, c)]
                if not usable:
                    break
                self._rr += 1
                m, row = usable[self._rr % len(usable)]
                got = await self._mread(m, row * c + lo, hi - lo)
            else:
                roles = g.stripe_roles(index)
                m = self.slots[roles[chunk_i]]
                if m is not None and m.readable(index * c, c):
                    got = await self._mread(m, index * c + lo, hi - lo)
                else:
                    async with self.locks.hold((index,)):
                        got = (await self._stripe_read(index, [chunk_i], lo, hi))[chunk_i]
            if got is not None:
                out[:] = got
                return
        raise ArrayFailedError(f"RAID {g.level} array {self.name}: no usable copy of chunk {index}")

    async def _stripe_read(self, s: int, wanted: list[int], lo: int, hi: int) -> dict[int, np.ndarray]:
        """Roles ``wanted`` (data 0..k-1, P = k, Q = k+1) of stripe ``s`` over ``[lo, hi)``,
        reconstructed where their member is not readable.  The caller holds the row lock."""
        g = self.geometry
        c = g.chunk
        k = g.data_chunks
        nroles = k + (2 if g.level == 6 else 1)
        roles = g.stripe_roles(s)
        for _attempt in range(g.members + 2):
            avail = [r for r in range(nroles)
                     if (m := self.slots[roles[r]]) is not None and m.readable(s * c, c)]
            direct = all(r in avail for r in wanted)
            to_read = wanted if direct else avail
            got = await asyncio.gather(*(self._mread(self.slots[roles[r]], s * c + lo, hi - lo)  # type: ignore[arg-type]
                                         for r in to_read))
            if any(x is None for x in got):
                continue  # a member failed under us: try again with what is left
            have: dict[int, np.ndarray] = {r: x for r, x in zip(to_read, got, strict=True) if x is not None}
            if direct:
                return have
            full = self._reconstruct(k, have, hi - lo, set(wanted))
            return {r: full[r] for r in wanted}
        raise ArrayFailedError(f"stripe {s} of {self.name} cannot be read")

    def _reconstruct(self, k: int, have: dict[int, np.ndarray], n: int,
                     need: set[int] | None = None) -> dict[int, np.ndarray]:
        """All data roles plus P (and Q) from the roles in ``have`` (parity only when in ``need``, if given)."""
        level = self.geometry.level
        data: list[np.ndarray | None] = [have.get(i) for i in range(k)]
        missing = [i for i in range(k) if data[i] is None]
        p = have.get(k)
        q = have.get(k + 1) if level == 6 else None
        if len(missing) == 1 and p is not None:
            x = missing[0]
            acc = p.copy()
            for i, d in enumerate(data):
                if i != x and d is not None:
                    acc ^= d
            data[x] = acc
        elif len(missing) == 1 and q is not None:
            data[missing[0]] = gf.recover_data_from_q(data, q, missing[0])
        elif len(missing) == 2 and p is not None and q is not None:
            a, b = missing
            data[a], data[b] = gf.recover_two_data(data, p, q, a, b)
        elif missing:
            raise ArrayFailedError(f"{len(missing)} data chunks of a stripe of {self.name} are lost")
        full: dict[int, np.ndarray] = dict(enumerate(data))  # type: ignore[arg-type]
        if need is not None and not need & {k, k + 1}:
            return full
        if level == 6:
            full[k], full[k + 1] = gf.parity_pq([full[i] for i in range(k)])
        elif level == 5:
            full[k] = gf.parity_p([full[i] for i in range(k)])
        return full

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.read_only:
            raise StoreError("store is read-only")
        self._check_range(offset, len(data))
        if not len(data):
            return
        if self.failed:
            raise ArrayFailedError(f"RAID array {self.name} has failed")
        now = time.monotonic()
        self._last_foreground = self._last_write = now
        src = np.frombuffer(data, dtype=np.uint8)
        g = self.geometry
        self._inflight += 1
        try:
            rows = g.rows_of(offset, len(data))
            if self.bitmap or self.clean:
                await self._mark_dirty(rows)
            pieces = list(g.pieces(offset, len(data)))
            if g.level == 0:
                # one member write per contiguous run of member offsets (a 1 MiB write: one per member)
                runs: list[tuple[int, int, int, list[np.ndarray]]] = []  # (member, offset, length, parts)
                for p in sorted(pieces, key=lambda p: (p.chunk, p.index)):
                    moff, n = p.index * g.chunk + p.lo, p.hi - p.lo
                    part = src[p.buf_off:p.buf_off + n]
                    if runs and runs[-1][0] == p.chunk and runs[-1][1] + runs[-1][2] == moff:
                        mi, start, length, parts = runs[-1]
                        runs[-1] = (mi, start, length + n, [*parts, part])
                    else:
                        runs.append((p.chunk, moff, n, [part]))
                oks = await asyncio.gather(*(
                    self._write_raid0(mi, moff, parts[0] if len(parts) == 1 else np.concatenate(parts))
                    for mi, moff, _, parts in runs))
                if not all(oks):
                    raise ArrayFailedError(f"RAID 0 array {self.name}: member write failed")
                return
            if g.level in (1, 10):
                async with self.locks.hold(rows):
                    await asyncio.gather(*(self._write_mirror(p.index, p.lo, src[p.buf_off:p.buf_off + p.hi - p.lo])
                                           for p in pieces))
                return
            by_stripe: dict[int, list[Any]] = {}
            for p in pieces:
                by_stripe.setdefault(p.index, []).append(p)
            async with self.locks.hold(by_stripe):
                await asyncio.gather(*(self._write_stripe(s, ps, src) for s, ps in by_stripe.items()))
        finally:
            self._inflight -= 1

    async def _write_raid0(self, i: int, moff: int, data: np.ndarray) -> bool:
        m = self.slots[i]
        if m is None or not m.writable:
            return False
        return await self._mwrite(m, moff, data)

    async def _write_mirror(self, index: int, lo: int, data: np.ndarray) -> None:
        g = self.geometry
        c = g.chunk
        if g.level == 1:
            targets = [(m, index) for m in self.slots]
        else:
            targets = [(self.slots[mi], row) for mi, row in g.copies(index)]
        live = [(m, row) for m, row in targets if m is not None and m.writable]
        oks = await asyncio.gather(*(self._mwrite(m, row * c + lo, data) for m, row in live))
        if not any(ok and m.readable(row * c, c) for (m, row), ok in zip(live, oks, strict=True)):
            raise ArrayFailedError(f"RAID {g.level} array {self.name}: no copy of chunk {index} written")

    async def _write_stripe(self, s: int, pieces: list[Any], src: np.ndarray) -> None:
        g = self.geometry
        c = g.chunk
        k = g.data_chunks
        a = min(p.lo for p in pieces)
        b = max(p.hi for p in pieces)
        n = b - a
        covered = {p.chunk for p in pieces if p.lo == a and p.hi == b}
        need = [i for i in range(k) if i not in covered]
        old = await self._stripe_read(s, need, a, b) if need else {}
        data: list[np.ndarray] = []
        for i in range(k):
            data.append(old[i].copy() if i in old else _arr(n))
        for p in pieces:
            data[p.chunk][p.lo - a : p.hi - a] = src[p.buf_off : p.buf_off + p.hi - p.lo]
        if g.level == 6:
            pp, qq = gf.parity_pq(data)
            content = {**dict(enumerate(data)), k: pp, k + 1: qq}
        else:
            content = {**dict(enumerate(data)), k: gf.parity_p(data)}
        touched = {p.chunk for p in pieces} | ({k, k + 1} if g.level == 6 else {k})
        roles = g.stripe_roles(s)
        writes = [(r, m) for r in sorted(touched) if (m := self.slots[roles[r]]) is not None and m.writable]
        if self.journal is not None:
            await self.journal.append([(roles[r], s * c + a, content[r].data) for r, _ in writes],
                                      self._flush_members)
        try:
            if self.write_gap > 0:  # fault injection: data first, parity after a pause (a wide write hole)
                await asyncio.gather(*(self._mwrite(m, s * c + a, content[r]) for r, m in writes if r < k))
                await asyncio.sleep(self.write_gap)
                await asyncio.gather(*(self._mwrite(m, s * c + a, content[r]) for r, m in writes if r >= k))
            else:
                await asyncio.gather(*(self._mwrite(m, s * c + a, content[r]) for r, m in writes))
        finally:
            if self.journal is not None:
                self.journal.done()
        unusable = sum(1 for mi in roles if (m := self.slots[mi]) is None or not m.readable(s * c, c))
        if unusable > REDUNDANCY[g.level]:
            raise ArrayFailedError(f"stripe {s} of {self.name} lost more members than RAID {g.level} tolerates")

    async def _flush_members(self) -> None:
        live = [m for m in self.members() if m.writable]
        await asyncio.gather(*(self._flush_one(m) for m in live))

    async def _flush_one(self, m: Member) -> None:
        try:
            await self._timed(m.store.flush())
        except (OSError, TimeoutError) as exc:
            self._mark_failed(m, exc)

    async def flush(self) -> None:
        if self.journal is not None:
            await self.journal.store.flush()
        await self._flush_members()
        if self.failed:
            raise ArrayFailedError(f"RAID array {self.name} has failed")

    # ------------------------------------------------------------------ bitmap

    def _regions(self, rows: list[int]) -> set[int]:
        c = self.geometry.chunk
        return {r * c // self.bitmap_region for r in rows} if self.bitmap_region else set()

    async def _mark_dirty(self, rows: list[int]) -> None:
        changed = False
        for reg in self._regions(rows):
            byte, bit = divmod(reg, 8)
            if not self.bitmap[byte] >> bit & 1:
                self.bitmap[byte] |= 1 << bit
                changed = True
        if self.clean:
            self.clean = False
            await self.write_superblocks()
        if changed:
            await self._write_bitmap()

    async def _write_bitmap(self) -> None:
        snapshot = bytes(self.bitmap)
        live = [m for m in self.members() if m.writable]
        await asyncio.gather(*(self._meta_write(m, BITMAP_OFFSET, snapshot) for m in live))

    def dirty_regions(self) -> list[int]:
        return [i for i in range(len(self.bitmap) * 8) if self.bitmap[i // 8] >> (i % 8) & 1]

    async def _bitmap_daemon(self) -> None:
        """Clear the bitmap (and mark the array clean) once writes settle on an optimal array."""
        while not self._closed:
            await asyncio.sleep(0.5)
            idle = time.monotonic() - self._last_write > 1.0
            if not idle or self._inflight or self.degraded or self.sync.action != "idle":
                continue
            if any(self.bitmap) or not self.clean or self.bitmap_valid_from is not None:
                await self._flush_members()
                if self._inflight or time.monotonic() - self._last_write <= 1.0:
                    continue
                self.bitmap[:] = bytes(len(self.bitmap))
                self.bitmap_valid_from = None
                if self.bitmap:
                    await self._write_bitmap()
                self.clean = True
                await self.write_superblocks()

    # ------------------------------------------------------------------ background work

    def start_background(self) -> None:
        """Start the monitor (rebuild, resync, bitmap, member watch); needs a running event loop."""
        if self._bg is None and not self._closed:
            self._bg = asyncio.get_running_loop().create_task(self._monitor())

    async def _monitor(self) -> None:
        self._spawn(self._bitmap_daemon())
        await self.resync_if_needed()
        self._kick_recovery()
        next_scrub = time.monotonic() + self.scrub_interval
        while not self._closed:
            await asyncio.sleep(min(1.0, self.scrub_interval or 1.0))
            if self.scrub_interval and time.monotonic() >= next_scrub:
                next_scrub = time.monotonic() + self.scrub_interval
                if not self.degraded and self.sync.action == "idle" and self.geometry.level != 0:
                    self._spawn(self._background_check())
            for m in self.members():
                if m.ident is not None and m.state in ("in_sync", "rebuilding", "spare"):
                    path = getattr(m.store, "path", "")
                    try:
                        st = os.stat(path)
                        gone = (st.st_dev, st.st_ino) != m.ident
                    except OSError:
                        gone = True
                    if gone:
                        self._mark_failed(m, "member file disappeared")
                        if m.state == "faulty" and m.role < 0:
                            await self.write_superblocks()

    def _kick_recovery(self) -> None:
        if self.sync.action != "idle" or self.failed or self._closed or not self.auto_rebuild:
            return
        for role, m in enumerate(self.slots):
            if m is not None and m.state == "rebuilding":
                self._spawn(self.recover(role))
                return
        for role, m in enumerate(self.slots):
            if (m is None or m.state == "faulty") and self.spares and self.geometry.level != 0:
                self._spawn(self.recover(role))
                return

    async def _throttle(self, done_bytes: int, started: float) -> None:
        busy = time.monotonic() - self._last_foreground < 0.5
        limit = self.speed_min if busy else self.speed_max
        await asyncio.sleep(0)
        if limit > 0:
            ahead = done_bytes / limit - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(min(ahead, 1.0))

    def _window_rows(self) -> int:
        """Rows per rebuild/scrub step: WINDOW bytes per member, smaller when throttled (smooth pacing)."""
        limit = self.speed_min if time.monotonic() - self._last_foreground < 0.5 else self.speed_max
        window = min(WINDOW, limit // 4) if limit > 0 else WINDOW
        return max(1, window // self.geometry.chunk)

    async def _rebuild_rows(self, target: Member, rows: range) -> int:
        """Write the correct content of ``target``'s role for ``rows``; returns bytes written."""
        g = self.geometry
        c = g.chunk
        role = target.role
        r0, r1 = rows.start, rows.stop
        for _attempt in range(g.members + 2):
            sources = [m for m in self.slots if m is not None and m is not target and m.readable(r0 * c, (r1 - r0) * c)]
            reads = await asyncio.gather(*(self._mread(m, r0 * c, (r1 - r0) * c) for m in sources))
            if any(x is None for x in reads):
                continue
            got = {m.role: buf for m, buf in zip(sources, reads, strict=True) if buf is not None}
            out = _arr((r1 - r0) * c)
            for row in range(r0, r1):
                o = (row - r0) * c
                if g.level == 1:
                    src = next(iter(got.values()), None)
                    if src is None:
                        raise ArrayFailedError("no RAID 1 member to copy from")
                    out[o:o + c] = src[o:o + c]
                elif g.level == 10:
                    chunk_no = (row * g.members + role) // 2
                    ((mi, rr),) = [(mi, rr) for mi, rr in g.copies(chunk_no) if (mi, rr) != (role, row)]
                    if mi not in got or rr < r0 or rr >= r1:
                        m = self.slots[mi]
                        if m is None or not m.readable(rr * c, c):
                            raise ArrayFailedError(f"both copies of chunk {chunk_no} are lost")
                        buf = await self._mread(m, rr * c, c)
                        if buf is None:
                            raise ArrayFailedError(f"both copies of chunk {chunk_no} are lost")
                        out[o:o + c] = buf
                    else:
                        out[o:o + c] = got[mi][(rr - r0) * c:(rr - r0 + 1) * c]
                else:
                    roles = g.stripe_roles(row)
                    want = roles.index(role)
                    k = g.data_chunks
                    have = {r: got[mi][o:o + c] for r, mi in enumerate(roles) if mi in got}
                    if want == k and all(i in have for i in range(k)):
                        out[o:o + c] = gf.parity_p([have[i] for i in range(k)])
                    elif want == k + 1 and all(i in have for i in range(k)):
                        out[o:o + c] = gf.parity_q([have[i] for i in range(k)])
                    else:
                        out[o:o + c] = self._reconstruct(k, have, c, {want})[want]
            if not await self._mwrite(target, r0 * c, out):
                raise ArrayFailedError(f"rebuild target {target.name} failed")
            return len(out)
        raise ArrayFailedError("too many member failures during rebuild")

    async def recover(self, role: int) -> bool:
        """Rebuild ``role`` onto its rebuilding member or the first spare (md ``recover``); resumes at
        the checkpointed recovery offset.  Returns True when the role is in sync again."""
        if self.sync.action != "idle":
            return False
        target = self.slots[role]
        if (target is None or target.state == "faulty") and not self.spares:
            return False
        self.sync = SyncProgress("recover", 0, self.geometry.member_size, time.monotonic())
        if target is None or target.state == "faulty":
            if target is not None:
                self.stale.append(target)
            target = self.spares.pop(0)
            target.role, target.state, target.recovery_offset = role, "rebuilding", 0
            self.slots[role] = target
            await self.write_superblocks()
            self._emit("SpareActive", member=target.name, role=role)
        g = self.geometry
        self.sync.done = target.recovery_offset
        self._emit("RebuildStarted", member=target.name, role=role, offset=target.recovery_offset)
        started, base = time.monotonic(), target.recovery_offset
        last_ckpt = started
        try:
            row = target.recovery_offset // g.chunk
            while row < g.rows:
                if self._closed or target.state != "rebuilding":
                    return False
                rows = range(row, min(row + self._window_rows(), g.rows))
                async with self.locks.hold(rows):
                    await self._rebuild_rows(target, rows)
                    target.recovery_offset = rows.stop * g.chunk
                row = rows.stop
                self.sync.done = target.recovery_offset
                elapsed = time.monotonic() - started
                self.sync.speed = (target.recovery_offset - base) / elapsed if elapsed > 0 else 0.0
                if time.monotonic() - last_ckpt > 1.0:
                    last_ckpt = time.monotonic()
                    await self.write_superblocks()
                await self._throttle(target.recovery_offset - base, started)
            target.state = "in_sync"
            target.recovery_offset = 0
            if not self.degraded:
                self.failed = False
            await self.write_superblocks()
            self._emit("RebuildFinished", member=target.name, role=role,
                       speed=int(self.sync.speed))
            return True
        except ArrayFailedError as exc:
            self._emit("RebuildAborted", reason=str(exc))
            return False
        finally:
            self.last_sync = self.sync
            self.sync = SyncProgress()
            if not self._closed:
                self._kick_recovery()

    async def add_spare(self, name: str, store: BackingStore) -> Member:
        """Add a fresh device as a hot spare (a rebuild starts if a role is missing)."""
        if store.size - DATA_OFFSET < self.geometry.member_size:
            raise RaidConfigError(f"spare {name} is smaller than the array's members")
        m = Member(store, name, str(uuid.uuid4()))
        self._note_ident(m)
        self.spares.append(m)
        await self.write_superblocks()
        self._emit("SpareAdded", member=name)
        self._kick_recovery()
        return m

    async def re_add(self, name: str, store: BackingStore) -> int:
        """Put back a member that was briefly gone (md ``--re-add``).  With a write-intent bitmap that
        covers its absence only the dirty regions are resynced; otherwise it is rebuilt whole.
        Returns the member data bytes copied."""
        buf = bytearray(2 * SB_SIZE)
        await store.read_into(0, memoryview(buf))
        sb = pick([bytes(buf[:SB_SIZE]), bytes(buf[SB_SIZE:])])
        if sb is None or sb.array_uuid != self.array_uuid or not 0 <= sb.role < len(self.slots):
            raise RaidConfigError(f"{name} is not a member of array {self.array_uuid}")
        cur = self.slots[sb.role]
        if cur is not None and cur.device_uuid != sb.device_uuid and cur.state != "faulty":
            raise RaidConfigError(f"role {sb.role} of {self.name} is held by {cur.name}")
        self.stale = [m for m in self.stale if m.device_uuid != sb.device_uuid]
        m = Member(store, name, sb.device_uuid, sb.role, "rebuilding", events=sb.events)
        self._note_ident(m)
        self.slots[sb.role] = m
        usable_bitmap = bool(self.bitmap) and self.bitmap_valid_from is not None and sb.events >= self.bitmap_valid_from
        if not usable_bitmap:
            await self.write_superblocks()
            await self.recover(sb.role)
            return self.geometry.member_size
        await self.write_superblocks()
        g = self.geometry
        self.sync = SyncProgress("bitmap-resync", 0, 0, time.monotonic())
        copied = 0
        try:
            per = self.bitmap_region // g.chunk
            regions = self.dirty_regions()
            self.sync.total = len(regions) * self.bitmap_region
            for reg in regions:
                r0 = reg * per
                r1 = min(g.rows, r0 + per)
                for w in range(r0, r1, self._window_rows()):
                    rows = range(w, min(w + self._window_rows(), r1))
                    async with self.locks.hold(rows):
                        copied += await self._rebuild_rows(m, rows)
                    self.sync.done = copied
            m.state = "in_sync"
            m.recovery_offset = 0
            await self.write_superblocks()
            self._emit("ReAdded", member=name, role=sb.role, bytes_copied=copied)
        finally:
            self.sync = SyncProgress()
        return copied

    # ------------------------------------------------------------------ scrub

    async def _background_check(self) -> None:
        with contextlib.suppress(StoreError):
            await self.check()

    async def resync_if_needed(self) -> None:
        """Run the resync an unclean shutdown or a fresh (not assume-clean) array needs."""
        if self.resync_needed is None or self.degraded:
            return
        await self.resync(dirty_only=self.resync_needed == "dirty")
        self.resync_needed = None

    async def resync(self, *, dirty_only: bool = False) -> SyncProgress:
        """Make parity/mirrors agree after an unclean shutdown (md ``resync``), whole or dirty regions."""
        return await self._scrub("resync", dirty_only=dirty_only)

    async def check(self) -> SyncProgress:
        """md ``check``: count inconsistent stripes/rows without changing anything."""
        return await self._scrub("check")

    async def repair(self) -> SyncProgress:
        """md ``repair`` (RAID 6: raid6check's member identification from the P/Q syndromes)."""
        return await self._scrub("repair")

    async def _scrub(self, action: str, dirty_only: bool = False) -> SyncProgress:
        g = self.geometry
        if g.level == 0:
            raise StoreError("RAID 0 has no redundancy to check")
        if self.degraded:
            raise StoreError(f"array {self.name} is degraded: rebuild before {action}")
        while self.sync.action != "idle":
            await asyncio.sleep(0.05)
        prog = SyncProgress(action, 0, g.member_size, time.monotonic())
        self.sync = prog
        self._emit(f"{action.capitalize()}Started")
        step = self._window_rows()
        if dirty_only:
            per = self.bitmap_region // g.chunk
            windows = [range(w, min(w + step, (reg + 1) * per, g.rows))
                       for reg in self.dirty_regions() for w in range(reg * per, min((reg + 1) * per, g.rows), step)]
        else:
            windows = [range(w, min(w + step, g.rows)) for w in range(0, g.rows, step)]
        prog.total = sum(len(w) for w in windows) * g.chunk
        try:
            for rows in windows:
                if self._closed:
                    break
                async with self.locks.hold(rows):
                    await self._scrub_rows(rows, action, prog)
                prog.done += len(rows) * g.chunk
                elapsed = time.monotonic() - prog.started
                prog.speed = prog.done / elapsed if elapsed > 0 else 0.0
                await self._throttle(prog.done, prog.started)
            if action in ("repair", "resync"):
                await self._flush_members()
            if action != "resync":
                self.last_check = prog
                await self.write_superblocks()
            self._emit(f"{action.capitalize()}Finished", mismatches=prog.mismatches)
            return prog
        finally:
            self.sync = SyncProgress()
            self._kick_recovery()  # a member may have failed during the scrub

    async def _scrub_rows(self, rows: range, action: str, prog: SyncProgress) -> None:
        g = self.geometry
        c = g.chunk
        r0, r1 = rows.start, rows.stop
        live = list(self.slots)
        reads = await asyncio.gather(*(self._mread(m, r0 * c, (r1 - r0) * c) for m in live))  # type: ignore[arg-type]
        if any(x is None for x in reads):
            raise StoreError(f"a member of {self.name} failed during {action}")
        buf = dict(enumerate(reads))
        fixes: list[tuple[int, int, np.ndarray]] = []  # (member, member offset, data)
        for row in range(r0, r1):
            o = (row - r0) * c
            if g.level == 1:
                first = buf[0][o:o + c]  # type: ignore[index]
                bad = [mi for mi in range(1, g.members) if not np.array_equal(buf[mi][o:o + c], first)]  # type: ignore[index]
                if bad:
                    self._note_mismatch(prog, row)
                    fixes += [(mi, row * c, first) for mi in bad]
                continue
            if g.level == 10:
                for mi, chunk_no in g.row_chunks(row):
                    (am, ar), (bm, br) = g.copies(chunk_no)
                    if (am, ar) != (mi, row) or not r0 <= br < r1:
                        continue
                    a = buf[am][(ar - r0) * c:(ar - r0 + 1) * c]  # type: ignore[index]
                    b = buf[bm][(br - r0) * c:(br - r0 + 1) * c]  # type: ignore[index]
                    if not np.array_equal(a, b):
                        self._note_mismatch(prog, chunk_no)
                        fixes.append((bm, br * c, a))
                continue
            roles = g.stripe_roles(row)
            k = g.data_chunks
            data = [buf[roles[i]][o:o + c] for i in range(k)]  # type: ignore[index]
            p = buf[roles[k]][o:o + c]  # type: ignore[index]
            if g.level == 5:
                p2 = gf.parity_p(data)
                if not np.array_equal(p, p2):
                    self._note_mismatch(prog, row)
                    fixes.append((roles[k], row * c, p2))
                    prog.repaired.append((row, f"P on member {roles[k]}"))
                continue
            q = buf[roles[k + 1]][o:o + c]  # type: ignore[index]
            verdict, z = gf.identify_bad(data, p, q)
            if verdict == "ok":
                continue
            self._note_mismatch(prog, row)
            p2, q2 = gf.parity_pq(data)
            if verdict == "D" and z is not None:
                fixed = data[z] ^ p ^ p2
                fixes.append((roles[z], row * c, fixed))
                prog.repaired.append((row, f"D{z} on member {roles[z]} ({self.slots[roles[z]].name})"))  # type: ignore[union-attr]
            elif verdict == "P":
                fixes.append((roles[k], row * c, p2))
                prog.repaired.append((row, f"P on member {roles[k]} ({self.slots[roles[k]].name})"))  # type: ignore[union-attr]
            elif verdict == "Q":
                fixes.append((roles[k + 1], row * c, q2))
                prog.repaired.append((row, f"Q on member {roles[k + 1]} ({self.slots[roles[k + 1]].name})"))  # type: ignore[union-attr]
            else:
                fixes += [(roles[k], row * c, p2), (roles[k + 1], row * c, q2)]
                prog.repaired.append((row, "P and Q (no single member explains the syndromes)"))
        if action == "check":
            if g.level != 6 and g.level != 5:
                prog.repaired.clear()
            return
        for mi, off, data_ in fixes:
            m = self.slots[mi]
            if m is not None:
                await self._mwrite(m, off, data_)
                prog.bytes_copied += len(data_)

    def _note_mismatch(self, prog: SyncProgress, stripe: int) -> None:
        prog.mismatches += 1
        if len(prog.mismatch_stripes) < MAX_REPORTED_MISMATCHES:
            prog.mismatch_stripes.append(stripe)

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in [self._bg, *self._tasks]:
            if t is not None:
                t.cancel()
        for t in [self._bg, *self._tasks]:
            if t is not None:
                with contextlib.suppress(BaseException):
                    await t
        if not self.failed:
            with contextlib.suppress(OSError):
                await self._flush_members()
                if self.sync.action == "idle" and self._inflight == 0:
                    self.clean = True
                await self.write_superblocks()
        for m in self.members():
            with contextlib.suppress(OSError):
                await m.store.close()
        if self.journal is not None:
            await self.journal.store.close()
        self._unlock()

    def _unlock(self) -> None:
        fds, self.lock_fds = self.lock_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close_sync(self) -> None:
        self._closed = True
        for m in self.members():
            with contextlib.suppress(OSError):
                m.store.close_sync()
        if self.journal is not None:
            self.journal.store.close_sync()
        self._unlock()
