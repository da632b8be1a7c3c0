"""SES-3 diagnostic pages of cistern's enclosure, as pure functions of an :class:`Enclosure` model.

Pages (SES-3 section 6.1; RECEIVE DIAGNOSTIC RESULTS with PCV=1): 0x00 supported diagnostic pages (SPC-4
7.2), 0x01 configuration, 0x02 enclosure status (and, from SEND DIAGNOSTIC, enclosure control), 0x05
threshold in, 0x07 element descriptor, 0x0A additional element status.

Element types, in this order (type descriptor headers of page 0x01): array device slot (0x17) — one per
RAID member or spare —, enclosure (0x0E), temperature sensor (0x04), cooling (0x03), power supply (0x02).
Each type has an overall element then its individual elements in pages 0x02/0x05/0x07.  Sensors the host
does not have are one element with status "Not available" (0x07) and no value: nothing is invented.

Page 0x02 byte 1 (INFO, NON-CRIT, CRIT, UNRECOV) follows the worst element status; the generation code
(bytes 4-7 of pages 0x01, 0x02, 0x05, 0x07, 0x0A) is the model's ``generation``.  ``parse_control``
decodes a SEND DIAGNOSTIC enclosure control page (SELECT, RQST IDENT, RQST FAULT per element).
Bit positions follow SES-3 tables 74 (element status codes), 80 (array device slot), 92 (cooling),
94 (temperature), 86 (power supply), 99 (enclosure); ``sg_ses --inhex=FILE --status --join`` decodes
these bytes in tests/unit/test_ses_pages.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# element status codes (SES-3 table 74)
UNSUPPORTED, OK, CRITICAL, NONCRITICAL, UNRECOVERABLE, NOT_INSTALLED, UNKNOWN, NOT_AVAILABLE = range(8)
T_POWER, T_COOLING, T_TEMPERATURE, T_ENCLOSURE, T_ARRAY_SLOT = 0x02, 0x03, 0x04, 0x0E, 0x17
SUPPORTED_PAGES = (0x00, 0x01, 0x02, 0x05, 0x07, 0x0A)
PROTOCOL_SAS = 0x6

# array device slot status byte 1 bits (SES-3 table 80)
SLOT_OK, SLOT_RSVD, SLOT_HOTSPARE, SLOT_CONSCHECK = 0x80, 0x40, 0x20, 0x10
SLOT_INCRIT, SLOT_INFAILED, SLOT_REBUILD, SLOT_RRABORT = 0x08, 0x04, 0x02, 0x01


@dataclass
class Slot:
    """One array device slot: a RAID member (or spare) and the ledmon-style state bits."""

    text: str
    status: int = OK
    bits: int = 0  # byte 1 of the status element: SLOT_* flags
    ident: bool = False  # byte 2 bit 1 (set by SEND DIAGNOSTIC RQST IDENT)
    fault_sensed: bool = False  # byte 3 bit 6
    fault_requested: bool = False  # byte 3 bit 5 (set by SEND DIAGNOSTIC RQST FAULT)
    sas_address: bytes = bytes(8)


@dataclass
class Sensor:
    """A host sensor: ``value`` in °C (temperature) or rpm (cooling), None when it has no reading."""

    text: str
    value: float | None = None
    high_crit: float | None = None
    high_warn: float | None = None
    status: int = OK
    ident: bool = False


@dataclass
class Enclosure:
    logical_id: bytes  # 8-byte NAA designator of the enclosure
    vendor: str = "CISTERN"
    product: str = "cistern SES"
    revision: str = "0001"
    generation: int = 0
    slots: list[Slot] = field(default_factory=list)
    temperatures: list[Sensor] = field(default_factory=list)
    fans: list[Sensor] = field(default_factory=list)
    psus: list[Sensor] = field(default_factory=list)
    ident: bool = False


def _ascii(value: str, width: int) -> bytes:
    raw = value.encode("ascii", "replace")[:width]
    return bytes(c if 0x20 <= c <= 0x7E else 0x20 for c in raw).ljust(width, b" ")


def _absent(kind: str) -> list[Sensor]:
    return [Sensor(f"{kind} (host has no sensor)", None, status=NOT_AVAILABLE)]


def element_types(enc: Enclosure) -> list[tuple[int, int, str]]:
    """(element type, element count, type text) in page order."""
    return [
        (T_ARRAY_SLOT, len(enc.slots), "RAID member slots"),
        (T_ENCLOSURE, 1, "cistern enclosure"),
        (T_TEMPERATURE, len(enc.temperatures or _absent("t")), "host temperatures"),
        (T_COOLING, len(enc.fans or _absent("f")), "host fans"),
        (T_POWER, len(enc.psus or _absent("p")), "host power supplies"),
    ]


def _page(code: int, byte1: int, body: bytes) -> bytes:
    return struct.pack(">BBH", code, byte1, len(body)) + body


def supported_pages() -> bytes:
    """Page 0x00 (SPC-4 7.2.1 + SES-3 6.1.1)."""
    return _page(0x00, 0, bytes(SUPPORTED_PAGES))


def configuration_page(enc: Enclosure) -> bytes:
    """Page 0x01 (SES-3 6.1.2): one enclosure descriptor, the type descriptor headers and their texts."""
    types = element_types(enc)
    desc = (
        bytes([0x11, 0, len(types), 36])  # one process (rel id 1), subenclosure 0, length after byte 3
        + enc.logical_id[:8].ljust(8, b"\0")
        + _ascii(enc.vendor, 8) + _ascii(enc.product, 16) + _ascii(enc.revision, 4)
    )
    headers = b"".join(bytes([t, n, 0, len(text)]) for t, n, text in types)
    texts = b"".join(text.encode() for _, _, text in types)
    return _page(0x01, 0, struct.pack(">I", enc.generation) + desc + headers + texts)


def _slot_status(s: Slot) -> bytes:
    return bytes([
        s.status & 0x0F,
        s.bits & 0xFF,
        0x02 if s.ident else 0,
        (0x40 if s.fault_sensed else 0) | (0x20 if s.fault_requested else 0),
    ])


def _temp_status(t: Sensor) -> bytes:
    value = 0 if t.value is None else max(1, min(255, round(t.value) + 20))
    flags = 0
    if t.value is not None and t.high_crit is not None and t.value >= t.high_crit:
        flags |= 0x08
    elif t.value is not None and t.high_warn is not None and t.value >= t.high_warn:
        flags |= 0x04
    return bytes([t.status, 0x80 if t.ident else 0, value, flags])


def _fan_status(f: Sensor) -> bytes:
    if f.value is None:
        return bytes([f.status, 0x80 if f.ident else 0, 0, 0])
    tens = min(0x7FF, round(f.value / 10))
    code = 0 if tens == 0 else 3  # "running at intermediate speed" (no requested speed known)
    return bytes([f.status, (0x80 if f.ident else 0) | (tens >> 8), tens & 0xFF, code])


def _psu_status(p: Sensor) -> bytes:
    return bytes([p.status, 0x80 if p.ident else 0, 0, 0x20 if p.status == OK else 0])


def worst_status(enc: Enclosure) -> int:
    """The most severe status code among the elements, as page 0x02 byte 1 reports it."""
    codes = [s.status for s in enc.slots] + [x.status for x in enc.temperatures + enc.fans + enc.psus]
    for code in (UNRECOVERABLE, CRITICAL, NONCRITICAL):
        if code in codes:
            return code
    return OK


def _enclosure_status(enc: Enclosure) -> bytes:
    worst = worst_status(enc)
    failure = worst in (CRITICAL, UNRECOVERABLE)
    return bytes([worst, 0x80 if enc.ident else 0, (0x02 if failure else 0) | (0x01 if worst == NONCRITICAL else 0), 0])


def status_page(enc: Enclosure) -> bytes:
    """Page 0x02 (SES-3 6.1.4): overall + individual status elements of every type."""
    worst = worst_status(enc)
    info = any(s.bits & (SLOT_HOTSPARE | SLOT_CONSCHECK | SLOT_REBUILD) for s in enc.slots)
    byte1 = {UNRECOVERABLE: 0x01, CRITICAL: 0x02, NONCRITICAL: 0x04}.get(worst, 0) | (0x08 if info else 0)
    out = bytearray(struct.pack(">I", enc.generation))
    out += bytes(4)  # array device slot overall: unsupported
    for s in enc.slots:
        out += _slot_status(s)
    out += bytes(4) + _enclosure_status(enc)
    out += bytes(4) + b"".join(_temp_status(t) for t in enc.temperatures or _absent("t"))
    out += bytes(4) + b"".join(_fan_status(f) for f in enc.fans or _absent("f"))
    out += bytes(4) + b"".join(_psu_status(p) for p in enc.psus or _absent("p"))
    return _page(0x02, byte1, bytes(out))


def threshold_page(enc: Enclosure) -> bytes:
    """Page 0x05 threshold in (SES-3 6.1.8): HIGH CRITICAL/HIGH WARNING of temperatures (°C + 20),
    zero (no threshold) for every other element."""
    out = bytearray(struct.pack(">I", enc.generation))
    for etype, n, _ in element_types(enc):
        out += bytes(4)
        for i in range(n):
            if etype == T_TEMPERATURE and enc.temperatures:
                t = enc.temperatures[i]
                hc = 0 if t.high_crit is None else max(1, min(255, round(t.high_crit) + 20))
                hw = 0 if t.high_warn is None else max(1, min(255, round(t.high_warn) + 20))
                out += bytes([hc, hw, 0, 0])
            else:
                out += bytes(4)
    return _page(0x05, 0, bytes(out))


def descriptor_page(enc: Enclosure) -> bytes:
    """Page 0x07 element descriptor (SES-3 6.1.10): a text per overall and individual element."""
    def d(text: str) -> bytes:
        raw = _ascii(text, len(text.encode("ascii", "replace")))
        return struct.pack(">xxH", len(raw)) + raw

    out = bytearray(struct.pack(">I", enc.generation))
    groups: list[tuple[str, list[str]]] = [
        ("RAID member slots", [s.text for s in enc.slots]),
        ("enclosure", [f"{enc.vendor} {enc.product}"]),
        ("temperatures", [t.text for t in enc.temperatures or _absent("temperature")]),
        ("fans", [f.text for f in enc.fans or _absent("fan")]),
        ("power supplies", [p.text for p in enc.psus or _absent("power supply")]),
    ]
    for overall, texts in groups:
        out += d(overall)
        for text in texts:
            out += d(text)
    return _page(0x07, 0, bytes(out))


def additional_status_page(enc: Enclosure) -> bytes:
    """Page 0x0A additional element status (SES-3 6.1.13): for each array device slot a SAS
    descriptor (EIP=1, element index, device slot number) with one phy carrying the member's
    locally derived SAS address, which is how an initiator matches slots to devices."""
    out = bytearray(struct.pack(">I", enc.generation))
    for i, slot in enumerate(enc.slots):
        # phy descriptor: end device (type 1), SSP target port; attached address 0, SAS ADDRESS, PHY id 0
        phy = bytes([0x10, 0, 0, 0x08]) + bytes(8) + slot.sas_address[:8].ljust(8, b"\0") + bytes(8)
        body = bytes([0, i, 1, 0, 0, i]) + phy  # EIIOE 0, ELEMENT INDEX, 1 phy, type 00b, DEVICE SLOT NUMBER
        out += bytes([0x10 | PROTOCOL_SAS, len(body)]) + body
    return _page(0x0A, 0, bytes(out))


def page(enc: Enclosure, code: int) -> bytes:
    """The page ``code``; KeyError when the enclosure does not have it."""
    builders = {
        0x00: lambda: supported_pages(),
        0x01: lambda: configuration_page(enc),
        0x02: lambda: status_page(enc),
        0x05: lambda: threshold_page(enc),
        0x07: lambda: descriptor_page(enc),
        0x0A: lambda: additional_status_page(enc),
    }
    return builders[code]()


@dataclass(frozen=True, slots=True)
class SlotControl:
    """A selected array device slot control element: index among the slots and the requested bits."""

    index: int
    ident: bool
    fault: bool


class ControlError(ValueError):
    """A control page field that cannot be honoured; ``offset`` is its byte in the parameter list."""

    def __init__(self, message: str, offset: int, generation_mismatch: bool = False) -> None:
        super().__init__(message)
        self.offset = offset
        self.generation_mismatch = generation_mismatch


def parse_control(enc: Enclosure, data: bytes) -> tuple[list[SlotControl], bool | None]:
    """Decode an enclosure control page (SES-3 6.1.3): the selected slot elements and the enclosure
    element's RQST IDENT (None when not selected).  Raises :class:`ControlError`."""
    if len(data) < 8 or data[0] != 0x02:
        raise ControlError("not an enclosure control page", 0)
    (length,) = struct.unpack_from(">H", data, 2)
    if length + 4 > len(data):
        raise ControlError("page length beyond the parameter list", 2)
    (gen,) = struct.unpack_from(">I", data, 4)
    if gen != enc.generation:
        raise ControlError("expected generation code does not match", 4, generation_mismatch=True)
    need = 8 + 4 * sum(n + 1 for _, n, _ in element_types(enc))
    if length + 4 < need:
        raise ControlError("control page shorter than the configuration", 2)
    pos = 8 + 4  # skip the slot overall element
    slots: list[SlotControl] = []
    for i in range(len(enc.slots)):
        el = data[pos:pos + 4]
        if el[0] & 0x80:
            slots.append(SlotControl(i, bool(el[2] & 0x02), bool(el[3] & 0x20)))
        pos += 4
    pos += 4  # enclosure overall
    el = data[pos:pos + 4]
    ident = bool(el[1] & 0x80) if el[0] & 0x80 else None
    return slots, ident
