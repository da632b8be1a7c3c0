"""Hostile input: the device server never raises and always answers with a valid status and sense."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiTask, Status
from cistern.scsi.commands import COMMANDS
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
KNOWN_OPCODES = sorted({c.opcode for c in COMMANDS})


def make() -> DeviceServer:
    luns = {
        0: LogicalUnit(MemoryStore(64 * 1024), lun=0, thin=True, removable=True),
        1: LogicalUnit(MemoryStore(64 * 1024, block_size=4096), lun=1),
    }
    srv = DeviceServer(luns, target_name=TARGET)
    srv.nexus_added(A)
    return srv


def check(srv: DeviceServer, cdb: bytes, lun: int, data: bytes | None) -> None:
    res = asyncio.run(srv.execute(ScsiTask(nexus=A, lun=lun, cdb=cdb, data_out=data)))
    assert res.status in (Status.GOOD, Status.CHECK_CONDITION)
    if res.status == Status.CHECK_CONDITION:
        assert res.sense is not None and res.sense[0] & 0x7F in (0x70, 0x72)
        key = res.sense[2] & 0x0F if res.sense[0] & 0x7F == 0x70 else res.sense[1] & 0x0F
        assert key != 0x4, f"internal failure for CDB {cdb.hex()}"  # HARDWARE ERROR means a bug of ours
    if res.data_in is not None:
        assert isinstance(res.data_in, (bytes, bytearray, memoryview))


cdb_bytes = st.one_of(
    st.binary(max_size=20),
    st.builds(
        lambda op, rest: bytes([op]) + rest,
        st.sampled_from(KNOWN_OPCODES),
        st.binary(min_size=0, max_size=17),
    ),
)


@settings(max_examples=400, deadline=None)
@given(cdb=cdb_bytes, lun=st.integers(0, 3), data=st.one_of(st.none(), st.binary(max_size=600)))
def test_execute_never_raises(cdb: bytes, lun: int, data: bytes | None) -> None:
    check(make(), cdb, lun, data)


@settings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from(KNOWN_OPCODES),
    fields=st.lists(st.integers(0, 255), min_size=15, max_size=15),
    data=st.one_of(st.none(), st.binary(max_size=4200)),
)
def test_valid_looking_cdbs_never_raise(op: int, fields: list[int], data: bytes | None) -> None:
    srv = make()
    cdb = bytes([op, *fields])
    check(srv, cdb, 0, data)
    check(srv, cdb, 1, data)
