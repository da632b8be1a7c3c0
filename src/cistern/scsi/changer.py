"""A medium changer (SMC-3, peripheral type 0x08) moving cartridges of a library directory between
storage slots, import/export slots and the tape drives (data transfer elements) of the same target.

Element addresses: medium transport 0000h; import/export 0010h..; data transfer 0100h..
(drive ``i`` is the ``i``-th tape LU given to the changer); storage 1000h.. .  Mode pages 0x1D
(element address assignment), 0x1E (transport geometry), 0x1F (device capabilities) describe them.
Where every cartridge is lives in ``storage/tape/library.Library`` (``library.json``, atomic).

Moving a cartridge into a drive inserts and loads it there (the drive reports NOT READY TO READY
CHANGE); moving it out of a drive syncs and ejects it, refused with MEDIUM REMOVAL PREVENTED while the
drive is loaded and held by PREVENT MEDIUM REMOVAL.  Illegal moves get the SMC-3 sense codes:
INVALID ELEMENT ADDRESS (21/01), MEDIUM SOURCE ELEMENT EMPTY (3B/0E), MEDIUM DESTINATION ELEMENT FULL
(3B/0D).  PREVENT ALLOW on the changer locks the import/export slots against ``cistern tape export``.

Linux ``ch`` puts the LUN in bits 7..5 of CDB byte 1 (SCSI-2 style) on every command: the changer's
usage data accepts those bits and ignores them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct

from ..storage.tape.cartridge import CartridgeError
from ..storage.tape.library import ElementKind, Library
from . import mode, spc
from .mode import PC_CHANGEABLE
from .sense import (
    INVALID_ELEMENT_ADDRESS,
    MEDIUM_DESTINATION_ELEMENT_FULL,
    MEDIUM_LOAD_OR_EJECT_FAILED,
    MEDIUM_REMOVAL_PREVENTED,
    MEDIUM_SOURCE_ELEMENT_EMPTY,
    CheckCondition,
    SenseKey,
    invalid_field,
)
from .spc_commands import LOG_SENSE, reservations, spc_core
from .table import CommandSpec, CommandTable
from .tape import TapeUnit, run_io
from .task import ScsiResult, ScsiTask
from .unit import ISCSI, SAM5, SPC4, LogicalUnitBase, ModePageBuilder

log_ = logging.getLogger(__name__)

SMC3 = 0x0480
TRANSPORT_BASE, IE_BASE, DRIVE_BASE, SLOT_BASE = 0x0000, 0x0010, 0x0100, 0x1000
TYPE_ALL, TYPE_TRANSPORT, TYPE_SLOT, TYPE_IE, TYPE_DRIVE = 0, 1, 2, 3, 4
_KIND_OF_TYPE: dict[int, ElementKind] = {TYPE_SLOT: "slot", TYPE_IE: "ie", TYPE_DRIVE: "drive"}
_BASE: dict[str, int] = {"slot": SLOT_BASE, "ie": IE_BASE, "drive": DRIVE_BASE}
_TYPE_OF_KIND = {"slot": TYPE_SLOT, "ie": TYPE_IE, "drive": TYPE_DRIVE}
Element = tuple[str, int]  # ("transport" | "slot" | "ie" | "drive", index)


class ChangerUnit(LogicalUnitBase):
    """An SMC medium changer over ``library`` whose data transfer elements are ``drives``."""

    device_type = 0x08
    version_descriptors = (SAM5, ISCSI, SPC4, SMC3)

    def __init__(
        self,
        library: Library,
        drives: list[TapeUnit],
        *,
        lun: int,
        vendor: str = "CISTERN",
        product: str = "cistern changer",
        revision: str = "0001",
        serial: str | None = None,
        naa_id: bytes | None = None,
        pr_state_path: str | None = None,
    ) -> None:
        super().__init__(
            lun=lun,
            commands=CHANGER_COMMANDS,
            vendor=vendor,
            product=product,
            revision=revision,
            serial=serial,
            naa_id=naa_id,
            pr_state_path=pr_state_path,
        )
        if len(drives) != library.counts["drive"]:
            raise ValueError("the library must have one drive element per tape LU")
        self.library = library
        self.drives = drives
        self.lock = asyncio.Lock()
        self.lock_fd: int | None = None  # the library's flock, held while serving (library.lock_library)

    async def close(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # -- addressing ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {"transport": 1}
        for kind, n in self.library.counts.items():
            out[kind] = n
        return out

    def element(self, address: int, byte: int) -> Element:
        """The element at ``address``; INVALID ELEMENT ADDRESS (pointing at CDB ``byte``) otherwise."""
        if address == TRANSPORT_BASE:
            return ("transport", 0)
        for kind, base in _BASE.items():
            if base <= address < base + self.library.counts[kind]:  # type: ignore[index]
                return (kind, address - base)
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_ELEMENT_ADDRESS)

    def address(self, kind: str, index: int) -> int:
        return TRANSPORT_BASE if kind == "transport" else _BASE[kind] + index

    def content(self, el: Element) -> str | None:
        kind, i = el
        if kind == "transport":
            return None
        return self.library.where[kind][i]  # type: ignore[index]

    # -- moves ---------------------------------------------------------------------------------

    async def _take(self, el: Element) -> str:
        """Take the cartridge out of ``el`` (ejecting it from a drive); its barcode."""
        barcode = self.content(el)
        if barcode is None:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_SOURCE_ELEMENT_EMPTY)
        if el[0] == "drive":
            drive = self.drives[el[1]]
            async with drive.lock:
                if drive.removal_prevented():
                    raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_REMOVAL_PREVENTED)
                await drive.eject()
        return barcode

    async def _put(self, el: Element, barcode: str) -> None:
        if el[0] == "drive":
            drive = self.drives[el[1]]
            async with drive.lock:
                await drive.insert(self.library.cartridge_path(barcode))

    async def move(self, src: Element, dst: Element) -> None:
        """MOVE MEDIUM ``src`` -> ``dst`` (element tuples, not the transport)."""
        if self.content(src) is None:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_SOURCE_ELEMENT_EMPTY)
        if src == dst:
            return
        if self.content(dst) is not None:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_DESTINATION_ELEMENT_FULL)
        barcode = await self._take(src)
        try:
            await self._put(dst, barcode)
        except (CartridgeError, OSError, RuntimeError) as exc:
            log_.error("cartridge %s cannot be loaded: %s", barcode, exc)
            if src[0] == "drive":  # back where it was; the library still records it there
                await self._put(src, barcode)
            raise CheckCondition(SenseKey.MEDIUM_ERROR, MEDIUM_LOAD_OR_EJECT_FAILED) from None
        await run_io(self.library.move, src, dst)

    async def exchange(self, src: Element, first: Element, second: Element) -> None:
        """EXCHANGE MEDIUM: ``src`` -> ``first``, ``first``'s cartridge -> ``second`` (which may be
        ``src``: a swap).  INVALID FIELD IN CDB when ``first`` is ``src``."""
        if first == src:
            raise invalid_field(6)
        if self.content(src) is None or self.content(first) is None:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_SOURCE_ELEMENT_EMPTY)
        if second != src and self.content(second) is not None:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_DESTINATION_ELEMENT_FULL)
        for el in (src, first):
            if el[0] == "drive" and self.drives[el[1]].removal_prevented():
                raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_REMOVAL_PREVENTED)
        a = await self._take(src)
        b = await self._take(first)
        lib = self.library
        lib.where[src[0]][src[1]] = None  # type: ignore[index]
        lib.where[first[0]][first[1]] = a  # type: ignore[index]
        lib.where[second[0]][second[1]] = b  # type: ignore[index]
        await run_io(lib.save)
        try:
            await self._put(first, a)
            await self._put(second, b)
        except (CartridgeError, OSError, RuntimeError) as exc:
            log_.error("exchange: a cartridge cannot be loaded: %s", exc)
            raise CheckCondition(SenseKey.MEDIUM_ERROR, MEDIUM_LOAD_OR_EJECT_FAILED) from None

    # -- page hooks ----------------------------------------------------------------------------

    def mode_pages(self) -> dict[int, ModePageBuilder]:
        return CHANGER_MODE_PAGES

    def mode_check_descriptor(self, desc: bytes, offset: int) -> None:
        from .sense import invalid_param

        raise invalid_param(offset)


# -- mode pages (SMC-3 7.3) ---------------------------------------------------------------------------


def _element_address_assignment(lu: ChangerUnit, pc: int) -> bytes:
    page = bytearray(20)
    page[0], page[1] = 0x1D, 18
    if pc == PC_CHANGEABLE:
        return bytes(page)
    c = lu.library.counts
    struct.pack_into(
        ">HHHHHHHH", page, 2,
        TRANSPORT_BASE, 1, SLOT_BASE, c["slot"], IE_BASE, c["ie"], DRIVE_BASE, c["drive"],
    )  # fmt: skip
    return bytes(page)


def _transport_geometry(lu: ChangerUnit, pc: int) -> bytes:
    return bytes((0x1E, 2, 0, 0))  # no rotation, member 0


def _device_capabilities(lu: ChangerUnit, pc: int) -> bytes:
    page = bytearray(20)
    page[0], page[1] = 0x1F, 18
    if pc == PC_CHANGEABLE:
        return bytes(page)
    page[2] = 0x0E  # STORDT, STORI/E, STORST: slots, mailslots and drives hold media
    page[4] = page[5] = page[6] = page[7] = 0x0E  # from MT/ST/IE/DT to ST, IE, DT
    page[12] = page[13] = page[14] = page[15] = 0x0E  # exchanges likewise
    return bytes(page)


CHANGER_MODE_PAGES = {
    0x0A: mode.control_page,
    0x1D: _element_address_assignment,
    0x1E: _transport_geometry,
    0x1F: _device_capabilities,
}


# -- commands (SMC-3 6) -------------------------------------------------------------------------------


async def initialize_element_status(
    server: object, lu: ChangerUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult:
    """INITIALIZE ELEMENT STATUS: the inventory is always known; GOOD."""
    return ScsiResult(transfer_length=0)


async def initialize_element_status_with_range(
    server: object, lu: ChangerUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult:
    """INITIALIZE ELEMENT STATUS WITH RANGE: with RANGE=1 the starting element must exist."""
    if cdb[1] & 0x01:
        start, count = struct.unpack_from(">H", cdb, 2)[0], struct.unpack_from(">H", cdb, 6)[0]
        lu.element(start, 2)
        if count == 0:
            raise invalid_field(6)
    return ScsiResult(transfer_length=0)


async def move_medium(server: object, lu: ChangerUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """MOVE MEDIUM (SMC-3 6.9)."""
    transport, source, dest = struct.unpack_from(">HHH", cdb, 2)
    if lu.element(transport, 2)[0] != "transport":
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_ELEMENT_ADDRESS)
    src, dst = lu.element(source, 4), lu.element(dest, 6)
    if src[0] == "transport" or dst[0] == "transport":
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_ELEMENT_ADDRESS)
    async with lu.lock:
        await lu.move(src, dst)
    return ScsiResult(transfer_length=0)


async def exchange_medium(server: object, lu: ChangerUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """EXCHANGE MEDIUM (SMC-3 6.2)."""
    transport, source, first, second = struct.unpack_from(">HHHH", cdb, 2)
    if lu.element(transport, 2)[0] != "transport":
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_ELEMENT_ADDRESS)
    els = (lu.element(source, 4), lu.element(first, 6), lu.element(second, 8))
    if any(e[0] == "transport" for e in els):
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_ELEMENT_ADDRESS)
    async with lu.lock:
        await lu.exchange(*els)
    return ScsiResult(transfer_length=0)


async def position_to_element(server: object, lu: ChangerUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """POSITION TO ELEMENT (SMC-3 6.10): validates both addresses; the transport has nothing to do."""
    transport, dest = struct.unpack_from(">HH", cdb, 2)
    if lu.element(transport, 2)[0] != "transport":
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_ELEMENT_ADDRESS)
    lu.element(dest, 4)
    return ScsiResult(transfer_length=0)


def _descriptor(lu: ChangerUnit, kind: str, i: int, voltag: bool, dvcid: bool) -> bytes:
    barcode = lu.content((kind, i))
    full = barcode is not None
    d = bytearray(12)
    struct.pack_into(">H", d, 0, lu.address(kind, i))
    if kind == "transport":
        d[2] = 0x01 if full else 0x00
    elif kind == "slot":
        d[2] = 0x08 | (0x01 if full else 0)  # ACCESS, FULL
    elif kind == "ie":
        d[2] = 0x20 | 0x10 | 0x08 | 0x02 | (0x01 if full else 0)  # INENAB EXENAB ACCESS IMPEXP FULL
        if lu.prevent:
            d[2] &= ~0x30 & 0xFF
    else:
        drive = lu.drives[i]
        d[2] = 0x08 | (0x01 if full else 0)
        if drive.lun < 8:
            d[6] = 0x10 | drive.lun  # LU VALID, LUN
        if full:
            src = lu.library.origin.get(barcode or "")
            if src is not None:
                d[9] = 0x80  # SVALID
                struct.pack_into(">H", d, 10, SLOT_BASE + src)
    if voltag:
        tag = (barcode or "").encode("ascii")[:32].ljust(32, b" ") if full else bytes(32)
        d += tag + bytes(4)
    if dvcid and kind == "drive":
        ident = lu.drives[i].serial.encode("ascii", "replace")[:32]
        d += bytes((0x02, 0x01, 0, len(ident))) + ident  # ASCII, T10 vendor-less serial (type 1)
    return bytes(d)


async def read_element_status(server: object, lu: ChangerUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """READ ELEMENT STATUS (SMC-3 6.11): VOLTAG (primary volume tags = barcodes), element type,
    starting address, number of elements, DVCID (drive serial numbers as identifiers)."""
    voltag = bool(cdb[1] & 0x10)
    etype = cdb[1] & 0x0F
    start, count = struct.unpack_from(">HH", cdb, 2)
    dvcid = bool(cdb[6] & 0x01)
    alloc = int.from_bytes(cdb[7:10], "big")
    if etype > TYPE_DRIVE:
        raise invalid_field(1, 3)
    kinds = ["transport", "slot", "ie", "drive"]
    if etype != TYPE_ALL:
        kinds = [["transport", "slot", "ie", "drive"][etype - 1]]
    # elements in address order within the request, grouped into one page per type
    chosen: list[tuple[int, str, int]] = []
    counts = lu.counts()
    for kind in kinds:
        for i in range(counts[kind]):
            addr = lu.address(kind, i)
            if addr >= start:
                chosen.append((addr, kind, i))
    chosen.sort()
    chosen = chosen[:count]
    pages = bytearray()
    type_code = {"transport": TYPE_TRANSPORT, "slot": TYPE_SLOT, "ie": TYPE_IE, "drive": TYPE_DRIVE}
    for kind in ("transport", "slot", "ie", "drive"):
        descs = [_descriptor(lu, k, i, voltag, dvcid) for _, k, i in chosen if k == kind]
        if not descs:
            continue
        dlen = max(len(d) for d in descs)
        body = b"".join(d.ljust(dlen, b"\0") for d in descs)
        pages += struct.pack(">BBHx", type_code[kind], 0x80 if voltag else 0, dlen)
        pages += len(body).to_bytes(3, "big") + body
    first = chosen[0][0] if chosen else 0
    header = struct.pack(">HHx", first, len(chosen)) + len(pages).to_bytes(3, "big")
    data = header + bytes(pages)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


def _u(*b: int) -> bytes:
    return bytes(b)


F4 = (0xFF,) * 4
L = 0xE0  # the SCSI-2 LUN bits Linux ch sets in CDB byte 1

# fmt: off
CHANGER_COMMANDS = CommandTable((
    *spc_core(L),
    *reservations(L),
    LOG_SENSE,
    CommandSpec(0x07, None, "INITIALIZE ELEMENT STATUS", _u(0x07, L, 0, 0, 0, 0), initialize_element_status),
    CommandSpec(0x1E, None, "PREVENT ALLOW MEDIUM REMOVAL", _u(0x1E, L, 0, 0, 0x03, 0), spc.prevent_allow),
    CommandSpec(0x2B, None, "POSITION TO ELEMENT", _u(0x2B, L, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0),
                position_to_element),
    CommandSpec(0x37, None, "INITIALIZE ELEMENT STATUS WITH RANGE",
                _u(0x37, 0x03 | L, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0, 0), initialize_element_status_with_range),
    CommandSpec(0xA5, None, "MOVE MEDIUM", _u(0xA5, L, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0), move_medium),
    CommandSpec(0xA6, None, "EXCHANGE MEDIUM",
                _u(0xA6, L, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0), exchange_medium),
    CommandSpec(0xB8, None, "READ ELEMENT STATUS", _u(0xB8, 0x1F | L, 0xFF, 0xFF, 0xFF, 0xFF, 0x03, 0xFF, 0xFF, 0xFF, 0, 0),
                read_element_status),
))
# fmt: on
