"""Parsing the data-in of INQUIRY, READ CAPACITY, REPORT LUNS and PERSISTENT RESERVE IN (SPC-4, SBC-3).

The bytes come from the target: every parser tolerates short or odd buffers and raises
:class:`ValueError` only when the data is too short to hold the mandatory fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cistern.wire.pdu import decode_lun

DEVICE_TYPES = {
    0x00: "disk",
    0x01: "tape",
    0x05: "cd/dvd",
    0x07: "optical",
    0x08: "changer",
    0x0C: "controller",
    0x0D: "enclosure",
    0x1F: "unknown",
}


@dataclass(frozen=True, slots=True)
class InquiryData:
    """Standard INQUIRY data (SPC-4 6.6.2)."""

    peripheral_qualifier: int
    device_type: int
    removable: bool
    version: int
    vendor: str
    product: str
    revision: str
    raw: bytes = b""

    @property
    def device_type_name(self) -> str:
        return DEVICE_TYPES.get(self.device_type, f"type 0x{self.device_type:02x}")


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip()


def parse_inquiry(data: bytes) -> InquiryData:
    if len(data) < 8:
        raise ValueError(f"INQUIRY data too short ({len(data)} bytes)")
    return InquiryData(
        peripheral_qualifier=data[0] >> 5,
        device_type=data[0] & 0x1F,
        removable=bool(data[1] & 0x80),
        version=data[2],
        vendor=_ascii(data[8:16]),
        product=_ascii(data[16:32]),
        revision=_ascii(data[32:36]),
        raw=bytes(data),
    )


@dataclass(frozen=True, slots=True)
class VpdPage:
    """A VPD page (SPC-4 7.8): its code, payload and decoded fields for the pages we know."""

    page_code: int
    payload: bytes
    supported_pages: list[int] = field(default_factory=list)
    serial_number: str | None = None
    designators: list[tuple[int, int, bytes]] = field(default_factory=list)  # (code set, type, value)


def parse_vpd(data: bytes) -> VpdPage:
    if len(data) < 4:
        raise ValueError("VPD page shorter than its 4-byte header")
    code = data[1]
    length = int.from_bytes(data[2:4], "big")
    payload = bytes(data[4 : 4 + length])
    if code == 0x00:
        return VpdPage(code, payload, supported_pages=list(payload))
    if code == 0x80:
        return VpdPage(code, payload, serial_number=_ascii(payload))
    if code == 0x83:
        designators = []
        pos = 0
        while pos + 4 <= len(payload):
            code_set = payload[pos] & 0x0F
            dtype = payload[pos + 1] & 0x0F
            dlen = payload[pos + 3]
            designators.append((code_set, dtype, payload[pos + 4 : pos + 4 + dlen]))
            pos += 4 + dlen
        return VpdPage(code, payload, designators=designators)
    return VpdPage(code, payload)


@dataclass(frozen=True, slots=True)
class Capacity:
    """READ CAPACITY result: ``blocks`` is the number of logical blocks (last LBA + 1)."""

    blocks: int
    block_size: int
    thin_provisioned: bool = False
    lbppbe: int = 0  # logical blocks per physical block exponent

    @property
    def size(self) -> int:
        return self.blocks * self.block_size


def parse_read_capacity_10(data: bytes) -> Capacity:
    if len(data) < 8:
        raise ValueError("READ CAPACITY(10) data too short")
    last, size = struct.unpack_from(">II", data)
    return Capacity(last + 1, size)


def parse_read_capacity_16(data: bytes) -> Capacity:
    if len(data) < 12:
        raise ValueError("READ CAPACITY(16) data too short")
    last, size = struct.unpack_from(">QI", data)
    thin = bool(data[14] & 0x80) if len(data) > 14 else False
    exponent = data[13] & 0x0F if len(data) > 13 else 0
    return Capacity(last + 1, size, thin, exponent)


def parse_lba_status(data: bytes) -> list[tuple[int, int, int]]:
    """GET LBA STATUS parameter data (SBC-3 5.16.2): ``(lba, blocks, provisioning status)`` per
    16-byte descriptor after the 8-byte header."""
    if len(data) < 8:
        raise ValueError("GET LBA STATUS data too short")
    end = min(len(data), 4 + int.from_bytes(data[0:4], "big"))
    out = []
    for pos in range(8, end - 15, 16):
        lba, blocks = struct.unpack_from(">QI", data, pos)
        out.append((lba, blocks, data[pos + 12] & 0x0F))
    return out


def parse_report_luns(data: bytes) -> list[int]:
    """LUN numbers from REPORT LUNS data (SPC-4 6.33); addressing methods we cannot decode are skipped."""
    if len(data) < 8:
        raise ValueError("REPORT LUNS data too short")
    length = int.from_bytes(data[0:4], "big")
    luns = []
    end = min(len(data), 8 + length)
    for pos in range(8, end - 7, 8):
        lun = decode_lun(int.from_bytes(data[pos : pos + 8], "big"))
        if lun >= 0:
            luns.append(lun)
    return luns


@dataclass(frozen=True, slots=True)
class Reservation:
    """PERSISTENT RESERVE IN, READ RESERVATION (SPC-4 6.14.3)."""

    generation: int
    key: int | None = None
    scope: int = 0
    type: int = 0


def parse_pr_read_keys(data: bytes) -> tuple[int, list[int]]:
    """(PRgeneration, registered keys) from READ KEYS data."""
    if len(data) < 8:
        raise ValueError("READ KEYS data too short")
    generation, length = struct.unpack_from(">II", data)
    end = min(len(data), 8 + length)
    return generation, [int.from_bytes(data[p : p + 8], "big") for p in range(8, end - 7, 8)]


def parse_pr_read_reservation(data: bytes) -> Reservation:
    if len(data) < 8:
        raise ValueError("READ RESERVATION data too short")
    generation, length = struct.unpack_from(">II", data)
    if length < 16 or len(data) < 24:
        return Reservation(generation)
    key = int.from_bytes(data[8:16], "big")
    return Reservation(generation, key, data[21] >> 4, data[21] & 0x0F)
