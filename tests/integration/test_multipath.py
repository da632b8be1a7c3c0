"""One LU through two portals in two target portal groups (issue 3, ALUA and multipath).

A ``cistern serve`` process serves one target with ``[[targets.portal_groups]]`` tag 1 (active/optimized,
preferred) and tag 2 (active/non-optimized), explicit and implicit ALUA.  Checked against real peers:
SendTargets and the login's TargetPortGroupTag per portal, the same LU identity and per-port designators in
VPD 0x83, REPORT/SET TARGET PORT GROUPS with the unit attention and the standby refusal seen by another
path, libiscsi 1.19's MultipathIO suite with the second portal as MULTIPATH-URL, and its Inquiry suite
through each path.  (libiscsi 1.19's test-tool has no ALUA-specific test: no test reads TPGS or issues
REPORT TARGET PORT GROUPS.)
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

from cistern.initiator import connect, discover
from cistern.initiator.client import IscsiSession, make_config
from cistern.initiator.login import login

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:multipath"
INITIATOR_1 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
INITIATOR_2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
OURS_1 = "iqn.2026-11.org.cistern:mp-host-a"
OURS_2 = "iqn.2026-11.org.cistern:mp-host-b"


def multipath_toml(port1: int, port2: int, image: Path) -> str:
    return f"""
[[targets]]
name = "{IQN}"
open = true
alua = "both"

[[targets.portal_groups]]
tag = 1
portals = ["127.0.0.1:{port1}"]
alua_state = "active/optimized"
preferred = true

[[targets.portal_groups]]
tag = 2
portals = ["127.0.0.1:{port2}"]
alua_state = "active/non-optimized"

[[targets.luns]]
lun = 0
backend = "file"
path = "{image}"
size = "64M"
"""


class TwoPortals:
    def __init__(self, target: CisternTarget, port2: int) -> None:
        self.target = target
        self.port1 = target.port
        self.port2 = port2

    def url(self, path: int) -> str:
        port = self.port1 if path == 1 else self.port2
        return f"iscsi://127.0.0.1:{port}/{IQN}/0"


@pytest.fixture(scope="module")
def two_portals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoPortals]:
    work = tmp_path_factory.mktemp("multipath")
    port1, port2 = peers.free_port(), peers.free_port()
    while port2 == port1:
        port2 = peers.free_port()
    cfg = multipath_toml(port1, port2, work / "lun0.img")
    with CisternTarget(cfg, work, work / "cistern.log", port=port1) as target:
        peers.wait_port("127.0.0.1", port2)
        yield TwoPortals(target, port2)


# -- helpers over cistern's own initiator (raw CDBs, sense checked by the test) -------------------------


def inquiry_cdb(evpd: int = 0, page: int = 0, alloc: int = 1024) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def rtpg_cdb(alloc: int = 1024) -> bytes:
    return struct.pack(">BB4xIxB", 0xA3, 0x0A, alloc, 0)


def stpg_cdb(length: int) -> bytes:
    return struct.pack(">BB4xIxB", 0xA4, 0x0A, length, 0)


TUR = bytes(6)
READ10 = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0)


def designators(page: bytes) -> dict[int, bytes]:
    """VPD 0x83 designators keyed by byte 1 (PIV/ASSOCIATION/DESIGNATOR TYPE)."""
    out, pos = {}, 4
    while pos + 4 <= len(page):
        length = page[pos + 3]
        out[page[pos + 1]] = page[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return out


def rtpg_states(data: bytes) -> dict[int, tuple[int, bool, list[int]]]:
    """{group: (state, PREF, relative ports)} from length-only RTPG data."""
    (length,) = struct.unpack_from(">I", data, 0)
    out, pos = {}, 4
    while pos < 4 + length:
        count = data[pos + 7]
        ports = [struct.unpack_from(">H", data, pos + 8 + 4 * i + 2)[0] for i in range(count)]
        out[struct.unpack_from(">H", data, pos + 2)[0]] = (data[pos] & 0x0F, bool(data[pos] & 0x80), ports)
        pos += 8 + 4 * count
    return out


async def _login_tag(port: int, name: str) -> int | None:
    config, _ = make_config(f"iscsi://127.0.0.1:{port}/{IQN}/0", initiator_name=name)
    protocol, result = await login(config, 0)
    session = IscsiSession(config, login, protocol, result)
    await session.logout()
    return result.target_portal_group_tag


def test_send_targets_lists_each_portal_with_its_tag(two_portals: TwoPortals) -> None:
    found = asyncio.run(discover(f"127.0.0.1:{two_portals.port2}", initiator_name=OURS_1))
    assert [t.name for t in found] == [IQN]
    assert found[0].portals == [f"127.0.0.1:{two_portals.port1},1", f"127.0.0.1:{two_portals.port2},2"]
    # libiscsi's view of the same answer
    out = peers.run(["iscsi-ls", "-s", f"iscsi://127.0.0.1:{two_portals.port1}"], timeout=30).stdout
    assert f"127.0.0.1:{two_portals.port2},2" in out


def test_login_answers_the_tag_of_its_portal(two_portals: TwoPortals) -> None:
    assert asyncio.run(_login_tag(two_portals.port1, OURS_1)) == 1
    assert asyncio.run(_login_tag(two_portals.port2, OURS_1)) == 2


def test_same_lu_identity_and_per_port_designators(two_portals: TwoPortals) -> None:
    async def through(path: int) -> tuple[bytes, dict[int, bytes], dict[int, tuple[int, bool, list[int]]]]:
        async with await connect(two_portals.url(path), initiator_name=OURS_1) as s:
            std = bytes((await s.execute(0, inquiry_cdb(), read_length=1024)).data)
            vpd = bytes((await s.execute(0, inquiry_cdb(1, 0x83), read_length=1024)).data)
            rtpg = bytes((await s.execute(0, rtpg_cdb(), read_length=1024)).data)
        return std, designators(vpd), rtpg_states(rtpg)

    std1, ids1, groups1 = asyncio.run(through(1))
    std2, ids2, groups2 = asyncio.run(through(2))
    assert std1[5] & 0x30 == 0x30 and std2[5] & 0x30 == 0x30  # TPGS: implicit and explicit
    assert ids1[0x03] == ids2[0x03] and len(ids1[0x03]) in (8, 16)  # NAA, association LU
    assert ids1[0x94] == b"\0\0\0\x01" and ids2[0x94] == b"\0\0\0\x02"  # relative target port
    assert ids1[0x95] == b"\0\0\0\x01" and ids2[0x95] == b"\0\0\0\x02"  # target port group
    assert ids2[0x98].rstrip(b"\0") == f"{IQN},t,0x0002".encode()
    expected = {1: (0x0, True, [1]), 2: (0x1, False, [2])}
    assert groups1 == expected and groups2 == expected
    # libiscsi's own INQUIRY tool sees one device identity through both portals
    inq = [
        peers.run(["iscsi-inq", "-e", "1", "-c", "131", two_portals.url(p)], timeout=30).stdout
        for p in (1, 2)
    ]
    blocks = [text.split("DEVICE DESIGNATOR #")[1:] for text in inq]
    lu_ids = [sorted(b.split("\n", 1)[1] for b in found if "LOGICAL_UNIT" in b) for found in blocks]
    assert any("(3) NAA" in b for b in lu_ids[0]) and lu_ids[0] == lu_ids[1]
    assert any(",t,0x0001]" in b for b in blocks[0]) and any(",t,0x0002]" in b for b in blocks[1])


def test_stpg_standby_refuses_io_and_other_path_sees_the_change(two_portals: TwoPortals) -> None:
    async def scenario() -> None:
        async with (
            await connect(two_portals.url(1), initiator_name=OURS_1) as a,
            await connect(two_portals.url(2), initiator_name=OURS_2) as b,
        ):
            for s in (a, b):  # consume the login's POWER ON unit attention
                await s.execute(0, TUR, check=False)
                await s.execute(0, TUR, check=False)
            standby = bytes(4) + struct.pack(">BxH", 0x2, 2)
            res = await b.execute(0, stpg_cdb(len(standby)), data_out=standby, check=False)
            assert res.status == 0
            refused = await b.execute(0, READ10, read_length=512, check=False)
            assert refused.status == 2 and refused.sense is not None
            assert (refused.sense.key, refused.sense.asc, refused.sense.ascq) == (0x2, 0x04, 0x0B)
            ua = await a.execute(0, TUR, check=False)
            assert ua.status == 2 and ua.sense is not None
            assert (ua.sense.key, ua.sense.asc, ua.sense.ascq) == (0x6, 0x2A, 0x06)
            assert (await a.execute(0, READ10, read_length=512, check=False)).status == 0
            groups = rtpg_states(bytes((await b.execute(0, rtpg_cdb(), read_length=1024)).data))
            assert groups[2][0] == 0x2
            # back to active/non-optimized, asked through the standby path itself
            back = bytes(4) + struct.pack(">BxH", 0x1, 2)
            assert (await b.execute(0, stpg_cdb(len(back)), data_out=back, check=False)).status == 0
            assert (await b.execute(0, READ10, read_length=512, check=False)).status == 0

    asyncio.run(scenario())


def _check_run(run: peers.CunitRun, min_tests: int) -> None:
    assert not run.stalled and not run.timed_out, f"iscsi-test-cu stalled in {run.unfinished_test}"
    assert len(run.results) >= min_tests, run.report()
    failed = run.names("FAIL")
    assert not failed, f"failing tests: {failed}\n{run.report()}"


def test_libiscsi_multipathio_suite(two_portals: TwoPortals, artifacts_dir: Path) -> None:
    run = peers.run_iscsi_test_cu(
        two_portals.url(1),
        tests="ALL.MultipathIO",
        multipath_url=two_portals.url(2),
        initiator_name=INITIATOR_1,
        initiator_name_2=INITIATOR_2,
        stall_timeout=60,
        total_timeout=300,
        artifact_path=artifacts_dir / "iscsi-test-cu-MultipathIO.txt",
    )
    _check_run(run, 4)
    assert run.results.get("MultipathIO.Simple") == "PASS"
    assert run.results.get("MultipathIO.Reset") == "PASS"


@pytest.mark.parametrize("path", [1, 2])
def test_libiscsi_inquiry_suite_through_each_path(
    two_portals: TwoPortals, artifacts_dir: Path, path: int
) -> None:
    run = peers.run_iscsi_test_cu(
        two_portals.url(path),
        tests="ALL.Inquiry",
        multipath_url=two_portals.url(2 if path == 1 else 1),
        initiator_name=INITIATOR_1,
        initiator_name_2=INITIATOR_2,
        stall_timeout=60,
        total_timeout=300,
        artifact_path=artifacts_dir / f"iscsi-test-cu-Inquiry-path{path}.txt",
    )
    _check_run(run, 5)
