"""Persistent reservations through the device server (SPC-4 5.13, 6.16, 6.17): raw CDBs and parameter
lists in, status / sense / data out.  Every service action, PRgeneration, unit attentions, errors."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.scsi.transport_id import TransportId
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET, 1, 1)
B = ITNexus("iqn.2026-11.org.cistern:init-b", b"\x80\x00\x00\x00\x00\x02", TARGET, 1, 1)
C = ITNexus("iqn.2026-11.org.cistern:init-c", b"\x80\x00\x00\x00\x00\x03", TARGET, 1, 1)
OBSERVER = ITNexus("iqn.2026-11.org.cistern:observer", b"\x80\x00\x00\x00\x00\x09", TARGET, 1, 1)
WE, EA, WE_RO, EA_RO, WE_AR, EA_AR = 1, 3, 5, 6, 7, 8
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_AND_ABORT, REG_IGNORE, REG_MOVE = range(8)


def make_server(state: Path | None = None, nexuses: tuple[ITNexus, ...] = ()) -> DeviceServer:
    lu = LogicalUnit(MemoryStore(1 << 20), lun=0, pr_state_path=str(state) if state else None)
    srv = DeviceServer({0: lu}, target_name=TARGET)
    for n in nexuses:
        srv.nexus_added(n)
        drain_ua(srv, n)
    return srv


def run(srv: DeviceServer, cdb: bytes, nexus: ITNexus = A, data: bytes | None = None) -> ScsiResult:
    task = ScsiTask(nexus=nexus, lun=0, cdb=cdb, data_out=data, expected_length=len(data or b""))
    return asyncio.run(srv.execute(task))


def drain_ua(srv: DeviceServer, nexus: ITNexus) -> list[tuple[int, int]]:
    seen = []
    while (ua := srv.luns[0].pop_ua(nexus)) is not None:
        seen.append(ua)
    return seen


def sense(res: ScsiResult) -> tuple[int, int, int]:
    s = res.sense
    assert s is not None, res
    return s[2] & 0x0F, s[12], s[13]


def prin(srv: DeviceServer, sa: int, nexus: ITNexus = A, alloc: int = 8192) -> ScsiResult:
    return run(srv, struct.pack(">BB5xHx", 0x5E, sa, alloc), nexus)


def prout(
    srv: DeviceServer,
    sa: int,
    key: int = 0,
    sark: int = 0,
    *,
    nexus: ITNexus = A,
    type_: int = 0,
    scope: int = 0,
    flags: int = 0,
    extra: bytes = b"",
    length: int | None = None,
) -> ScsiResult:
    params = struct.pack(">QQ4xB3x", key, sark, flags) + extra
    plen = len(params) if length is None else length
    cdb = struct.pack(">BBB2xIx", 0x5F, sa, (scope << 4) | type_, plen)
    return run(srv, cdb, nexus, params)


def keys(srv: DeviceServer) -> tuple[int, list[int]]:
    d = bytes(prin(srv, 0, OBSERVER).data_in or b"")  # an observer never logged in: no unit attentions
    gen, length = struct.unpack_from(">II", d)
    return gen, [struct.unpack_from(">Q", d, 8 + i)[0] for i in range(0, length, 8)]


def reservation(srv: DeviceServer) -> tuple[int, int] | None:
    """(key, type) of the reservation, or None."""
    d = bytes(prin(srv, 1, OBSERVER).data_in or b"")
    (length,) = struct.unpack_from(">I", d, 4)
    if length == 0:
        return None
    assert length == 16
    return struct.unpack_from(">Q", d, 8)[0], d[21] & 0x0F


def ok(res: ScsiResult) -> None:
    assert res.status == Status.GOOD, (res.status, res.sense)


def conflict(res: ScsiResult) -> None:
    assert res.status == Status.RESERVATION_CONFLICT, (res.status, res.sense)


# ---------------------------------------------------------------------------------------- REGISTER


def test_register_unregister_and_generation() -> None:
    srv = make_server()
    assert keys(srv) == (0, [])
    ok(prout(srv, REGISTER, 0, 0xAA))
    assert keys(srv) == (1, [0xAA])
    conflict(prout(srv, REGISTER, 0, 0xBB))  # registered: RESERVATION KEY must match
    assert keys(srv) == (1, [0xAA])
    ok(prout(srv, REGISTER, 0xAA, 0xBB))  # change key
    assert keys(srv) == (2, [0xBB])
    ok(prout(srv, REGISTER, 0xBB, 0))  # unregister
    assert keys(srv) == (3, [])
    ok(prout(srv, REGISTER, 0, 0))  # unregistered, SARK 0: no-op, no new generation
    assert keys(srv) == (3, [])
    conflict(prout(srv, REGISTER, 5, 0x11))  # unregistered with a non-zero RESERVATION KEY
    assert keys(srv) == (3, [])


def test_register_and_ignore_existing_key() -> None:
    srv = make_server()
    ok(prout(srv, REG_IGNORE, 0x1234, 0xAA))
    ok(prout(srv, REG_IGNORE, 0x9999, 0xBB))
    assert keys(srv) == (2, [0xBB])
    ok(prout(srv, REG_IGNORE, 0, 0xCC, nexus=B))
    assert keys(srv) == (3, [0xBB, 0xCC])
    ok(prout(srv, REG_IGNORE, 0, 0))
    assert keys(srv) == (4, [0xCC])


def test_read_keys_truncated_keeps_additional_length() -> None:
    srv = make_server()
    ok(prout(srv, REG_IGNORE, 0, 0xAA))
    res = prin(srv, 0, alloc=8)
    d = bytes(res.data_in or b"")
    assert len(d) == 8 and struct.unpack_from(">I", d, 4)[0] == 8


def test_parameter_list_length_errors() -> None:
    srv = make_server()
    assert sense(prout(srv, REGISTER, 0, 1, extra=b"\0" * 4)) == (5, 0x1A, 0)  # 28 bytes, no SPEC_I_PT
    cdb = struct.pack(">BBB2xIx", 0x5F, REGISTER, 0, 24)
    assert sense(run(srv, cdb, A, b"\0" * 16)) == (5, 0x1A, 0)  # less data than the CDB says
    cdb = struct.pack(">BBB2xIx", 0x5F, REGISTER, 0, 16)
    assert sense(run(srv, cdb, A, b"\0" * 16)) == (5, 0x1A, 0)  # shorter than 24
    assert keys(srv) == (0, [])


def test_invalid_service_actions_and_fields() -> None:
    srv = make_server()
    for sa in range(4, 0x20):
        res = prin(srv, sa)
        assert sense(res) == (5, 0x24, 0)
    for sa in range(8, 0x20):
        assert sense(prout(srv, sa)) == (5, 0x24, 0)
    ok(prout(srv, REGISTER, 0, 0xAA))
    assert sense(prout(srv, RESERVE, 0xAA, type_=2)) == (5, 0x24, 0)  # TYPE 2 is obsolete
    assert sense(prout(srv, RESERVE, 0xAA, type_=WE, scope=1)) == (5, 0x24, 0)
    # SPEC_I_PT on anything but REGISTER: INVALID FIELD IN PARAMETER LIST
    assert sense(prout(srv, REG_IGNORE, 0, 0xAB, flags=0x08, extra=bytes(4))) == (5, 0x26, 0)
    # APTPL without a state file to keep it in (PTPL_C=0)
    assert sense(prout(srv, REGISTER, 0xAA, 0xAB, flags=0x01)) == (5, 0x26, 0)
    assert keys(srv) == (1, [0xAA])


# ---------------------------------------------------------------------------------------- RESERVE / RELEASE


@pytest.mark.parametrize("type_", [WE, EA, WE_RO, EA_RO, WE_AR, EA_AR])
def test_reserve_release_each_type(type_: int) -> None:
    srv = make_server()
    ok(prout(srv, REGISTER, 0, 0xAA))
    conflict(prout(srv, RESERVE, 0xAB, type_=type_))  # wrong key
    ok(prout(srv, RESERVE, 0xAA, type_=type_))
    all_reg = type_ in (WE_AR, EA_AR)
    assert reservation(srv) == (0 if all_reg else 0xAA, type_)
    ok(prout(srv, RESERVE, 0xAA, type_=type_))  # same type again: GOOD
    other = WE if type_ != WE else EA
    conflict(prout(srv, RESERVE, 0xAA, type_=other))  # holder asking for another type
    gen = keys(srv)[0]
    assert gen == 1  # RESERVE never changes PRgeneration
    ok(prout(srv, RELEASE, 0xAA, type_=type_))
    assert reservation(srv) is None and keys(srv)[0] == 1


def test_reserve_requires_registration_and_excludes_others() -> None:
    srv = make_server()
    conflict(prout(srv, RESERVE, 0, type_=WE))  # not registered
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=EA))
    conflict(prout(srv, RESERVE, 0xBB, nexus=B, type_=EA))


def test_release_wrong_type_and_by_non_holder() -> None:
    srv = make_server(nexuses=(A, B))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=WE))
    assert sense(prout(srv, RELEASE, 0xAA, type_=EA)) == (5, 0x26, 0x04)  # INVALID RELEASE OF PR
    ok(prout(srv, RELEASE, 0xBB, nexus=B, type_=WE))  # non-holder: GOOD, nothing released
    assert reservation(srv) == (0xAA, WE)
    conflict(prout(srv, RELEASE, 0xAB, type_=WE))  # key mismatch
    conflict(prout(srv, RELEASE, 0, nexus=C, type_=WE))  # unregistered
    ok(prout(srv, RELEASE, 0xAA, type_=WE))
    assert reservation(srv) is None
    assert drain_ua(srv, B) == []  # WE release: no RESERVATIONS RELEASED unit attention


def test_release_registrants_only_tells_the_other_registrants() -> None:
    srv = make_server(nexuses=(A, B, C))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=WE_RO))
    ok(prout(srv, RELEASE, 0xAA, type_=WE_RO))
    assert drain_ua(srv, B) == [(0x2A, 0x04)]
    assert drain_ua(srv, C) == []  # not registered
    assert drain_ua(srv, A) == []  # the nexus that released


def test_unregister_holder_releases_reservation() -> None:
    srv = make_server(nexuses=(A, B))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=EA_RO))
    ok(prout(srv, REGISTER, 0xAA, 0))
    assert reservation(srv) is None
    assert drain_ua(srv, B) == [(0x2A, 0x04)]


def test_all_registrants_survives_until_last_registrant_leaves() -> None:
    srv = make_server()
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=EA_AR))
    ok(prout(srv, REGISTER, 0xAA, 0))
    assert reservation(srv) == (0, EA_AR)
    ok(prout(srv, RELEASE, 0xBB, nexus=B, type_=EA_AR))  # any registrant holds it and may release
    assert reservation(srv) is None
    ok(prout(srv, RESERVE, 0xBB, nexus=B, type_=WE_AR))
    ok(prout(srv, REGISTER, 0xBB, 0, nexus=B))
    assert reservation(srv) is None and keys(srv)[1] == []


# ---------------------------------------------------------------------------------------- CLEAR


def test_clear() -> None:
    srv = make_server(nexuses=(A, B, C))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=EA))
    conflict(prout(srv, CLEAR, 0, nexus=C))  # unregistered
    conflict(prout(srv, CLEAR, 0xBC, nexus=B))  # wrong key
    gen = keys(srv)[0]
    ok(prout(srv, CLEAR, 0xBB, nexus=B))  # any registrant may clear
    assert keys(srv) == (gen + 1, []) and reservation(srv) is None
    assert drain_ua(srv, A) == [(0x2A, 0x03)]
    assert drain_ua(srv, B) == [] and drain_ua(srv, C) == []


# ---------------------------------------------------------------------------------------- PREEMPT


def test_preempt_removes_registration_without_reservation() -> None:
    srv = make_server(nexuses=(A, B))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    gen = keys(srv)[0]
    ok(prout(srv, PREEMPT, 0xBB, 0xAA, nexus=B, type_=EA))
    assert keys(srv) == (gen + 1, [0xBB]) and reservation(srv) is None
    assert drain_ua(srv, A) == [(0x2A, 0x05)]
    conflict(prout(srv, PREEMPT, 0xBB, 0x77, nexus=B, type_=EA))  # no registration has that key
    assert sense(prout(srv, PREEMPT, 0xBB, 0, nexus=B, type_=EA)) == (5, 0x26, 0)  # SARK 0, no PR


def test_preempt_holder_takes_reservation() -> None:
    srv = make_server(nexuses=(A, B, C))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, REGISTER, 0, 0xCC, nexus=C))
    ok(prout(srv, RESERVE, 0xAA, type_=WE))
    ok(prout(srv, PREEMPT, 0xBB, 0xAA, nexus=B, type_=EA))
    assert reservation(srv) == (0xBB, EA)
    assert keys(srv)[1] == [0xBB, 0xCC]
    assert drain_ua(srv, A) == [(0x2A, 0x05)]
    assert drain_ua(srv, C) == [(0x2A, 0x04)]  # the type changed: RESERVATIONS RELEASED
    assert sense(prout(srv, PREEMPT, 0xBB, 0, nexus=B, type_=EA)) == (5, 0x26, 0)


def test_preempt_self_changes_type() -> None:
    srv = make_server(nexuses=(A,))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, RESERVE, 0xAA, type_=WE))
    gen = keys(srv)[0]
    ok(prout(srv, PREEMPT, 0xAA, 0xAA, type_=EA_RO))
    assert reservation(srv) == (0xAA, EA_RO) and keys(srv) == (gen + 1, [0xAA])


def test_preempt_all_registrants_with_zero_key() -> None:
    srv = make_server(nexuses=(A, B, C))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, REGISTER, 0, 0xCC, nexus=C))
    ok(prout(srv, RESERVE, 0xAA, type_=WE_AR))
    ok(prout(srv, PREEMPT, 0xBB, 0, nexus=B, type_=EA))
    assert reservation(srv) == (0xBB, EA) and keys(srv)[1] == [0xBB]
    assert drain_ua(srv, A) == [(0x2A, 0x05)] and drain_ua(srv, C) == [(0x2A, 0x05)]


def test_preempt_and_abort_calls_the_abort_hook() -> None:
    srv = make_server(nexuses=(A, B, C))
    calls: list[tuple[frozenset[ITNexus], int]] = []
    srv.abort_hook = lambda nexuses, lun: calls.append((nexuses, lun))
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, REGISTER, 0, 0xBB, nexus=B))
    ok(prout(srv, RESERVE, 0xAA, type_=EA))
    ok(prout(srv, PREEMPT, 0xBB, 0xAA, nexus=B, type_=EA))
    assert calls == []  # plain PREEMPT aborts nothing
    ok(prout(srv, REGISTER, 0, 0xCC, nexus=C))
    ok(prout(srv, PREEMPT_AND_ABORT, 0xCC, 0xBB, nexus=C, type_=WE))
    assert calls == [(frozenset({B}), 0)]
    assert reservation(srv) == (0xCC, WE)


# ---------------------------------------------------------------------------------------- SPEC_I_PT, ALL_TG_PT


def tid_list(*tids: TransportId) -> bytes:
    body = b"".join(t.encode() for t in tids)
    return struct.pack(">I", len(body)) + body


def test_spec_i_pt_registers_listed_ports() -> None:
    srv = make_server()
    extra = tid_list(TransportId(B.initiator_name, B.isid), TransportId(C.initiator_name))
    ok(prout(srv, REGISTER, 0, 0xAA, flags=0x08, extra=extra))
    assert keys(srv) == (1, [0xAA, 0xAA, 0xAA])
    ok(prout(srv, RESERVE, 0xAA, nexus=B, type_=WE))  # B is registered through A's SPEC_I_PT
    ok(prout(srv, REGISTER, 0xAA, 0xC1, nexus=C))  # format 00b: any ISID of init-c
    full = bytes(prin(srv, 3).data_in or b"")
    gen, length = struct.unpack_from(">II", full)
    assert length == len(full) - 8 and gen == 2
    names = []
    off = 8
    while off < len(full):
        key, flags, scope_type, rel, dlen = struct.unpack_from(">Q4xBB4xHI", full, off)
        tid = full[off + 24 : off + 24 + dlen]
        assert tid[0] & 0x0F == 5 and dlen % 4 == 0 and dlen >= 24
        assert rel == 1 and scope_type == (WE if flags & 1 else 0)
        names.append((key, flags & 1, tid[4:].rstrip(b"\0").decode()))
        off += 24 + dlen
    assert names == [
        (0xAA, 0, f"{A.initiator_name},i,0x{A.isid.hex()}"),
        (0xAA, 1, f"{B.initiator_name},i,0x{B.isid.hex()}"),
        (0xC1, 0, C.initiator_name),
    ]


@pytest.mark.parametrize(
    "extra",
    [
        struct.pack(">I", 8) + b"\x45\x00\x00\x04abc\0",  # format 01b without ISID
        struct.pack(">I", 8) + b"\x01\x00\x00\x04abc\0",  # Fibre Channel, not iSCSI
        struct.pack(">I", 8) + b"\x05\x00\x00\x08abc\0",  # ADDITIONAL LENGTH past the list
        struct.pack(">I", 8) + b"\x05\x00\x00\x04\0\0\0\0",  # empty name
    ],
)
def test_spec_i_pt_hostile_transport_ids(extra: bytes) -> None:
    srv = make_server()
    assert sense(prout(srv, REGISTER, 0, 0xAA, flags=0x08, extra=extra)) == (5, 0x26, 0)
    assert keys(srv) == (0, [])


def test_spec_i_pt_length_mismatch_and_duplicates() -> None:
    srv = make_server()
    extra = tid_list(TransportId(B.initiator_name, B.isid))
    bad = struct.pack(">I", 100) + extra[4:]
    assert sense(prout(srv, REGISTER, 0, 0xAA, flags=0x08, extra=bad)) == (5, 0x1A, 0)
    twice = tid_list(TransportId(B.initiator_name, B.isid), TransportId(B.initiator_name))
    assert sense(prout(srv, REGISTER, 0, 0xAA, flags=0x08, extra=twice)) == (5, 0x26, 0)
    ok(prout(srv, REGISTER, 0, 0xAA))
    # an already registered nexus may not use SPEC_I_PT
    assert sense(prout(srv, REGISTER, 0xAA, 0xAB, flags=0x08, extra=extra)) == (5, 0x26, 0)


def test_all_tg_pt_registration_covers_other_target_ports() -> None:
    srv = make_server()
    a2 = ITNexus(A.initiator_name, A.isid, TARGET, tpgt=2, relative_port=2)
    ok(prout(srv, REGISTER, 0, 0xAA, flags=0x04))
    ok(prout(srv, RESERVE, 0xAA, nexus=a2, type_=EA))  # the same initiator port, another target port
    d = bytes(prin(srv, 3).data_in or b"")
    assert d[8 + 12] == 0x03  # ALL_TG_PT and R_HOLDER


# ---------------------------------------------------------------------------------------- REGISTER AND MOVE


def move_params(key: int, sark: int, tid: TransportId, rel: int = 1, flags: int = 0) -> tuple[bytes, int]:
    t = tid.encode()
    return struct.pack(">QQxBHI", key, sark, flags, rel, len(t)) + t, 24 + len(t)


def run_move(srv: DeviceServer, params: bytes, nexus: ITNexus = A) -> ScsiResult:
    return run(srv, struct.pack(">BBB2xIx", 0x5F, REG_MOVE, 0, len(params)), nexus, params)


def test_register_and_move() -> None:
    srv = make_server()
    ok(prout(srv, REGISTER, 0, 0xAA))
    params, _ = move_params(0xAA, 0xB0, TransportId(B.initiator_name, B.isid))
    conflict(run_move(srv, params))  # not the reservation holder
    ok(prout(srv, RESERVE, 0xAA, type_=WE_RO))
    ok(run_move(srv, params))
    assert reservation(srv) == (0xB0, WE_RO) and keys(srv)[1] == [0xAA, 0xB0]
    params, _ = move_params(0xB0, 0xA1, TransportId(A.initiator_name, A.isid), flags=0x02)  # UNREG
    ok(run_move(srv, params, B))
    assert reservation(srv) == (0xAA, WE_RO) and keys(srv)[1] == [0xAA]  # A kept its key


def test_register_and_move_errors() -> None:
    srv = make_server()
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, RESERVE, 0xAA, type_=WE))
    to_self, _ = move_params(0xAA, 0xB0, TransportId(A.initiator_name, A.isid))
    assert sense(run_move(srv, to_self)) == (5, 0x26, 0)
    zero, _ = move_params(0xAA, 0, TransportId(B.initiator_name, B.isid))
    assert sense(run_move(srv, zero)) == (5, 0x26, 0)
    bad_port, _ = move_params(0xAA, 0xB0, TransportId(B.initiator_name, B.isid), rel=9)
    assert sense(run_move(srv, bad_port)) == (5, 0x26, 0)
    assert sense(run_move(srv, bad_port[:20])) == (5, 0x1A, 0)
    assert sense(run_move(srv, bad_port[:30])) == (5, 0x1A, 0)  # TransportID longer than the list
    ok(prout(srv, RELEASE, 0xAA, type_=WE))
    ok(prout(srv, RESERVE, 0xAA, type_=EA_AR))
    good, _ = move_params(0xAA, 0xB0, TransportId(B.initiator_name, B.isid))
    conflict(run_move(srv, good))  # all-registrants reservations cannot move
    assert keys(srv)[1] == [0xAA]


# ---------------------------------------------------------------------------------------- REPORT CAPABILITIES


def test_report_capabilities(tmp_path: Path) -> None:
    d = bytes(prin(make_server(), 2).data_in or b"")
    assert len(d) == 8 and struct.unpack_from(">H", d)[0] == 8
    assert d[2] == 0x1C  # CRH, SIP_C, ATP_C; PTPL_C=0 without a state file
    assert d[3] == 0xA0  # TMV, ALLOW COMMANDS 010b, PTPL_A=0
    assert d[4:6] == b"\xea\x01"
    srv = make_server(tmp_path / "lu.pr.json")
    ok(prout(srv, REGISTER, 0, 0xAA, flags=0x01))
    d = bytes(prin(srv, 2).data_in or b"")
    assert d[2] == 0x1D and d[3] == 0xA1  # PTPL_C and PTPL_A


def test_read_reservation_truncated_and_full_status_empty() -> None:
    srv = make_server()
    ok(prout(srv, REGISTER, 0, 0xAA))
    ok(prout(srv, RESERVE, 0xAA, type_=EA))
    d = bytes(prin(srv, 1, alloc=12).data_in or b"")
    assert len(d) == 12 and struct.unpack_from(">I", d, 4)[0] == 16
    assert bytes(prin(make_server(), 3).data_in or b"") == bytes(8)


# ---------------------------------------------------------------------------------------- hostile input


def test_random_parameter_lists_never_break_the_device_server() -> None:
    import random

    rng = random.Random(1234)
    srv = make_server(nexuses=(A, B))
    for _ in range(400):
        sa = rng.randrange(0, 9)
        size = rng.choice((0, 8, 24, 28, 40, rng.randrange(0, 200)))
        data = bytes(rng.randrange(256) for _ in range(size))
        if size >= 21 and rng.random() < 0.5:
            data = data[:20] + bytes((0x08,)) + data[21:]  # SPEC_I_PT, to reach the TransportID parser
        cdb = struct.pack(
            ">BBB2xIx", 0x5F, sa, rng.randrange(256), rng.choice((size, size + 4, max(0, size - 4)))
        )
        nexus = rng.choice((A, B))
        res = run(srv, cdb, nexus, data)
        assert res.status in (Status.GOOD, Status.RESERVATION_CONFLICT, Status.CHECK_CONDITION)
        if res.status == Status.CHECK_CONDITION:
            assert sense(res)[0] in (5, 6), res.sense  # ILLEGAL REQUEST, or a unit attention
    drain_ua(srv, A)
    assert prin(srv, 3).status == Status.GOOD


def test_too_many_spec_i_pt_transport_ids_is_insufficient_resources() -> None:
    srv = make_server()
    tids = [TransportId(f"iqn.2026-11.org.cistern:i{i}", bytes(6)) for i in range(1100)]
    extra = tid_list(*tids)
    assert sense(prout(srv, REGISTER, 0, 0xAA, flags=0x08, extra=extra)) == (5, 0x55, 0x04)
    assert keys(srv) == (0, [])
