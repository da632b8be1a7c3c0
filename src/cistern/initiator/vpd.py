"""Named fields of the VPD pages a user asks about (SPC-4 7.8, SBC-3 6.6).

:func:`vpd_fields` ``(page_code, payload) -> dict`` decodes 0x00 (supported pages), 0x80 (unit serial
number), 0x83 (device identification, SPC-4 7.8.6), 0x8F (third-party copy, SPC-4 7.8.17), 0xB0 (block
limits, SBC-3 6.6.4), 0xB1 (block device characteristics, SBC-3 6.6.2) and 0xB2 (logical block
provisioning, SBC-3 6.6.5). ``payload`` is the page after its 4-byte header. Values are ints, bools,
strings or lists of dicts (JSON-ready); a short payload yields the fields that fit, never an exception.
Other pages give ``{"hex": ...}``.
"""

from __future__ import annotations

from typing import Any

VPD_NAMES = {
    0x00: "Supported VPD Pages",
    0x80: "Unit Serial Number",
    0x83: "Device Identification",
    0x86: "Extended INQUIRY Data",
    0x8F: "Third-party Copy",
    0xB0: "Block Limits",
    0xB1: "Block Device Characteristics",
    0xB2: "Logical Block Provisioning",
}

DESIGNATOR_TYPES = {
    0: "vendor specific",
    1: "T10 vendor ID",
    2: "EUI-64",
    3: "NAA",
    4: "relative target port",
    5: "target port group",
    6: "logical unit group",
    7: "MD5 logical unit",
    8: "SCSI name string",
}
ASSOCIATIONS = {0: "logical unit", 1: "target port", 2: "target device"}
CODE_SETS = {1: "binary", 2: "ASCII", 3: "UTF-8"}
TPC_DESCRIPTORS = {
    0x0000: "Block Device ROD Limits",
    0x0001: "Supported Commands",
    0x0004: "Parameter Data",
    0x0008: "Supported Descriptors",
    0x000C: "Supported CSCD Descriptor IDs",
    0x000D: "ROD Token Features",
    0x0106: "ROD Token Features",
    0x0108: "Supported ROD Token and ROD Types",
    0x8001: "General Copy Operations",
    0x9101: "Stream Copy Operations",
    0xC001: "Held Data",
}
PROVISIONING_TYPES = {0: "fully provisioned", 1: "resource provisioned", 2: "thin provisioned"}


def _u(data: bytes, start: int, length: int) -> int | None:
    if len(data) < start + length:
        return None
    return int.from_bytes(data[start : start + length], "big")


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        out[name] = value


def _designators(payload: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pos = 0
    while pos + 4 <= len(payload):
        code_set = payload[pos] & 0x0F
        protocol = payload[pos] >> 4
        piv = bool(payload[pos + 1] & 0x80)
        association = (payload[pos + 1] >> 4) & 0x03
        dtype = payload[pos + 1] & 0x0F
        raw = payload[pos + 4 : pos + 4 + payload[pos + 3]]
        pos += 4 + payload[pos + 3]
        value: Any
        if dtype in (4, 5, 6) and len(raw) >= 4:
            value = int.from_bytes(raw[2:4], "big")
        elif code_set in (2, 3):
            value = raw.decode("utf-8", "replace").rstrip("\0 ")
        else:
            value = raw.hex()
        item: dict[str, Any] = {
            "type": DESIGNATOR_TYPES.get(dtype, f"0x{dtype:x}"),
            "association": ASSOCIATIONS.get(association, f"0x{association:x}"),
            "code_set": CODE_SETS.get(code_set, f"0x{code_set:x}"),
            "value": value,
        }
        if piv:
            item["protocol"] = "iSCSI" if protocol == 5 else f"0x{protocol:x}"
        out.append(item)
    return out


def _block_limits(p: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(p) >= 1:
        out["wsnz"] = bool(p[0] & 0x01)
    _put(out, "max_compare_and_write_blocks", _u(p, 1, 1))
    _put(out, "optimal_transfer_length_granularity", _u(p, 2, 2))
    _put(out, "max_transfer_length", _u(p, 4, 4))
    _put(out, "optimal_transfer_length", _u(p, 8, 4))
    _put(out, "max_prefetch_length", _u(p, 12, 4))
    _put(out, "max_unmap_lba_count", _u(p, 16, 4))
    _put(out, "max_unmap_block_descriptor_count", _u(p, 20, 4))
    _put(out, "optimal_unmap_granularity", _u(p, 24, 4))
    alignment = _u(p, 28, 4)
    if alignment is not None:
        out["unmap_granularity_alignment_valid"] = bool(alignment >> 31)
        out["unmap_granularity_alignment"] = alignment & 0x7FFFFFFF
    _put(out, "max_write_same_length", _u(p, 32, 8))
    _put(out, "max_atomic_transfer_length", _u(p, 40, 4))
    _put(out, "atomic_alignment", _u(p, 44, 4))
    _put(out, "atomic_transfer_length_granularity", _u(p, 48, 4))
    return out


def _characteristics(p: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rate = _u(p, 0, 2)
    if rate is not None:
        out["medium_rotation_rate"] = rate
        out["non_rotating"] = rate == 1
    _put(out, "product_type", _u(p, 2, 1))
    if len(p) >= 4:
        out["nominal_form_factor"] = p[3] & 0x0F
    if len(p) >= 5:
        out["zoned"] = (p[4] >> 4) & 0x03
        out["fuab"] = bool(p[4] & 0x02)
        out["vbuls"] = bool(p[4] & 0x01)
    return out


def _provisioning(p: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "threshold_exponent", _u(p, 0, 1))
    if len(p) >= 2:
        b = p[1]
        out.update(
            lbpu=bool(b & 0x80),
            lbpws=bool(b & 0x40),
            lbpws10=bool(b & 0x20),
            lbprz=(b >> 2) & 0x07,
            anc_sup=bool(b & 0x02),
            dp=bool(b & 0x01),
        )
    if len(p) >= 3:
        kind = p[2] & 0x07
        out["provisioning_type"] = PROVISIONING_TYPES.get(kind, f"0x{kind:x}")
    return out


def _third_party_copy(p: bytes) -> dict[str, Any]:
    descriptors = []
    pos = 0
    while pos + 4 <= len(p):
        dtype = int.from_bytes(p[pos : pos + 2], "big")
        length = int.from_bytes(p[pos + 2 : pos + 4], "big")
        body = p[pos + 4 : pos + 4 + length]
        item: dict[str, Any] = {
            "type": f"0x{dtype:04x}",
            "name": TPC_DESCRIPTORS.get(dtype, "unknown"),
            "length": length,
        }
        if dtype == 0x0001 and body:  # Supported Commands: opcode, n, service actions
            commands = []
            q = 1
            while q + 2 <= min(len(body), 1 + body[0]):
                op, n = body[q], body[q + 1]
                commands.append(
                    {
                        "opcode": f"0x{op:02x}",
                        "service_actions": [f"0x{x:02x}" for x in body[q + 2 : q + 2 + n]],
                    }
                )
                q += 2 + n
            item["commands"] = commands
        descriptors.append(item)
        pos += 4 + length
    return {"descriptors": descriptors}


def vpd_fields(page_code: int, payload: bytes) -> dict[str, Any]:
    """Named fields of ``payload`` (the page without its header); see the module docstring."""
    if page_code == 0x00:
        return {"supported_pages": [f"0x{c:02x}" for c in payload]}
    if page_code == 0x80:
        return {"serial_number": payload.decode("ascii", "replace").strip()}
    if page_code == 0x83:
        return {"designators": _designators(payload)}
    if page_code == 0x8F:
        return _third_party_copy(payload)
    if page_code == 0xB0:
        return _block_limits(payload)
    if page_code == 0xB1:
        return _characteristics(payload)
    if page_code == 0xB2:
        return _provisioning(payload)
    return {"hex": payload.hex()}
