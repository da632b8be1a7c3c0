"""Reservations against a real ``cistern serve`` process (issue 3, must show 4).

1. libiscsi's reservation suites (``iscsi-test-cu -d -S``) on a file LUN whose ACL admits both of its
   initiator names: every test passes (tgt 1.0.85 fails PrinServiceactionRange.Range,
   ProutReserve.Ownership{EA,WE,EARO,WERO} and Reserve6.2Initiators).
2. APTPL: keys and a reservation registered with APTPL=1 survive a restart of the target process; with
   APTPL=0 they do not.  Driven with cistern's own initiator (raw PERSISTENT RESERVE CDBs).
3. Conflicts across two initiators through the network: EXCLUSIVE ACCESS blocks the other initiator's
   READ with RESERVATION CONFLICT; an SPC-2 RESERVE blocks it too and goes away with its session.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget, lun_toml, target_toml

from cistern.initiator import connect

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:reservations"
FIRST_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
SECOND_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
INIT_A = "iqn.2026-11.org.cistern:pr-a"
INIT_B = "iqn.2026-11.org.cistern:pr-b"
ISID_A = bytes.fromhex("80123456789a")
SUITES = [
    "PrinReadKeys",
    "PrinServiceactionRange",
    "PrinReportCapabilities",
    "ProutRegister",
    "ProutReserve",
    "ProutClear",
    "ProutPreempt",
    "Reserve6",
]
EXCLUSIVE_ACCESS = 3
GOOD, RESERVATION_CONFLICT = 0x00, 0x18


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CisternTarget]:
    work = tmp_path_factory.mktemp("reservations")
    port = peers.free_port()
    luns = lun_toml(0, "file", path=work / "disk.img", size="64M")
    cfg = target_toml(IQN, port, luns, acl=[FIRST_INITIATOR, SECOND_INITIATOR, INIT_A, INIT_B])
    with CisternTarget(cfg, work, work / "cistern.log", port=port) as t:
        yield t


@pytest.mark.parametrize("suite", SUITES)
def test_libiscsi_reservation_suite(target: CisternTarget, suite: str, artifacts_dir: Path) -> None:
    run = peers.run_iscsi_test_cu(
        target.url(IQN),
        tests=f"ALL.{suite}",
        stall_timeout=60,
        total_timeout=300,
        initiator_name=FIRST_INITIATOR,
        initiator_name_2=SECOND_INITIATOR,
        artifact_path=artifacts_dir / f"iscsi-test-cu-{suite}.txt",
    )
    assert not run.stalled and not run.timed_out, f"stalled in {run.unfinished_test}"
    assert run.results, run.output[-2000:]
    assert all(name.startswith(f"{suite}.") for name in run.results)
    assert run.counts()["FAIL"] == 0 and run.counts()["SKIP"] == 0, run.report()


# ---------------------------------------------------------------------------------------------- helpers


def prout(sa: int, key: int, sark: int, type_: int = 0, flags: int = 0) -> tuple[bytes, bytes]:
    params = struct.pack(">QQ4xB3x", key, sark, flags)
    return struct.pack(">BBB2xIx", 0x5F, sa, type_, len(params)), params


def prin(sa: int, alloc: int = 1024) -> bytes:
    return struct.pack(">BB5xHx", 0x5E, sa, alloc)


READ10 = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0)


async def _execute(
    session: object, cdb: bytes, data: bytes | None = None, read: int = 0
) -> tuple[int, bytes]:
    res = await session.execute(0, cdb, data, read, check=False, timeout=10)  # type: ignore[attr-defined]
    return res.status, bytes(res.data)


async def _session(target: CisternTarget, name: str, isid: bytes | None = None) -> object:
    kwargs: dict[str, object] = {"initiator_name": name}
    if isid is not None:
        kwargs["isid"] = isid
    session = await connect(target.url(IQN), **kwargs)
    await _execute(session, bytes(6))  # TEST UNIT READY: consume the power-on unit attention
    return session


async def _state(session: object) -> tuple[list[int], tuple[int, int] | None, int]:
    """(keys, (reservation key, type) or None, REPORT CAPABILITIES byte 3)."""
    status, keys = await _execute(session, prin(0), read=1024)
    assert status == GOOD
    (n,) = struct.unpack_from(">I", keys, 4)
    key_list = [struct.unpack_from(">Q", keys, 8 + i)[0] for i in range(0, n, 8)]
    status, rr = await _execute(session, prin(1), read=1024)
    assert status == GOOD
    reservation = None
    if struct.unpack_from(">I", rr, 4)[0]:
        reservation = (struct.unpack_from(">Q", rr, 8)[0], rr[21] & 0x0F)
    status, caps = await _execute(session, prin(2), read=8)
    assert status == GOOD
    return key_list, reservation, caps[3]


async def _close(*sessions: object) -> None:
    for s in sessions:
        await s.logout()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- APTPL


def test_aptpl_survives_target_restart(tmp_path: Path) -> None:
    port = peers.free_port()
    disk = tmp_path / "disk.img"
    cfg = target_toml(IQN, port, lun_toml(0, "file", path=disk, size="16M"), acl=[INIT_A, INIT_B])
    t = CisternTarget(cfg, tmp_path, tmp_path / "cistern.log", port=port)

    async def before() -> None:
        a = await _session(t, INIT_A, ISID_A)
        b = await _session(t, INIT_B)
        assert (await _execute(a, *prout(0, 0, 0xA1, flags=0x01)))[0] == GOOD  # REGISTER, APTPL=1
        assert (await _execute(b, *prout(0, 0, 0xB2, flags=0x01)))[0] == GOOD
        assert (await _execute(a, *prout(1, 0xA1, 0, EXCLUSIVE_ACCESS)))[0] == GOOD
        keys, reservation, caps3 = await _state(a)
        assert keys == [0xA1, 0xB2] and reservation == (0xA1, EXCLUSIVE_ACCESS) and caps3 & 0x01
        await _close(a, b)

    async def after() -> None:
        b = await _session(t, INIT_B)
        keys, reservation, caps3 = await _state(b)
        assert keys == [0xA1, 0xB2], keys
        assert reservation == (0xA1, EXCLUSIVE_ACCESS)
        assert caps3 & 0x01  # PTPL_A: persist through power loss is active
        assert (await _execute(b, READ10, read=512))[0] == RESERVATION_CONFLICT
        a = await _session(t, INIT_A, ISID_A)  # the same initiator port is still the holder
        assert (await _execute(a, READ10, read=512))[0] == GOOD
        # clean up: REGISTER with APTPL=0 turns persistence off, CLEAR drops everything
        assert (await _execute(a, *prout(0, 0xA1, 0xA1)))[0] == GOOD
        assert (await _execute(a, *prout(3, 0xA1, 0)))[0] == GOOD
        await _close(a, b)

    async def after_aptpl_off() -> None:
        b = await _session(t, INIT_B)
        assert await _state(b) == ([], None, 0xA0)
        await _close(b)

    with t:
        asyncio.run(before())
    assert (Path(f"{disk}.pr.json")).exists()
    t.start()
    try:
        asyncio.run(after())
    finally:
        t.stop()
    assert not Path(f"{disk}.pr.json").exists()
    with t:
        asyncio.run(after_aptpl_off())


def test_aptpl_zero_is_lost_on_restart(tmp_path: Path) -> None:
    port = peers.free_port()
    cfg = target_toml(IQN, port, lun_toml(0, "file", path=tmp_path / "d.img", size="16M"), acl=[INIT_A])
    t = CisternTarget(cfg, tmp_path, tmp_path / "cistern.log", port=port)

    async def register() -> None:
        a = await _session(t, INIT_A, ISID_A)
        assert (await _execute(a, *prout(0, 0, 0xA1)))[0] == GOOD
        assert (await _execute(a, *prout(1, 0xA1, 0, EXCLUSIVE_ACCESS)))[0] == GOOD
        await _close(a)

    async def check() -> None:
        a = await _session(t, INIT_A, ISID_A)
        assert await _state(a) == ([], None, 0xA0)
        await _close(a)

    with t:
        asyncio.run(register())
    with t:
        asyncio.run(check())


# ---------------------------------------------------------------------------------------------- conflicts


def test_conflicts_across_two_initiators(target: CisternTarget) -> None:
    async def go() -> None:
        a = await _session(target, INIT_A)
        b = await _session(target, INIT_B)
        try:
            assert (await _execute(a, *prout(6, 0, 0xA1)))[0] == GOOD
            assert (await _execute(a, *prout(1, 0xA1, 0, EXCLUSIVE_ACCESS)))[0] == GOOD
            assert (await _execute(b, READ10, read=512))[0] == RESERVATION_CONFLICT
            assert (await _execute(a, READ10, read=512))[0] == GOOD
            assert (await _execute(b, bytes(6)))[0] == GOOD  # TEST UNIT READY is always allowed
            assert (await _execute(a, *prout(3, 0xA1, 0)))[0] == GOOD  # CLEAR
            assert (await _execute(b, READ10, read=512))[0] == GOOD
            # SPC-2 RESERVE(6): the other initiator conflicts until the holder's session ends
            assert (await _execute(a, bytes((0x16, 0, 0, 0, 0, 0))))[0] == GOOD
            assert (await _execute(b, READ10, read=512))[0] == RESERVATION_CONFLICT
            assert (await _execute(b, prin(0), read=1024))[0] == RESERVATION_CONFLICT
        finally:
            await _close(a)
        for _ in range(50):  # the logout ends the I_T nexus, which releases the SPC-2 reservation
            status, _data = await _execute(b, READ10, read=512)
            if status == GOOD:
                break
            await asyncio.sleep(0.1)
        assert status == GOOD
        await _close(b)

    asyncio.run(go())
