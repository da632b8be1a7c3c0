"""SCSI helpers on top of ``execute``: INQUIRY, REPORT LUNS, READ CAPACITY, READ/WRITE, VERIFY,
SYNCHRONIZE CACHE, UNMAP, WRITE SAME, COMPARE AND WRITE, PERSISTENT RESERVE IN/OUT, TEST UNIT READY
(SPC-4, SBC-3).  A mixin: the class it is mixed into provides ``execute`` and ``submit``.

Block sizes are learnt from READ CAPACITY and cached per LUN, so ``read(lun, lba, blocks)`` and
``write(lun, lba, data)`` need no size argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cistern.initiator import cdb
from cistern.initiator.errors import ScsiCheckCondition
from cistern.initiator.scsi_data import (
    Capacity,
    InquiryData,
    Reservation,
    VpdPage,
    parse_inquiry,
    parse_lba_status,
    parse_pr_read_keys,
    parse_pr_read_reservation,
    parse_read_capacity_10,
    parse_read_capacity_16,
    parse_report_luns,
    parse_vpd,
)
from cistern.initiator.sense import ILLEGAL_REQUEST
from cistern.wire.pdu import Buffer

if TYPE_CHECKING:
    from cistern.initiator.task import Command, ScsiResult

# PERSISTENT RESERVE service actions (SPC-4 6.14.1, 6.15.2)
PR_IN_READ_KEYS = 0x00
PR_IN_READ_RESERVATION = 0x01
PR_OUT_REGISTER = 0x00
PR_OUT_RESERVE = 0x01
PR_OUT_RELEASE = 0x02
PR_OUT_CLEAR = 0x03
PR_OUT_PREEMPT = 0x04
PR_OUT_PREEMPT_AND_ABORT = 0x05
PR_OUT_REGISTER_AND_IGNORE = 0x06
PR_TYPE_WRITE_EXCLUSIVE = 0x1
PR_TYPE_EXCLUSIVE_ACCESS = 0x3
PR_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
PR_TYPE_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6


class ScsiCommands:
    _block_sizes: dict[int, int]

    async def execute(
        self,
        lun: int,
        cdb: bytes,
        data_out: Buffer | None = None,
        read_length: int = 0,
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> ScsiResult:
        raise NotImplementedError

    def submit(self, lun: int, cdb: bytes, data_out: Buffer | None = None, read_length: int = 0) -> Command:
        raise NotImplementedError

    # -- discovery of the logical unit -----------------------------------------------------------------

    async def test_unit_ready(self, lun: int) -> None:
        await self.execute(lun, cdb.test_unit_ready())

    async def inquiry(self, lun: int = 0, vpd_page: int | None = None) -> InquiryData | VpdPage:
        """Standard INQUIRY data, or the VPD page ``vpd_page`` (0x00, 0x80, 0x83 decoded)."""
        length = 255 if vpd_page is None else 4096
        result = await self.execute(lun, cdb.inquiry(vpd_page, length), read_length=length)
        data = bytes(result.data)
        if vpd_page is None:
            return parse_inquiry(data)
        return parse_vpd(data)

    async def report_luns(self) -> list[int]:
        length = 8 + 8 * 256
        result = await self.execute(0, cdb.report_luns(length), read_length=length)
        data = bytes(result.data)
        needed = 8 + int.from_bytes(data[0:4], "big") if len(data) >= 4 else 0
        if needed > length and needed <= 1 << 20:
            result = await self.execute(0, cdb.report_luns(needed), read_length=needed)
            data = bytes(result.data)
        return parse_report_luns(data)

    async def read_capacity(self, lun: int) -> Capacity:
        """READ CAPACITY(16), falling back to READ CAPACITY(10) for targets that do not support it."""
        try:
            result = await self.execute(lun, cdb.read_capacity_16(32), read_length=32)
            capacity = parse_read_capacity_16(bytes(result.data))
        except ScsiCheckCondition as exc:
            if exc.sense_key != ILLEGAL_REQUEST:
                raise
            result = await self.execute(lun, cdb.read_capacity_10(), read_length=8)
            capacity = parse_read_capacity_10(bytes(result.data))
            if capacity.blocks == 0x1_0000_0000:  # 0xFFFFFFFF + 1: too large for (10), and (16) failed
                raise
        self._block_sizes[lun] = capacity.block_size
        return capacity

    async def block_size(self, lun: int) -> int:
        size = self._block_sizes.get(lun)
        if size is None:
            size = (await self.read_capacity(lun)).block_size
        return size

    async def get_lba_status(self, lun: int, lba: int) -> list[tuple[int, int, int]]:
        """GET LBA STATUS (SBC-3 5.16) from ``lba``: ``(lba, blocks, status)`` descriptors in order,
        status 0 mapped, 1 deallocated, 2 anchored.  Raises ScsiCheckCondition where unsupported."""
        length = 8 + 16 * 256
        result = await self.execute(lun, cdb.get_lba_status(lba, length), read_length=length)
        return parse_lba_status(bytes(result.data))

    # -- data transfer ---------------------------------------------------------------------------------

    async def read(self, lun: int, lba: int, blocks: int, *, fua: bool = False) -> memoryview:
        """READ ``blocks`` blocks at ``lba`` (6/10/16 chosen by range); returns the data."""
        size = await self.block_size(lun)
        result = await self.execute(lun, cdb.read(lba, blocks, fua=fua), read_length=blocks * size)
        return result.data

    async def write(self, lun: int, lba: int, data: Buffer, *, fua: bool = False) -> None:
        """WRITE ``data`` (a whole number of blocks) at ``lba`` (6/10/16 chosen by range)."""
        size = await self.block_size(lun)
        blocks, rest = divmod(len(data), size)
        if rest or not blocks:
            raise ValueError(
                f"write of {len(data)} bytes is not a positive multiple of the {size}-byte block"
            )
        await self.execute(lun, cdb.write(lba, blocks, fua=fua), data_out=data)

    async def verify(self, lun: int, lba: int, blocks: int, data: Buffer | None = None) -> None:
        """VERIFY the medium; with ``data`` compare it too (BYTCHK=1), MISCOMPARE raises Miscompare."""
        await self.execute(lun, cdb.verify(lba, blocks, bytchk=data is not None), data_out=data)

    async def synchronize_cache(self, lun: int, lba: int = 0, blocks: int = 0) -> None:
        await self.execute(lun, cdb.synchronize_cache(lba, blocks))

    async def unmap(self, lun: int, extents: list[tuple[int, int]]) -> None:
        """UNMAP (lba, blocks) extents."""
        params = cdb.unmap_parameters(extents)
        await self.execute(lun, cdb.unmap(len(params)), data_out=params)

    async def write_same(
        self, lun: int, lba: int, blocks: int, block: Buffer, *, unmap: bool = False
    ) -> None:
        """WRITE SAME: ``block`` (one logical block) repeated over ``blocks`` blocks."""
        await self.execute(lun, cdb.write_same(lba, blocks, unmap=unmap), data_out=block)

    async def compare_and_write(self, lun: int, lba: int, compare: Buffer, write: Buffer) -> None:
        """COMPARE AND WRITE (atomic test-and-set); a mismatch raises Miscompare."""
        size = await self.block_size(lun)
        if len(compare) != len(write) or len(compare) % size:
            raise ValueError("compare and write buffers must be equal whole numbers of blocks")
        payload = bytes(compare) + bytes(write)
        await self.execute(lun, cdb.compare_and_write(lba, len(compare) // size), data_out=payload)

    # -- persistent reservations -----------------------------------------------------------------------

    async def persistent_reserve_in(self, lun: int, service_action: int = PR_IN_READ_KEYS) -> bytes:
        result = await self.execute(lun, cdb.persistent_reserve_in(service_action, 8192), read_length=8192)
        return bytes(result.data)

    async def pr_read_keys(self, lun: int) -> tuple[int, list[int]]:
        return parse_pr_read_keys(await self.persistent_reserve_in(lun, PR_IN_READ_KEYS))

    async def pr_read_reservation(self, lun: int) -> Reservation:
        return parse_pr_read_reservation(await self.persistent_reserve_in(lun, PR_IN_READ_RESERVATION))

    async def persistent_reserve_out(
        self,
        lun: int,
        service_action: int,
        *,
        key: int = 0,
        service_action_key: int = 0,
        pr_type: int = 0,
        aptpl: bool = False,
    ) -> None:
        params = cdb.persistent_reserve_out_parameters(key, service_action_key, aptpl=aptpl)
        await self.execute(
            lun, cdb.persistent_reserve_out(service_action, pr_type, len(params)), data_out=params
        )
