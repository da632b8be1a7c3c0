"""Live changes of every LUN kind in process (control/units.py): tape libraries added and removed whole
(a drive the changer maps is refused naming both), RAID and SES LUNs, memory growth, replacing a LUN over
its open store, and a block LUN rescan.  The SCSI side (what initiators see) is in
tests/integration/test_admin_units.py (real peers)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cistern.config.model import parse_config
from cistern.control.live import AdminError, Controller
from cistern.scsi.changer import ChangerUnit
from cistern.scsi.lu import LogicalUnit
from cistern.scsi.ses import EnclosureUnit
from cistern.scsi.tape import TapeUnit
from cistern.storage.tape.library import LOCK_FILE
from cistern.target.server import build_server

IQN = "iqn.2026-11.org.cistern.test:units"
MiB = 1 << 20


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(tmp_path: Path, luns: list[dict[str, Any]], body: Callable[[Controller], Awaitable[None]]) -> None:
    data = {"targets": [{"name": IQN, "portals": [f"127.0.0.1:{_port()}"], "open": True, "luns": luns}]}

    async def scenario() -> None:
        config = parse_config(data, check_paths=True)
        server = build_server(config)
        await server.start()
        controller = Controller(server, config)
        try:
            await body(controller)
            await controller.wait_drained()
        finally:
            await server.stop()

    asyncio.run(scenario())


def _locked(path: Path) -> bool:
    """True while some open file description holds an flock on ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_tape_library_comes_and_goes_whole(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    disk = {"lun": 0, "backend": "memory", "size": "1M"}
    changer = {"lun": 1, "backend": "changer", "library": str(library), "slots": 4, "cartridges": 3,
               "cartridge_size": "4M"}
    drives = [{"lun": n, "backend": "tape"} for n in (2, 3)]

    async def body(c: Controller) -> None:
        report = await c.lun_add(IQN, changer)  # a changer alone: it needs a drive
        raise AssertionError(f"a changer without drives was added: {report}")

    with pytest.raises(AdminError) as info:
        _run(tmp_path, [disk], body)
    assert info.value.obj.startswith(f"target {IQN}"), info.value.issues

    async def whole(c: Controller) -> None:
        device = c.server.targets[IQN].device
        data = c.config.dump()
        data["targets"][0]["luns"] += [changer, *drives]
        report = await c.restore(data)
        assert [ch.action for ch in report.applied] == ["add", "add", "add"]
        assert isinstance(device.luns[1], ChangerUnit) and device.luns[1].drives == [device.luns[2], device.luns[3]]
        assert all(isinstance(device.luns[n], TapeUnit) for n in (2, 3))
        assert _locked(library / LOCK_FILE)  # the changer holds the library lock
        # removing one drive of a changer that stays: refused, naming the drive and the changer
        with pytest.raises(AdminError) as refused:
            await c.lun_remove(IQN, 3)
        assert refused.value.obj == f"target {IQN} LUN 3", refused.value.issues
        assert "drive 2 of medium changer LUN 1" in refused.value.issues[0], refused.value.issues
        assert "LUN 2" in refused.value.issues[0]
        # adding a drive to it: refused the same way
        with pytest.raises(AdminError) as refused:
            await c.lun_add(IQN, {"lun": 4, "backend": "tape"})
        assert "medium changer LUN 1 has a fixed set of drives (LUN 2, LUN 3)" in refused.value.issues[0]
        assert sorted(device.luns) == [0, 1, 2, 3]
        # the changer with its drives: removed live, library unlocked once drained
        data = c.config.dump()
        data["targets"][0]["luns"] = [disk]
        report = await c.restore(data)
        assert sorted(ch.lun for ch in report.applied if ch.lun is not None) == [1, 2, 3]
        await c.wait_drained()
        assert sorted(device.luns) == [0] and not _locked(library / LOCK_FILE)
        # a standalone drive (its own library and cartridge) comes and goes alone
        standalone = {"lun": 5, "backend": "tape", "library": str(tmp_path / "lib2"), "cartridge": "SOLO01",
                      "cartridge_size": "2M"}
        (tmp_path / "lib2").mkdir()
        await c.lun_add(IQN, standalone)
        assert isinstance(device.luns[5], TapeUnit) and device.luns[5].barcode == "SOLO01"
        await c.lun_remove(IQN, 5)
        await c.wait_drained()
        assert not _locked(tmp_path / "lib2" / LOCK_FILE)

    _run(tmp_path, [disk], whole)


def test_raid_and_ses_luns_live(tmp_path: Path) -> None:
    members = [str(tmp_path / f"m{i}.img") for i in range(2)]
    raid = {"lun": 1, "backend": "raid", "raid": {"level": 1, "members": members, "member_size": "4M",
                                                    "bitmap": False}}

    async def body(c: Controller) -> None:
        device = c.server.targets[IQN].device
        await c.lun_add(IQN, {"lun": 2, "backend": "ses"})
        ses = device.luns[2]
        assert isinstance(ses, EnclosureUnit) and ses.arrays == []
        await c.lun_add(IQN, raid)
        assert [label for label, _ in ses.arrays] == ["lun1"]
        assert all(_locked(Path(m)) for m in members)
        store = device.luns[1].store  # type: ignore[attr-defined]
        assert store in c.server.stores
        # new inquiry strings: the unit is rebuilt over the same open array, which reports to it alone
        data = c.config.dump()
        next(lun for lun in data["targets"][0]["luns"] if lun["lun"] == 1)["product"] = "mirror"
        report = await c.restore(data)
        assert [(ch.action, ch.lun) for ch in report.applied] == [("replace", 1)]
        await c.wait_drained()
        assert device.luns[1].store is store and len(store.listeners) == 1  # type: ignore[attr-defined]
        assert [s for s in c.server.stores if s is store] == [store]
        await c.lun_remove(IQN, 1)
        assert ses.arrays == []
        await c.wait_drained()
        assert not any(_locked(Path(m)) for m in members)
        assert store not in c.server.stores

    _run(tmp_path, [{"lun": 0, "backend": "memory", "size": "1M"}], body)


def test_memory_grow_replace_over_open_store_and_rescan(tmp_path: Path) -> None:
    block = tmp_path / "dev.img"
    block.write_bytes(b"\0" * MiB)
    luns = [
        {"lun": 0, "backend": "memory", "size": "1M"},
        {"lun": 1, "backend": "file", "path": str(tmp_path / "f.img"), "size": "1M"},
        {"lun": 2, "backend": "file", "path": str(block)},  # no size: the file's (a loop device: integration)
    ]

    async def body(c: Controller) -> None:
        device = c.server.targets[IQN].device
        mem = device.luns[0]
        assert isinstance(mem, LogicalUnit)
        await mem.store.write(4096, b"kept")
        await c.lun_resize(IQN, 0, "3M")
        assert mem.num_blocks * mem.block_size == 3 * MiB
        assert bytes(await mem.store.read(4096, 4)) == b"kept"
        await mem.store.write(3 * MiB - 4, b"tail")
        with pytest.raises(AdminError) as refused:
            await c.lun_resize(IQN, 0, "2M")
        assert "shrinking" in refused.value.cause
        # a replace that keeps the store (vendor changed): the data stays, the store is not reopened
        data = c.config.dump()
        data["targets"][0]["luns"][0]["vendor"] = "NEWVEND"
        data["targets"][0]["luns"][1]["product"] = "renamed"
        report = await c.restore(data)
        assert {ch.action for ch in report.applied} == {"replace"}
        await c.wait_drained()
        new_mem, new_file = device.luns[0], device.luns[1]
        assert isinstance(new_mem, LogicalUnit) and new_mem is not mem and new_mem.store is mem.store
        assert new_mem.vendor.strip() == b"NEWVEND" and bytes(await new_mem.store.read(4096, 4)) == b"kept"
        assert isinstance(new_file, LogicalUnit)
        await new_file.store.write(0, b"still open")
        # a replace that would reopen the same file: refused with the way to do it live
        data["targets"][0]["luns"][1]["read_only"] = True
        with pytest.raises(AdminError) as refused:
            await c.restore(data)
        assert "remove LUN 1, then add it back" in refused.value.issues[0], refused.value.issues
        # the file grew underneath: a rescan serves the new size
        disk = device.luns[2]
        assert isinstance(disk, LogicalUnit)
        assert (await c.rescan(IQN, 2)).applied == []
        with open(block, "r+b") as handle:
            handle.truncate(2 * MiB)
        report = await c.rescan(IQN, 2)
        assert report.applied[0].action == "resize"
        assert disk.num_blocks * disk.block_size == 2 * MiB
        with open(block, "r+b") as handle:
            handle.truncate(MiB)
        with pytest.raises(AdminError) as refused:
            await c.rescan(IQN, 2)
        assert "less than the" in refused.value.cause
        with pytest.raises(AdminError) as refused:
            await c.rescan(IQN, 0)
        assert refused.value.status == 409

    _run(tmp_path, luns, body)


def test_rebuilt_target_keeps_its_open_stores(tmp_path: Path) -> None:
    """A target rebuilt live (ALUA mode changed) takes its LUNs' open stores over: the file stays locked
    by this process only once, the memory LUN keeps its data; a tape library refuses, naming the way."""
    luns = [
        {"lun": 0, "backend": "memory", "size": "1M"},
        {"lun": 1, "backend": "file", "path": str(tmp_path / "f.img"), "size": "1M"},
    ]

    async def body(c: Controller) -> None:
        old = c.server.targets[IQN].device
        mem, disk = old.luns[0], old.luns[1]
        assert isinstance(mem, LogicalUnit) and isinstance(disk, LogicalUnit)
        await mem.store.write(0, b"survives")
        data = c.config.dump()
        data["targets"][0]["alua"] = "explicit"
        report = await c.restore(data)
        assert [ch.action for ch in report.applied] == ["replace"]
        await c.wait_drained()
        new = c.server.targets[IQN].device
        assert new is not old
        assert new.luns[0].store is mem.store and new.luns[1].store is disk.store  # type: ignore[attr-defined]
        assert bytes(await mem.store.read(0, 8)) == b"survives"
        await disk.store.write(0, b"open")  # not closed by the drain of the old units
        assert [s for s in c.server.stores if s is disk.store] == [disk.store]
        library = tmp_path / "lib"
        library.mkdir()
        data = c.config.dump()
        data["targets"][0]["luns"].append(
            {"lun": 2, "backend": "tape", "library": str(library), "cartridge": "T1", "cartridge_size": "1M"}
        )
        await c.restore(data)
        data = c.config.dump()
        data["targets"][0]["alua"] = "implicit"
        with pytest.raises(AdminError) as refused:
            await c.restore(data)
        assert refused.value.obj == f"target {IQN}", refused.value.issues
        assert "remove the target and add it back" in refused.value.issues[0]

    _run(tmp_path, luns, body)


def test_dump_of_a_tape_library_loads_again(tmp_path: Path) -> None:
    """``config save`` of a target with a changer and drives: the file loads and dumps to the same bytes
    (the disk-only defaults such as block_size = 512 are not written for tape LUNs)."""
    from cistern.config.model import config_text, load_config

    data = {
        "targets": [
            {
                "name": IQN,
                "portals": ["127.0.0.1:3260"],
                "open": True,
                "luns": [
                    {"lun": 0, "backend": "changer", "library": str(tmp_path / "lib")},
                    {"lun": 1, "backend": "tape"},
                ],
            }
        ]
    }
    text = config_text(parse_config(data))
    assert "block_size" not in text
    path = tmp_path / "saved.toml"
    path.write_text(text)
    assert config_text(load_config(path)) == text
