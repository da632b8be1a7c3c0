"""EXTENDED COPY (LID1) between LUs of one device server, RECEIVE COPY RESULTS, and SANITIZE."""

from __future__ import annotations

import asyncio
import struct

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status, xcopy
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
BS = 512
NB = 1024


def make(thin: bool = False) -> DeviceServer:
    lus = {n: LogicalUnit(MemoryStore(NB * BS, block_size=BS), lun=n, thin=thin) for n in (0, 1)}
    for lu in lus.values():
        lu.sanitize_rate = 0  # unpaced in unit tests
    return DeviceServer(lus, target_name=TARGET)


def run(srv: DeviceServer, cdb: bytes, data: bytes | None = None, lun: int = 0) -> ScsiResult:
    t = ScsiTask(nexus=A, lun=lun, cdb=cdb.ljust(16, b"\0"), data_out=data, expected_length=len(data or b""))
    return asyncio.run(srv.execute(t))


def key_asc(res: ScsiResult) -> tuple[int, int, int]:
    assert res.status == Status.CHECK_CONDITION and res.sense is not None
    return (res.sense[2] & 0xF, res.sense[12], res.sense[13])


def cscd(lu: LogicalUnit, dtype: int = 0xE4) -> bytes:
    designator = bytes((0x01, 0x03, 0, len(lu.naa_id))) + lu.naa_id
    return bytes((dtype, 0, 0, 0)) + designator.ljust(24, b"\0") + bytes((0,)) + BS.to_bytes(3, "big")


def b2b(src: int, dst: int, blocks: int, src_lba: int, dst_lba: int, kind: int = 0x02) -> bytes:
    return struct.pack(">BBHHHxxHQQ", kind, 0, 0x18, src, dst, blocks, src_lba, dst_lba)


def params(cscds: list[bytes], segs: list[bytes], list_id: int = 1, usage: int = 0) -> bytes:
    t, s = b"".join(cscds), b"".join(segs)
    return struct.pack(">BBH4xII", list_id, usage << 3, len(t), len(s), 0) + t + s


def xcopy_cdb(length: int) -> bytes:
    return struct.pack(">BB8xIxx", 0x83, 0, length)


def rcr(sa: int, list_id: int = 0, alloc: int = 1024) -> bytes:
    return struct.pack(">BBB7xIxx", 0x84, sa, list_id, alloc)


def wr(srv: DeviceServer, lun: int, lba: int, data: bytes) -> None:
    n = len(data) // BS
    assert run(srv, struct.pack(">BBQIBx", 0x8A, 0, lba, n, 0), data, lun=lun).good


def rd(srv: DeviceServer, lun: int, lba: int, n: int) -> bytes:
    return bytes(run(srv, struct.pack(">BBQIBx", 0x88, 0, lba, n, 0), lun=lun).data_in or b"")


def test_copy_between_two_lus_and_copy_status() -> None:
    srv = make()
    lu0, lu1 = srv.luns[0], srv.luns[1]
    wr(srv, 0, 10, b"x" * 4 * BS + b"y" * 4 * BS)
    p = params([cscd(lu0), cscd(lu1)], [b2b(0, 1, 8, 10, 100), b2b(0, 0, 2, 10, 500)], list_id=7)
    assert run(srv, xcopy_cdb(len(p)), p).good
    assert rd(srv, 1, 100, 8) == b"x" * 4 * BS + b"y" * 4 * BS
    assert rd(srv, 0, 500, 2) == b"x" * 2 * BS
    status = bytes(run(srv, rcr(xcopy.SA_COPY_STATUS, 7)).data_in or b"")
    avail, state, segs, units, count = struct.unpack(">IBHBI", status)
    assert (avail, state, segs, units, count) == (8, 0x01, 2, 0, 10 * BS)
    assert key_asc(run(srv, rcr(xcopy.SA_COPY_STATUS, 8))) == (0x5, 0x24, 0x00)  # no such list
    assert run(srv, xcopy_cdb(0)).good  # empty parameter list: nothing to do


def test_operating_parameters() -> None:
    data = bytes(run(make(), rcr(xcopy.SA_OPERATING_PARAMETERS)).data_in or b"")
    avail = struct.unpack_from(">I", data)[0]
    assert avail == len(data) - 4 and avail >= 40
    max_cscd, max_seg, max_list = struct.unpack_from(">HHI", data, 8)
    assert (max_cscd, max_seg, max_list) == (8, 64, 4096)
    assert data[44 : 44 + data[43]] == bytes((0x02, 0xE4))


def test_parameter_list_errors() -> None:
    srv = make()
    lu0 = srv.luns[0]
    good = params([cscd(lu0)], [b2b(0, 0, 4, 0, 8)])
    assert key_asc(run(srv, xcopy_cdb(16 + 31), good[: 16 + 31])) == (0x5, 0x1A, 0x00)  # truncated
    too_many_t = params([cscd(lu0)] * 9, [b2b(0, 0, 1, 0, 8)])
    assert key_asc(run(srv, xcopy_cdb(len(too_many_t)), too_many_t)) == (0x5, 0x26, 0x06)
    too_many_s = params([cscd(lu0)], [b2b(0, 0, 1, 0, 8)] * 65)
    assert key_asc(run(srv, xcopy_cdb(len(too_many_s)), too_many_s)) == (0x5, 0x26, 0x08)
    too_long = params([cscd(lu0)] * 9, [b2b(0, 0, 1, 0, 8)] * 137)
    assert key_asc(run(srv, xcopy_cdb(len(too_long)), too_long)) == (0x5, 0x1A, 0x00)
    fc = params([cscd(lu0, dtype=0xE0)], [b2b(0, 0, 1, 0, 8)])
    assert key_asc(run(srv, xcopy_cdb(len(fc)), fc)) == (0x5, 0x26, 0x07)
    stream = params([cscd(lu0)], [b2b(0, 0, 1, 0, 8, kind=0x03)])
    assert key_asc(run(srv, xcopy_cdb(len(stream)), stream)) == (0x5, 0x26, 0x09)


def test_copy_aborted_conditions() -> None:
    srv = make()
    lu0 = srv.luns[0]
    bad_index = params([cscd(lu0)], [b2b(0, 1, 4, 0, 8)])
    assert key_asc(run(srv, xcopy_cdb(len(bad_index)), bad_index)) == (0x0A, 0x0D, 0x02)
    stranger = LogicalUnit(MemoryStore(NB * BS), lun=5, serial="elsewhere")
    unknown = params([cscd(stranger)], [b2b(0, 0, 4, 0, 8)])
    assert key_asc(run(srv, xcopy_cdb(len(unknown)), unknown)) == (0x0A, 0x0D, 0x02)
    past_end = params([cscd(lu0)], [b2b(0, 0, 2048, 0, NB - 1)])
    res = run(srv, xcopy_cdb(len(past_end)), past_end)
    assert key_asc(res) == (0x0A, 0x00, 0x00)
    assert res.sense is not None and res.sense[15] & 0xA0 == 0xA0  # SKSV, SD: segment pointer
    failed = bytes(run(srv, rcr(xcopy.SA_FAILED_SEGMENT_DETAILS, 1)).data_in or b"")
    assert failed[56] == 0x02 and struct.unpack_from(">H", failed, 58)[0] == len(failed) - 60 > 0


def sanitize_cdb(sa: int, length: int = 0, immed: bool = False) -> bytes:
    return struct.pack(">BBxxxxxHx", 0x48, sa | (0x80 if immed else 0), length)


def test_sanitize_overwrite_and_in_progress_sense() -> None:
    async def main() -> None:
        srv = make()
        lu = srv.luns[0]
        lu.sanitize_rate = 256 * 1024  # slow enough to observe: 512 KiB takes 2 s
        data = bytes((0x01, 0, 0, 2)) + b"\xab\xcd"

        def t(cdb: bytes, d: bytes | None = None) -> ScsiTask:
            return ScsiTask(
                nexus=A, lun=0, cdb=cdb.ljust(16, b"\0"), data_out=d, expected_length=len(d or b"")
            )

        assert (await srv.execute(t(sanitize_cdb(1, len(data), immed=True), data))).good
        tur = await srv.execute(t(bytes(6)))
        assert tur.sense is not None and (tur.sense[2] & 0xF, tur.sense[12], tur.sense[13]) == (
            0x2,
            0x04,
            0x1B,
        )
        assert tur.sense[15] & 0x80  # progress indication valid
        sense = await srv.execute(t(bytes((0x03, 0, 0, 0, 252, 0))))
        assert sense.good and bytes(sense.data_in or b"")[12:14] == b"\x04\x1b"
        assert (await srv.execute(t(bytes((0x12, 0, 0, 0, 36, 0))))).good  # INQUIRY still allowed
        lu.sanitize_rate = 0
        assert lu.sanitize is not None and lu.sanitize.task is not None
        await lu.sanitize.task
        assert lu.sanitize is None
        r = await srv.execute(t(struct.pack(">BBQIBx", 0x88, 0, NB - 1, 1, 0)))
        assert bytes(r.data_in or b"") == b"\xab\xcd" * (BS // 2)

    asyncio.run(main())


def test_sanitize_parameter_checks() -> None:
    srv = make()
    for length in range(5):
        assert key_asc(run(srv, sanitize_cdb(1, length), bytes(length))) == (0x5, 0x24, 0x00)
    assert key_asc(run(srv, sanitize_cdb(1, BS + 5), bytes(BS + 5))) == (0x5, 0x24, 0x00)
    no_count = bytes((0, 0, 2, 0)) + bytes(BS)
    assert key_asc(run(srv, sanitize_cdb(1, len(no_count)), no_count))[1] == 0x26
    assert key_asc(run(srv, sanitize_cdb(0x1F, 8), bytes(8))) == (0x5, 0x24, 0x00)
    assert key_asc(run(srv, sanitize_cdb(0x1F))) == (0x5, 0x2C, 0x00)  # not in failure mode
    assert key_asc(run(srv, sanitize_cdb(0x02))) == (0x5, 0x24, 0x00)  # BLOCK ERASE: thin LUs only
    assert key_asc(run(srv, sanitize_cdb(0x03))) == (0x5, 0x24, 0x00)  # no CRYPTOGRAPHIC ERASE
    assert key_asc(run(srv, sanitize_cdb(0x01)[:1] + b"\x41" + bytes(8))) == (0x5, 0x24, 0x00)  # reserved


def test_sanitize_block_erase_on_thin_lu_reads_zero() -> None:
    srv = make(thin=True)
    wr(srv, 0, 0, b"q" * 4 * BS)
    assert run(srv, sanitize_cdb(0x02)).good
    assert rd(srv, 0, 0, 4) == bytes(4 * BS)


def test_sanitize_auto_pace_runs_at_store_speed_and_lets_other_lus_work() -> None:
    """Default sanitize_rate (None): a 64 MiB OVERWRITE takes well under the 4 s the old fixed 16 MiB/s
    took, and commands to another LU of the same device server are answered while it runs."""

    async def main() -> None:
        big = 64 << 20
        lus = {
            0: LogicalUnit(MemoryStore(big, block_size=BS), lun=0),
            1: LogicalUnit(MemoryStore(NB * BS, block_size=BS), lun=1),
        }
        srv = DeviceServer(lus, target_name=TARGET)
        assert lus[0].sanitize_rate is None
        data = bytes((0x01, 0, 0, 2)) + b"\x5a\xa5"
        task = ScsiTask(nexus=A, lun=0, cdb=sanitize_cdb(1, len(data)).ljust(16, b"\0"), data_out=data)
        loop = asyncio.get_running_loop()
        started = loop.time()
        running = asyncio.ensure_future(srv.execute(task))
        answered = 0
        while not running.done():  # TEST UNIT READY on the other LU keeps being answered
            other = ScsiTask(nexus=A, lun=1, cdb=bytes(16))
            assert (await srv.execute(other)).good
            answered += 1
            await asyncio.sleep(0)
        assert running.result().good
        assert loop.time() - started < 3.5 and answered > 1
        r = await srv.execute(ScsiTask(nexus=A, lun=0, cdb=struct.pack(">BBQIBx", 0x88, 0, 12345, 1, 0)))
        assert bytes(r.data_in or b"") == b"\x5a\xa5" * (BS // 2)

    asyncio.run(main())


def test_sanitize_rate_config_reaches_the_lu() -> None:
    import pytest

    from cistern.config.lun import LunConfig

    assert LunConfig(lun=0, backend="memory", size=1 << 20, sanitize_rate="64M").sanitize_rate == 64 << 20
    assert LunConfig(lun=0, backend="memory", size=1 << 20).sanitize_rate is None
    for bad in (0, -1, "fast"):
        with pytest.raises(ValueError):
            LunConfig(lun=0, backend="memory", size=1 << 20, sanitize_rate=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LogicalUnit(MemoryStore(NB * BS), lun=0, sanitize_rate=-1)
    assert LogicalUnit(MemoryStore(NB * BS), lun=0, sanitize_rate=1 << 20).sanitize_rate == 1 << 20
