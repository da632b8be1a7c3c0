"""The initiator CLI commands against tgt and against cistern's own target (``disk`` fixture): discover,
ls, inquiry, capacity, write/read/copy with verify, bench (short), and a clear error for a wrong CHAP
secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from targets_under_test import DiskUnderTest

from cistern.cli.initiator_cmds import register

pytestmark = pytest.mark.peers


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("cistern")
    register(group)
    return group


def invoke(cli: click.Group, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, terminal_width=200)
    assert result.exit_code == code, result.output
    return result.output


def test_cli_against_target(cli: click.Group, disk: DiskUnderTest, tmp_path: Path) -> None:
    url = disk.url
    assert f"{disk.iqn}  127.0.0.1:{disk.port}," in invoke(cli, "discover", f"127.0.0.1:{disk.port}")
    listing = invoke(cli, "ls", disk.portal_url)
    assert "disk" in listing and "64.0 MiB" in listing and disk.vendor in listing
    assert ("controller" in listing) == (disk.controller_lun is not None)
    inquiry = invoke(cli, "inquiry", url)
    assert f"vendor:   {disk.vendor}" in inquiry and disk.product in inquiry
    assert "blocks: 131072" in invoke(cli, "capacity", url)
    listed = json.loads(invoke(cli, "ls", "--json", disk.portal_url))
    luns = [lun for t in listed["targets"] for lun in t["luns"]]
    assert any(lun["size_bytes"] == 64 << 20 and lun["device_type_name"] == "disk" for lun in luns)
    assert all(lun["size_bytes"] is None for lun in luns if lun["device_type_name"] != "disk")
    supported = json.loads(invoke(cli, "inquiry", "--json", "--vpd", "supported", url))["fields"]
    assert "0x80" in supported["supported_pages"] and "0x83" in supported["supported_pages"]
    ident = json.loads(invoke(cli, "inquiry", "--json", "--vpd", "device-id", url))["fields"]["designators"]
    assert ident and all({"type", "association", "code_set", "value"} <= set(d) for d in ident)

    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3 << 20))
    assert "verify: OK" in invoke(cli, "write", str(src), url, "--dest-offset", "1M", "--verify")
    dst = tmp_path / "out.bin"
    invoke(cli, "read", url, str(dst), "--offset", "1M", "--length", "3M", "--chunk", "256K")
    assert dst.read_bytes() == src.read_bytes()
    assert "verify: OK" in invoke(cli, "copy", url, url, "--offset", "1M", "--dest-offset", "32M",
                                  "--length", "3M", "--verify")  # fmt: skip
    copied = tmp_path / "copied.bin"
    invoke(cli, "read", url, str(copied), "--offset", "32M", "--length", "3M")
    assert copied.read_bytes() == src.read_bytes()
    assert "IOPS" in invoke(cli, "bench", url, "-b", "4K", "-d", "8", "-t", "0.5")
    assert "not a multiple" in invoke(cli, "read", url, str(dst), "--offset", "100", code=2)


def test_cli_wrong_secret_is_a_clear_error(cli: click.Group, disk: DiskUnderTest) -> None:
    disk.enable_chap("alice", "alicesecret12")
    out = invoke(cli, "capacity", disk.url_as("alice", "wrongsecret99"), code=1)
    assert "authentication failed as 'alice'" in out
    assert "blocks: 131072" in invoke(cli, "capacity", disk.url_as("alice", "alicesecret12"))
