"""Shared helpers for the tape and changer unit tests: a device server on one event loop, CDB builders
and a fixed-format sense decoder."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from cistern.scsi import DeviceServer, ITNexus, ScsiResult, ScsiTask, Status

TARGET = "iqn.2026-11.org.cistern:vtl"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
B = ITNexus("iqn.2026-11.org.cistern:init-b", b"\x80\x00\x00\x00\x00\x02", TARGET)


@dataclass
class Sense:
    key: int
    asc: int
    ascq: int
    filemark: bool
    eom: bool
    ili: bool
    information: int | None
    sks: bytes


def sense_of(res: ScsiResult) -> Sense:
    s = bytes(res.sense or b"")
    assert s and s[0] & 0x7F == 0x70, s.hex()
    info = struct.unpack_from(">i", s, 3)[0] if s[0] & 0x80 else None
    return Sense(
        s[2] & 0x0F, s[12], s[13], bool(s[2] & 0x80), bool(s[2] & 0x40), bool(s[2] & 0x20), info, s[15:18]
    )


class Harness:
    """A device server and the loop that runs it; ``cmd`` sends one CDB from nexus ``A``."""

    def __init__(self, luns: dict[int, object]) -> None:
        self.loop = asyncio.new_event_loop()
        self.srv = DeviceServer(luns, target_name=TARGET)  # type: ignore[arg-type]
        self.srv.nexus_added(A)

    def run(self, coro: object) -> object:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def cmd(
        self, lun: int, cdb: bytes | list[int], data: bytes | None = None, nexus: ITNexus = A
    ) -> ScsiResult:
        task = ScsiTask(nexus=nexus, lun=lun, cdb=bytes(cdb), data_out=data, expected_length=len(data or b""))
        return self.loop.run_until_complete(self.srv.execute(task))

    def ok(self, lun: int, cdb: bytes | list[int], data: bytes | None = None) -> bytes:
        res = self.cmd(lun, cdb, data)
        assert res.status == Status.GOOD, (bytes(cdb).hex(), (res.sense or b"").hex())
        return bytes(res.data_in or b"")

    def check(self, lun: int, cdb: bytes | list[int], data: bytes | None = None) -> tuple[Sense, bytes]:
        res = self.cmd(lun, cdb, data)
        assert res.status == Status.CHECK_CONDITION, bytes(cdb).hex()
        return sense_of(res), bytes(res.data_in or b"")

    def clear_ua(self, lun: int) -> None:
        for _ in range(8):
            if self.cmd(lun, bytes(6)).status == Status.GOOD:
                return
            res = self.cmd(lun, bytes(6))
            if res.status == Status.CHECK_CONDITION and sense_of(res).key != 0x6:
                return

    def close(self) -> None:
        for lu in self.srv.luns.values():
            self.loop.run_until_complete(lu.close())
        self.loop.close()


def read6(n: int, fixed: bool = False, sili: bool = False) -> bytes:
    return bytes((0x08, (0x02 if sili else 0) | (0x01 if fixed else 0))) + n.to_bytes(3, "big") + b"\0"


def write6(n: int, fixed: bool = False) -> bytes:
    return bytes((0x0A, 0x01 if fixed else 0)) + n.to_bytes(3, "big") + b"\0"


def wfm(n: int, immed: bool = False) -> bytes:
    return bytes((0x10, 0x01 if immed else 0)) + n.to_bytes(3, "big") + b"\0"


def space6(code: int, count: int) -> bytes:
    return bytes((0x11, code)) + (count & 0xFFFFFF).to_bytes(3, "big") + b"\0"


def space16(code: int, count: int) -> bytes:
    return bytes((0x91, code, 0, 0)) + struct.pack(">q", count) + bytes(4)


def locate10(obj: int, cp: bool = False, partition: int = 0) -> bytes:
    return bytes((0x2B, 0x02 if cp else 0, 0)) + struct.pack(">I", obj) + bytes((0, partition, 0))


def locate16(obj: int, dest_type: int = 0) -> bytes:
    return bytes((0x92, dest_type << 3, 0, 0)) + struct.pack(">Q", obj) + bytes(4)


def read_position(sa: int = 0, alloc: int = 0) -> bytes:
    return bytes((0x34, sa, 0, 0, 0, 0, 0)) + struct.pack(">H", alloc) + b"\0"


REWIND = bytes((0x01, 0, 0, 0, 0, 0))
TUR = bytes(6)
