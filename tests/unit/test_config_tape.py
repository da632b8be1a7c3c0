"""Config for tape and changer LUNs (config/tape.py), the examples/tape.toml file, the LUs the target
builds from it (target/tape_luns.py) and the ``cistern tape`` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cistern.cli.main import cli
from cistern.config import ConfigError, load_config, parse_config
from cistern.scsi.changer import ChangerUnit
from cistern.scsi.tape import TapeUnit
from cistern.storage.tape import LibraryLocked, lock_library
from cistern.target.tape_luns import build_tape_luns, close_now

T = "iqn.2026-11.org.cistern:vtl"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tape.toml"


def config(luns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"targets": [{"name": T, "open": True, "luns": luns}]}


CHANGER = {"lun": 0, "backend": "changer", "library": "/tmp/lib"}
DRIVE = {"lun": 1, "backend": "tape"}


def issues(luns: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(config(luns))
    return [str(i) for i in info.value.issues]


def test_valid_library_and_standalone_drive() -> None:
    cfg = parse_config(config([CHANGER, DRIVE, {"lun": 2, "backend": "tape"}]))
    assert [lun.backend for lun in cfg.targets[0].luns] == ["changer", "tape", "tape"]
    alone = parse_config(config([{"lun": 0, "backend": "tape", "library": "/tmp/l", "cartridge": "ABC123"}]))
    assert alone.targets[0].luns[0].cartridge == "ABC123"


@pytest.mark.parametrize(
    ("luns", "expected"),
    [
        (
            [{"lun": 0, "backend": "changer"}, DRIVE],
            "targets[0].luns[0].library: a changer LUN needs library",
        ),
        ([CHANGER, {**DRIVE, "size": "1G"}], "targets[0].luns[1].size: a tape LUN has no size"),
        ([CHANGER, {**DRIVE, "slots": 4}], "targets[0].luns[1].slots: slots belongs on the changer LUN"),
        (
            [CHANGER, {**CHANGER, "lun": 2}, DRIVE],
            "targets[0].luns[1].backend: a target has at most one changer",
        ),
        ([CHANGER], "targets[0].luns[0]: a changer needs at least one tape LUN"),
        (
            [{"lun": 0, "backend": "tape", "library": "/x"}],
            "targets[0].luns[0].cartridge: a tape LUN without a changer",
        ),
        ([{"lun": 0, "backend": "tape"}], "targets[0].luns[0].library: a tape LUN without a changer"),
        (
            [CHANGER, {**DRIVE, "cartridge": "AB1"}],
            "targets[0].luns[1].cartridge: the changer loads this drive",
        ),
        (
            [CHANGER, {**DRIVE, "library": "/other"}],
            "targets[0].luns[1].library: a drive of this target's changer",
        ),
        ([{**CHANGER, "slots": 2, "import_export": 0, "cartridges": 3}, DRIVE], "do not fit in 2 slots"),
        ([{**CHANGER, "barcode_prefix": "toolong"}, DRIVE], "barcode_prefix must be 1..3 characters"),
        ([{**CHANGER, "cartridge_size": "100K"}, DRIVE], "cartridge_size must be at least 1M"),
        ([{**CHANGER, "slots": 0}, DRIVE], "targets[0].luns[0].slots"),
        ([{**CHANGER, "read_only": True}, DRIVE], "a changer cannot be read_only"),
        (
            [{"lun": 0, "backend": "memory", "size": "1M", "library": "/x"}],
            "library is only for tape and changer",
        ),
        (
            [{"lun": 0, "backend": "tape", "library": "/x", "cartridge": "a-b"}],
            "a barcode is 1..32 characters",
        ),
    ],
)
def test_refused_with_a_clear_message(luns: list[dict[str, Any]], expected: str) -> None:
    found = issues(luns)
    assert any(expected in text for text in found), found


def test_example_file_checks_and_builds(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "tape.toml")
    result = CliRunner().invoke(cli, ["config", "check", str(tmp_path / "tape.toml")])
    assert result.exit_code == 0, result.output
    cfg = load_config(tmp_path / "tape.toml")
    target = cfg.targets[0]
    assert target.luns[0].library == tmp_path / "tape-library"  # relative to the file
    luns = build_tape_luns(target, lambda lun: f"serial-{lun}")
    try:
        assert isinstance(luns[0], ChangerUnit) and [d.lun for d in luns[0].drives] == [1, 2]
        assert sorted(os.listdir(tmp_path / "tape-library")) == [
            ".lock", *[f"CIS00{i}L6" for i in range(1, 9)], "library.json",
        ]  # fmt: skip
        with pytest.raises(LibraryLocked):  # a second server on the same library is refused
            build_tape_luns(target, lambda lun: f"serial-{lun}")
        changer = luns[0]
        loop = asyncio.new_event_loop()
        loop.run_until_complete(changer.move(("slot", 2), ("drive", 1)))
        loop.close()
    finally:
        for lu in luns.values():
            close_now(lu)
    again = build_tape_luns(target, lambda lun: f"serial-{lun}")  # restart: the cartridge is back
    try:
        drive = again[2]  # in its drive, unloaded until a LOAD (the host's position is stale)
        assert isinstance(drive, TapeUnit) and drive.barcode == "CIS003L6" and not drive.loaded
    finally:
        for lu in again.values():
            close_now(lu)


def test_standalone_drive_creates_its_cartridge(tmp_path: Path) -> None:
    cfg = parse_config(
        config([{"lun": 0, "backend": "tape", "library": str(tmp_path), "cartridge": "SOLO01"}])
    )
    luns = build_tape_luns(cfg.targets[0], str)
    try:
        drive = luns[0]
        assert isinstance(drive, TapeUnit) and drive.barcode == "SOLO01" and not drive.medium_present
    finally:
        close_now(luns[0])


def test_tape_cli_create_list_export_import(tmp_path: Path) -> None:
    run = CliRunner().invoke
    lib = str(tmp_path / "lib")
    r = run(cli, ["tape", "create", "-l", lib, "--count", "2", "-s", "4M"])
    assert r.exit_code == 0 and "created CIS001L6" in r.output
    r = run(cli, ["tape", "create", "-l", lib, "--worm", "ARCH01"])
    assert r.exit_code == 0
    r = run(cli, ["tape", "create", "-l", lib, "ARCH01"])
    assert r.exit_code == 1 and "already exists" in r.output
    r = run(cli, ["tape", "create", "-l", lib, "-s", "12Q", "X1"])
    assert r.exit_code == 1 and "--size" in r.output
    r = run(cli, ["tape", "export", "-l", lib, "CIS001L6"])
    assert r.exit_code == 1 and "no library.json" in r.output
    cfg = parse_config(config([{"lun": 0, "backend": "changer", "library": lib, "slots": 3}, DRIVE]))
    for lu in build_tape_luns(cfg.targets[0], str).values():  # first start: the library is laid out
        close_now(lu)
    r = run(cli, ["tape", "list", "-l", lib, "--json"])
    rows = {row["barcode"]: row for row in json.loads(r.output)}
    assert (
        rows["ARCH01"]["location"] == "slot 1"
        and rows["CIS002L6"]["location"] == "slot 3"
        and rows["ARCH01"]["worm"]
        and rows["CIS002L6"]["files"] == 0
    )
    r = run(cli, ["tape", "export", "-l", lib, "CIS002L6"])
    assert r.exit_code == 0 and "exported" in r.output
    r = run(cli, ["tape", "import", "-l", lib, "CIS002L6"])
    assert r.exit_code == 0 and "mailslot 1" in r.output
    fd = lock_library(lib)  # a running server holds the lock
    try:
        r = run(cli, ["tape", "export", "-l", lib, "CIS002L6"])
        assert r.exit_code == 1 and "in use by a running cistern server" in r.output
    finally:
        os.close(fd)
    r = run(cli, ["tape", "list", "-l", lib])
    assert r.exit_code == 0 and "CIS002L6" in r.output and "mailslot 1" in r.output


def test_demo_with_tape_library(tmp_path: Path) -> None:
    from cistern.cli.connect_help import connect_text
    from cistern.config.demo import DEMO_TAPE_TARGET, demo_config

    cfg = demo_config("127.0.0.1:3260", tmp_path, tape=True)
    tape = cfg.targets[1]
    assert tape.name == DEMO_TAPE_TARGET and [lun.backend for lun in tape.luns] == ["changer", "tape", "tape"]
    assert tape.luns[0].library == tmp_path / "tape-library" and tape.luns[0].cartridges == 8
    text = connect_text(cfg, [("127.0.0.1", 3260)])
    assert "mtx -f /dev/sch0 load 1 0" in text and "tar cvf /dev/nst0" in text
    assert f"iscsi-readcapacity16 iscsi://127.0.0.1:3260/{DEMO_TAPE_TARGET}" not in text
    assert len(demo_config("127.0.0.1:3260", tmp_path).targets) == 1
