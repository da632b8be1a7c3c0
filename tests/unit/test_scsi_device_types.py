"""Device types: the device server dispatches through each LU's own command table, and INQUIRY, VPD,
MODE SENSE and REPORT SUPPORTED OPERATION CODES answer from the LU's type (unit.LogicalUnitBase)."""

from __future__ import annotations

import asyncio
import struct

from cistern.scsi import (
    CommandSpec,
    CommandTable,
    DeviceServer,
    ITNexus,
    LogicalUnit,
    LogicalUnitBase,
    ScsiResult,
    ScsiTask,
    Status,
    inquiry,
    mode,
    spc,
)
from cistern.scsi.table import report_supported_opcodes
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:types"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)


async def _ping(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    return ScsiResult(data_in=b"pong", transfer_length=4)


class Printer(LogicalUnitBase):
    """A made-up type (processor device, 0x03) with a three-command table plus the SPC basics."""

    device_type = 0x03
    version_descriptors = (0x00A0, 0x0960, 0x0460)

    def __init__(self, lun: int) -> None:
        table = CommandTable(
            (
                CommandSpec(0x00, None, "TEST UNIT READY", bytes(6), spc.test_unit_ready),
                CommandSpec(
                    0x12,
                    None,
                    "INQUIRY",
                    bytes((0x12, 1, 0xFF, 0xFF, 0xFF, 0)),
                    inquiry.inquiry,
                    ua_exempt=True,
                    needs_medium=False,
                ),
                CommandSpec(
                    0x1A,
                    None,
                    "MODE SENSE(6)",
                    bytes((0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0)),
                    mode.mode_sense6,
                    needs_medium=False,
                ),
                CommandSpec(0x28, None, "PING", bytes((0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0)), _ping),
                CommandSpec(
                    0xA3,
                    0x0C,
                    "REPORT SUPPORTED OPERATION CODES",
                    bytes((0xA3, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0)),
                    report_supported_opcodes,
                    needs_medium=False,
                ),
            )
        )
        super().__init__(lun=lun, commands=table, serial="printer-1")


def run(srv: DeviceServer, cdb: bytes, lun: int) -> ScsiResult:
    return asyncio.run(srv.execute(ScsiTask(nexus=A, lun=lun, cdb=cdb)))


def make() -> DeviceServer:
    srv = DeviceServer({0: LogicalUnit(MemoryStore(64 * 1024), lun=0), 1: Printer(1)}, target_name=TARGET)
    return srv


def test_each_lu_dispatches_through_its_own_table() -> None:
    srv = make()
    # opcode 0x28 is READ(10) on the disk and PING on the printer
    disk = run(srv, bytes((0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0)), 0)
    assert disk.status == Status.GOOD and len(bytes(disk.data_in or b"")) == 512
    assert bytes(run(srv, bytes((0x28,)) + bytes(9), 1).data_in or b"") == b"pong"
    # READ CAPACITY(10) is not in the printer's table: INVALID COMMAND OPERATION CODE
    res = run(srv, bytes((0x25,)) + bytes(9), 1)
    assert res.status == Status.CHECK_CONDITION and res.sense is not None
    assert (res.sense[2] & 0x0F, res.sense[12], res.sense[13]) == (0x05, 0x20, 0x00)


def test_inquiry_reports_the_type_and_its_version_descriptors() -> None:
    srv = make()
    data = bytes(run(srv, bytes((0x12, 0, 0, 0, 96, 0)), 1).data_in or b"")
    assert data[0] == 0x03 and data[1] == 0x00
    assert data[5] & 0x08 == 0  # no 3PC: only the disk does EXTENDED COPY
    assert struct.unpack_from(">3H", data, 58) == (0x00A0, 0x0960, 0x0460) and data[64:66] == b"\0\0"
    disk = bytes(run(srv, bytes((0x12, 0, 0, 0, 96, 0)), 0).data_in or b"")
    assert disk[0] == 0x00 and disk[5] & 0x08 and struct.unpack_from(">H", disk, 64)[0] == 0x04C0
    pages = bytes(run(srv, bytes((0x12, 1, 0, 0, 255, 0)), 1).data_in or b"")
    assert pages[4:] == bytes((0x00, 0x80, 0x83))  # the base pages only
    assert bytes(run(srv, bytes((0x12, 1, 0x80, 0, 255, 0)), 1).data_in or b"")[4:] == b"printer-1"
    res = run(srv, bytes((0x12, 1, 0xB0, 0, 255, 0)), 1)
    assert res.status == Status.CHECK_CONDITION


def test_report_supported_opcodes_lists_the_lu_table() -> None:
    srv = make()
    res = run(srv, bytes((0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)), 1)
    data = bytes(res.data_in or b"")
    (length,) = struct.unpack_from(">I", data)
    ops = [data[4 + 8 * i] for i in range(length // 8)]
    assert ops == [0x00, 0x12, 0x1A, 0x28, 0xA3]


def test_mode_sense_uses_the_type_hooks() -> None:
    srv = make()
    data = bytes(run(srv, bytes((0x1A, 0, 0x3F, 0, 255, 0)), 1).data_in or b"")
    assert data[3] == 0  # no block descriptor for a type without one
    assert data[4] == 0x0A and len(data) == 4 + 12  # the base's control page only
