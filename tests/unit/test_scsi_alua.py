"""ALUA in the device server (SPC-4 5.15, 6.27, 6.36): TPGS, VPD 0x83 per port, REPORT / SET TARGET
PORT GROUPS bytes and validation, the state/command matrix, and the unit attentions of a change."""

from __future__ import annotations

import asyncio
import struct

import pytest

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.scsi.alua import (
    STANDBY_ALLOWED,
    TRANSITIONING_ALLOWED,
    UNAVAILABLE_ALLOWED,
    AccessState,
    Alua,
    StatusCode,
    TargetPortGroup,
    Tpgs,
    admits,
    parse_state,
)
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:alua"
ISID_A = b"\x80\x00\x00\x00\x00\x01"
ISID_B = b"\x80\x00\x00\x00\x00\x02"
# A logs in through target port 1 (group 1), B through target port 2 (group 2).
A = ITNexus("iqn.2026-11.org.cistern:init-a", ISID_A, TARGET, tpgt=1, relative_port=1)
B = ITNexus("iqn.2026-11.org.cistern:init-b", ISID_B, TARGET, tpgt=2, relative_port=2)

GOOD = Status.GOOD
CHECK = Status.CHECK_CONDITION


def make_server(
    tpgs: Tpgs = Tpgs.BOTH, state2: AccessState = AccessState.ACTIVE_NON_OPTIMIZED
) -> DeviceServer:
    alua = Alua.from_groups(
        [
            TargetPortGroup(1, (1,), AccessState.ACTIVE_OPTIMIZED, preferred=True),
            TargetPortGroup(2, (2,), state2),
        ],
        tpgs,
    )
    lus = {i: LogicalUnit(MemoryStore(1 << 20), lun=i, serial=f"SER{i}") for i in range(2)}
    srv = DeviceServer(lus, target_name=TARGET, alua=alua)
    for nexus in (A, B):
        srv.nexus_added(nexus)
        for lun in lus:  # consume the POWER ON unit attention
            run(srv, tur(), nexus=nexus, lun=lun)
    return srv


def run(
    srv: DeviceServer, cdb: bytes, *, lun: int = 0, nexus: ITNexus = A, data: bytes | None = None
) -> ScsiResult:
    task = ScsiTask(nexus=nexus, lun=lun, cdb=cdb, data_out=data, expected_length=len(data) if data else 0)
    return asyncio.run(srv.execute(task))


def sense(res: ScsiResult) -> tuple[int, int, int]:
    s = res.sense
    assert s is not None
    return s[2] & 0x0F, s[12], s[13]


def field_pointer(res: ScsiResult) -> tuple[int, int]:
    """(SKSV/C/BPV/bit byte, field offset) of fixed sense."""
    s = res.sense
    assert s is not None
    return s[15], int.from_bytes(s[16:18], "big")


def tur() -> bytes:
    return bytes(6)


def inquiry(evpd: int = 0, page: int = 0, alloc: int = 255) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def rtpg(fmt: int = 0, alloc: int = 4096) -> bytes:
    return struct.pack(">BB4xIxB", 0xA3, (fmt << 5) | 0x0A, alloc, 0)


def stpg(length: int) -> bytes:
    return struct.pack(">BB4xIxB", 0xA4, 0x0A, length, 0)


def stpg_list(*descs: tuple[int, int]) -> bytes:
    return bytes(4) + b"".join(struct.pack(">BxH", state, group) for state, group in descs)


def read10(lba: int = 0, blocks: int = 1) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


# -- INQUIRY ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tpgs, bits", [(Tpgs.IMPLICIT, 0x10), (Tpgs.EXPLICIT, 0x20), (Tpgs.BOTH, 0x30)])
def test_standard_inquiry_reports_tpgs(tpgs: Tpgs, bits: int) -> None:
    res = run(make_server(tpgs), inquiry())
    assert res.status == GOOD
    assert bytes(res.data_in or b"")[5] & 0x30 == bits


def test_default_device_server_reports_implicit_alua() -> None:
    srv = DeviceServer({0: LogicalUnit(MemoryStore(1 << 20), lun=0)}, target_name=TARGET)
    assert bytes(run(srv, inquiry()).data_in or b"")[5] & 0x30 == 0x10
    assert srv.alua.groups[1].relative_ports == (1,)


def _designators(page: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 4
    while pos < len(page):
        length = page[pos + 3]
        out.append((page[pos] & 0x0F, page[pos + 1], page[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def test_vpd83_same_lu_designator_and_per_port_designators() -> None:
    srv = make_server()
    via_a = _designators(bytes(run(srv, inquiry(1, 0x83), nexus=A).data_in or b""))
    via_b = _designators(bytes(run(srv, inquiry(1, 0x83), nexus=B).data_in or b""))
    naa_a = [d for d in via_a if d[1] == 0x03]
    assert naa_a and naa_a == [d for d in via_b if d[1] == 0x03]  # association LU, type NAA: identical
    by_type_a = {d[1]: d[2] for d in via_a}
    by_type_b = {d[1]: d[2] for d in via_b}
    assert by_type_a[0x94] == b"\0\0\0\x01" and by_type_b[0x94] == b"\0\0\0\x02"  # relative target port
    assert by_type_a[0x95] == b"\0\0\0\x01" and by_type_b[0x95] == b"\0\0\0\x02"  # target port group
    assert by_type_b[0x98].rstrip(b"\0") == f"{TARGET},t,0x0002".encode()


# -- REPORT TARGET PORT GROUPS -----------------------------------------------------------------------

DESC_1 = bytes((0x80, 0x8F, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1))  # PREF, AO, T/U/S/AN/AO_SUP, group 1, port 1
DESC_2 = bytes((0x01, 0x8F, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2))  # AN, group 2, port 2


def test_rtpg_length_only_header() -> None:
    res = run(make_server(), rtpg(0))
    assert res.status == GOOD and res.transfer_length == 4096
    assert bytes(res.data_in or b"") == struct.pack(">I", 24) + DESC_1 + DESC_2


def test_rtpg_extended_header() -> None:
    srv = make_server()
    srv.alua.implicit_transition_time = 10
    res = run(srv, rtpg(1))
    assert bytes(res.data_in or b"") == struct.pack(">IBBxx", 28, 0x10, 10) + DESC_1 + DESC_2


def test_rtpg_truncated_to_allocation_length() -> None:
    res = run(make_server(), rtpg(0, alloc=6))
    assert res.status == GOOD and bytes(res.data_in or b"") == struct.pack(">I", 24) + DESC_1[:2]
    assert res.transfer_length == 6


def test_rtpg_unknown_format_is_invalid_field() -> None:
    res = run(make_server(), rtpg(2))
    assert res.status == CHECK and sense(res) == (0x5, 0x24, 0x00)
    assert field_pointer(res) == (0xC0 | 0x08 | 7, 1)


def test_rtpg_allowed_in_every_state() -> None:
    for state in AccessState:
        srv = make_server(state2=state)
        assert run(srv, rtpg(), nexus=B).status == GOOD, state


# -- SET TARGET PORT GROUPS --------------------------------------------------------------------------


def test_stpg_not_supported_with_implicit_alua_only() -> None:
    data = stpg_list((AccessState.STANDBY, 2))
    res = run(make_server(Tpgs.IMPLICIT), stpg(len(data)), data=data)
    assert res.status == CHECK and sense(res) == (0x5, 0x24, 0x00)


def test_stpg_changes_state_status_code_and_unit_attention() -> None:
    srv = make_server(Tpgs.EXPLICIT)
    data = stpg_list((AccessState.STANDBY, 1), (AccessState.ACTIVE_OPTIMIZED, 2))
    res = run(srv, stpg(len(data)), nexus=B, data=data)
    assert res.status == GOOD
    assert srv.alua.groups[1].state == AccessState.STANDBY
    assert srv.alua.groups[2].state == AccessState.ACTIVE_OPTIMIZED
    assert srv.alua.groups[1].status == StatusCode.ALTERED_BY_STPG
    # A (whose port went to standby) sees the UA first, then the standby refusal; on every LU.
    for lun in (0, 1):
        first = run(srv, tur(), nexus=A, lun=lun)
        assert first.status == CHECK and sense(first) == (0x6, 0x2A, 0x06)
        second = run(srv, tur(), nexus=A, lun=lun)
        assert sense(second) == (0x2, 0x04, 0x0B)
    # B sent STPG: no unit attention for it
    assert run(srv, tur(), nexus=B).status == GOOD
    desc = bytes(run(srv, rtpg(), nexus=B).data_in or b"")
    assert desc[4] & 0x0F == AccessState.STANDBY and desc[9] == StatusCode.ALTERED_BY_STPG


def test_stpg_to_the_same_state_establishes_no_unit_attention() -> None:
    srv = make_server(Tpgs.BOTH)
    data = stpg_list((AccessState.ACTIVE_OPTIMIZED, 1))
    assert run(srv, stpg(len(data)), nexus=B, data=data).status == GOOD
    assert run(srv, tur(), nexus=A).status == GOOD


def test_stpg_zero_length_is_a_no_op() -> None:
    srv = make_server()
    assert run(srv, stpg(0)).status == GOOD
    assert srv.alua.groups[2].state == AccessState.ACTIVE_NON_OPTIMIZED


@pytest.mark.parametrize(
    "data, asc, pointer",
    [
        (stpg_list((AccessState.STANDBY, 9)), 0x26, 6),  # no such group
        (stpg_list((AccessState.STANDBY, 2), (AccessState.UNAVAILABLE, 2)), 0x26, 10),  # group twice
        (stpg_list((AccessState.TRANSITIONING, 2)), 0x26, 4),  # transitioning cannot be requested
        (stpg_list((0x4, 2)), 0x26, 4),  # LBA dependent: not supported
        (stpg_list((0xE, 2)), 0x26, 4),  # offline: not supported
        (stpg_list((0x12, 2)), 0x26, 4),  # reserved bits of byte 0
        (bytes((0, 0, 0, 1)) + stpg_list((AccessState.STANDBY, 2))[4:], 0x26, 3),  # reserved header
        (stpg_list((AccessState.STANDBY, 2))[:6], 0x1A, None),  # truncated descriptor
        (b"\0\0", 0x1A, None),  # shorter than the header
    ],
)
def test_stpg_parameter_validation(data: bytes, asc: int, pointer: int | None) -> None:
    srv = make_server()
    res = run(srv, stpg(len(data)), data=data)
    assert res.status == CHECK and sense(res) == (0x5, asc, 0x00)
    if pointer is not None:
        flags, offset = field_pointer(res)
        assert flags & 0xC0 == 0x80 and offset == pointer  # SKSV, C/D = 0: in the parameter list
    # all or nothing: a refused list changes nothing and tells nobody
    assert srv.alua.groups[2].state == AccessState.ACTIVE_NON_OPTIMIZED
    assert run(srv, tur(), nexus=B).status == GOOD


def test_stpg_parameter_list_longer_than_data_out() -> None:
    data = stpg_list((AccessState.STANDBY, 2))
    res = run(make_server(), stpg(len(data) + 4), data=data)
    assert sense(res) == (0x5, 0x1A, 0x00)


# -- the state / command matrix ----------------------------------------------------------------------

MODE_SENSE6 = bytes((0x1A, 0, 0x3F, 0, 255, 0))
REPORT_LUNS = struct.pack(">B5xIxB", 0xA0, 64, 0)
REQUEST_SENSE = bytes((0x03, 0, 0, 0, 252, 0))
READ_CAPACITY10 = bytes((0x25,)) + bytes(9)
WRITE10 = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0)
SYNC_CACHE10 = bytes((0x35,)) + bytes(9)
ALWAYS = [inquiry(), REPORT_LUNS, rtpg(), REQUEST_SENSE]


@pytest.mark.parametrize(
    "state, ascq, also_allowed, refused",
    [
        (AccessState.STANDBY, 0x0B, [MODE_SENSE6, READ_CAPACITY10], [tur(), read10(), SYNC_CACHE10]),
        (AccessState.UNAVAILABLE, 0x0C, [MODE_SENSE6, READ_CAPACITY10], [tur(), read10(), SYNC_CACHE10]),
        (AccessState.TRANSITIONING, 0x0A, [], [tur(), read10(), MODE_SENSE6, READ_CAPACITY10]),
    ],
)
def test_state_command_matrix(
    state: AccessState, ascq: int, also_allowed: list[bytes], refused: list[bytes]
) -> None:
    srv = make_server(state2=state)
    for cdb in [*ALWAYS, *also_allowed]:
        assert run(srv, cdb, nexus=B).status == GOOD, (state, cdb.hex())
    for cdb in refused:
        res = run(srv, cdb, nexus=B)
        assert res.status == CHECK and sense(res) == (0x2, 0x04, ascq), (state, cdb.hex())
    data = bytes(512)
    res = run(srv, WRITE10, nexus=B, data=data)
    assert sense(res) == (0x2, 0x04, ascq)
    # the other port's group is active/optimized: everything works there
    assert run(srv, read10(), nexus=A).status == GOOD
    assert run(srv, WRITE10, nexus=A, data=data).status == GOOD


def test_transitioning_refuses_stpg_standby_admits_it() -> None:
    data = stpg_list((AccessState.ACTIVE_OPTIMIZED, 2))
    srv = make_server(state2=AccessState.TRANSITIONING)
    assert sense(run(srv, stpg(len(data)), nexus=B, data=data)) == (0x2, 0x04, 0x0A)
    srv = make_server(state2=AccessState.STANDBY)
    assert run(srv, stpg(len(data)), nexus=B, data=data).status == GOOD
    assert run(srv, read10(), nexus=B).status == GOOD


def test_active_non_optimized_executes_everything() -> None:
    srv = make_server(state2=AccessState.ACTIVE_NON_OPTIMIZED)
    for cdb in (tur(), read10(), MODE_SENSE6, SYNC_CACHE10):
        assert run(srv, cdb, nexus=B).status == GOOD


def test_admits_table_nesting() -> None:
    assert TRANSITIONING_ALLOWED < UNAVAILABLE_ALLOWED < STANDBY_ALLOWED
    assert admits(AccessState.STANDBY, bytes((0x5E, 0)))  # PERSISTENT RESERVE IN
    assert not admits(AccessState.UNAVAILABLE, bytes((0x5E, 0)))
    assert admits(AccessState.UNAVAILABLE, bytes((0xA4, 0x0A)))  # STPG
    assert not admits(AccessState.UNAVAILABLE, bytes((0xA4, 0x06)))  # other MAINTENANCE OUT
    assert admits(AccessState.ACTIVE_NON_OPTIMIZED, bytes((0x8A, 0)))


def test_unknown_port_is_not_restricted() -> None:
    srv = make_server(state2=AccessState.STANDBY)
    stray = ITNexus("iqn.2026-11.org.cistern:init-c", ISID_A, TARGET, tpgt=7, relative_port=7)
    srv.nexus_added(stray)
    run(srv, tur(), nexus=stray)  # POWER ON
    assert run(srv, read10(), nexus=stray).status == GOOD


# -- implicit transitions (the control layer's API) -------------------------------------------------


def test_implicit_transition_announces_to_every_nexus() -> None:
    srv = make_server()
    assert srv.set_access_state(2, "standby") is True
    for nexus in (A, B):
        assert sense(run(srv, tur(), nexus=nexus)) == (0x6, 0x2A, 0x06)
    assert sense(run(srv, tur(), nexus=B)) == (0x2, 0x04, 0x0B)
    assert run(srv, tur(), nexus=A).status == GOOD
    assert srv.alua.groups[2].status == StatusCode.ALTERED_IMPLICITLY
    # the UA is not reported to INQUIRY, and REQUEST SENSE consumes it
    assert srv.set_access_state(2, AccessState.ACTIVE_OPTIMIZED) is True
    assert run(srv, inquiry(), nexus=A).status == GOOD
    rs = bytes(run(srv, REQUEST_SENSE, nexus=A).data_in or b"")
    assert (rs[2] & 0x0F, rs[12], rs[13]) == (0x6, 0x2A, 0x06)
    assert run(srv, tur(), nexus=A).status == GOOD


def test_implicit_transition_without_change_is_silent() -> None:
    srv = make_server()
    assert srv.set_access_state(1, "active/optimized") is False
    assert run(srv, tur(), nexus=B).status == GOOD


def test_implicit_transition_errors() -> None:
    srv = make_server()
    with pytest.raises(KeyError):
        srv.set_access_state(9, "standby")
    with pytest.raises(ValueError, match="not an ALUA state"):
        srv.set_access_state(1, "sleepy")


def test_alua_model_validation() -> None:
    assert parse_state("active/non-optimized") == AccessState.ACTIVE_NON_OPTIMIZED
    with pytest.raises(ValueError, match="listed twice"):
        Alua.from_groups([TargetPortGroup(1, (1,)), TargetPortGroup(1, (2,))])
    with pytest.raises(ValueError, match="two target port groups"):
        Alua.from_groups([TargetPortGroup(1, (1,)), TargetPortGroup(2, (1,))])
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        TargetPortGroup(1, (0,))
