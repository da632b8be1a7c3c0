"""The initiator CLI commands against tgt: discover, ls, inquiry, capacity, write/read/copy with verify,
bench (short), and a clear error for a wrong CHAP secret."""

from __future__ import annotations

import os
from pathlib import Path

import click
import peers
import pytest
from click.testing import CliRunner

from cistern.cli.initiator_cmds import register

pytestmark = pytest.mark.peers


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("cistern")
    register(group)
    return group


def invoke(cli: click.Group, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_cli_against_tgt(cli: click.Group, tgt_disk: peers.TgtDisk, tmp_path: Path) -> None:
    url = tgt_disk.url
    assert tgt_disk.iqn in invoke(cli, "discover", f"127.0.0.1:{tgt_disk.tgt.port}")
    listing = invoke(cli, "ls", tgt_disk.portal_url)
    assert "controller" in listing and "disk" in listing and "64.0 MiB" in listing
    assert "VIRTUAL-DISK" in invoke(cli, "inquiry", url)
    assert "blocks: 131072" in invoke(cli, "capacity", url)

    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3 << 20))
    assert "verify: OK" in invoke(cli, "write", str(src), url, "--dest-offset", "1M", "--verify")
    dst = tmp_path / "out.bin"
    invoke(cli, "read", url, str(dst), "--offset", "1M", "--length", "3M", "--chunk", "256K")
    assert dst.read_bytes() == src.read_bytes()
    assert "verify: OK" in invoke(cli, "copy", url, url, "--offset", "1M", "--dest-offset", "32M",
                                  "--length", "3M", "--verify")  # fmt: skip
    assert "IOPS" in invoke(cli, "bench", url, "-b", "4K", "-d", "8", "-t", "0.5")
    assert "not a multiple" in invoke(cli, "read", url, str(dst), "--offset", "100", code=1)


def test_cli_wrong_secret_is_a_clear_error(cli: click.Group, tgt_disk: peers.TgtDisk) -> None:
    tgt_disk.tgt.add_chap(tgt_disk.tid, "alice", "alicesecret12")
    bad = peers.iscsi_url("127.0.0.1", tgt_disk.tgt.port, tgt_disk.iqn, 1, "alice", "wrongsecret99")
    out = invoke(cli, "capacity", bad, code=1)
    assert "authentication failed as 'alice'" in out
