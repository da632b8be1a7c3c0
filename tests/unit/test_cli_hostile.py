"""Every CLI command with hostile option values (0, negative, huge, wrong type, malformed names): one
``Error:`` line, exit status 2, no traceback, and nothing attempted on the network (issue 13). Also the
shared helpers: help texts with units and defaults, VPD decoding, sense in words, log formatting and
rate limiting, the store size rules and the exclusive lock."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cistern.cli.errors import Where, describe, sense_words
from cistern.cli.main import cli
from cistern.cli.output import JournalFormatter, JsonFormatter, PlainFormatter, RateLimitFilter
from cistern.initiator.errors import ScsiCheckCondition
from cistern.initiator.sense import Sense
from cistern.initiator.vpd import vpd_fields
from cistern.storage import open_store
from cistern.storage.lock import StoreInUse

pytestmark = pytest.mark.timeout(30)

URL = "iscsi://127.0.0.1:9/iqn.2026-11.org.example:t/0"  # port 9 (discard): never reached
PORTAL = "127.0.0.1:9"

HOSTILE: list[list[str]] = [
    # transfers
    *[
        [cmd, *args]
        for cmd, args in [
            ("read", [URL, "out.bin", "--depth", "0"]),
            ("read", [URL, "out.bin", "--depth", "-1"]),
            ("read", [URL, "out.bin", "--depth", "99999999999"]),
            ("read", [URL, "out.bin", "--depth", "many"]),
            ("read", [URL, "out.bin", "--chunk", "0"]),
            ("read", [URL, "out.bin", "--chunk", "-1M"]),
            ("read", [URL, "out.bin", "--chunk", "1T"]),
            ("read", [URL, "out.bin", "--chunk", "1000"]),
            ("read", [URL, "out.bin", "--length", "0"]),
            ("read", [URL, "out.bin", "--offset", "-4K"]),
            ("read", [URL, "out.bin", "--offset", "lots"]),
            ("read", [URL, "out.bin", "--offset", "99999999P"]),
            ("read", [URL, "out.bin", "--length", "99999999P"]),
            ("read", [URL, "out.bin", "-i", "not an iqn"]),
            ("read", ["iscsi://127.0.0.1:9/iqn.2026-11.org.example:t", "out.bin"]),
            ("read", ["iscsi://127.0.0.1:99999/iqn.2026-11.org.example:t/0", "out.bin"]),
            ("write", ["in.bin", URL, "--dest-offset", "-1"]),
            ("write", ["in.bin", URL, "--depth", "0"]),
            ("write", ["in.bin", URL, "--chunk", "0"]),
            ("copy", [URL, URL, "--chunk", "0"]),
            ("copy", [URL, URL, "--depth", "2000"]),
            ("copy", [URL, URL, "--length", "-1"]),
        ]
    ],
    # bench
    ["bench", URL, "-t", "0"],
    ["bench", URL, "-t", "-1"],
    ["bench", URL, "-t", "1e12"],
    ["bench", URL, "-t", "soon"],
    ["bench", URL, "-d", "0"],
    ["bench", URL, "-d", "-3"],
    ["bench", URL, "-b", "0"],
    ["bench", URL, "-b", "1000"],
    ["bench", URL, "-b", "1T"],
    ["bench", URL, "-r", "101"],
    ["bench", URL, "-r", "-1"],
    ["bench", URL, "--span", "0"],
    ["bench", URL, "-r", "50"],  # writes without --yes, stdin not a terminal
    # listings
    ["inquiry", URL, "--vpd", "300"],
    ["inquiry", URL, "--vpd", "-1"],
    ["inquiry", URL, "--vpd", "bogus-page"],
    ["inquiry", "iscsi://127.0.0.1:9/iqn.2026-11.org.example:t/99999"],
    ["capacity", URL, "-i", "iqn.bad"],
    ["capacity", "http://example.com/"],
    ["ls", URL, "-i", ""],
    ["discover", PORTAL, "-i", "x" * 300],
    ["discover", "127.0.0.1:0x10"],
    ["discover", PORTAL, "--target-chap", "nopercent"],
    # group and server side
    ["--log-format", "xml", "ls", URL],
    ["serve"],
    ["serve", "-c", "/nonexistent/cistern.toml"],
    ["demo", "--size", "0"],
    ["demo", "--size", "-1G"],
    ["demo", "--portal", "127.0.0.1:70000"],
    ["demo", "--size", "1.5"],
    ["config", "check", "/nonexistent.toml"],
]


@pytest.mark.parametrize("args", HOSTILE, ids=[" ".join(a)[:60] for a in HOSTILE])
def test_hostile_options_are_one_error_line_exit_2(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "in.bin").write_bytes(b"x" * 4096)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, result.stderr
    assert not (tmp_path / "out.bin").exists()  # nothing was started


def test_help_states_units_defaults_url_and_chap_variables() -> None:
    runner = CliRunner()
    read = runner.invoke(cli, ["read", "--help"], terminal_width=200).output
    assert "--chunk SIZE" in read and "[default: 1M]" in read and "512 .. 64M" in read
    assert "--depth N" in read and "Chunks in flight (1..1024)." in read and "[default: 8" in read
    assert "iscsi://[USER%SECRET@]HOST[:PORT]/TARGET-IQN/LUN" in read
    assert "LIBISCSI_CHAP_USERNAME" in read and "LIBISCSI_CHAP_TARGET_PASSWORD" in read
    bench = runner.invoke(cli, ["bench", "--help"], terminal_width=200).output
    assert "-b, --block-size SIZE" in bench and "Bytes per I/O" in bench and "[default: 4K]" in bench
    assert "-r, --read-percent" in bench and "needs --yes" in bench and "-t, --duration SECONDS" in bench
    inquiry = runner.invoke(cli, ["inquiry", "--help"], terminal_width=200).output
    assert "block-limits" in inquiry and "0x83" in inquiry
    top = runner.invoke(cli, ["--help"], terminal_width=200).output
    assert "--log-format" in top and "--log-file" in top and "130 interrupted" in top
    assert "-v, --verbose" in runner.invoke(cli, ["serve", "--help"]).output
    for args in (
        ["-v", "config", "check", "--help"],
        ["config", "-v", "check", "--help"],
        ["config", "check", "-v", "--help"],
    ):
        assert runner.invoke(cli, args).exit_code == 0


def test_vpd_pages_decode_to_named_fields() -> None:
    limits = bytes([1, 255, 0, 8]) + (65536).to_bytes(4, "big") + (1024).to_bytes(4, "big") + bytes(4)
    limits += (8192).to_bytes(4, "big") + (256).to_bytes(4, "big") + (8).to_bytes(4, "big")
    limits += (0x80000000 | 0).to_bytes(4, "big") + (65535).to_bytes(8, "big")
    fields = vpd_fields(0xB0, limits)
    assert fields["wsnz"] is True and fields["max_compare_and_write_blocks"] == 255
    assert fields["max_transfer_length"] == 65536 and fields["max_unmap_lba_count"] == 8192
    assert fields["unmap_granularity_alignment_valid"] is True and fields["max_write_same_length"] == 65535
    assert vpd_fields(0xB0, b"\x00") == {"wsnz": False}  # short: what fits, never an exception
    assert vpd_fields(0xB1, bytes([0, 1, 0, 3, 0x02])) == {
        "medium_rotation_rate": 1, "non_rotating": True, "product_type": 0, "nominal_form_factor": 3,
        "zoned": 0, "fuab": True, "vbuls": False,
    }  # fmt: skip
    lbp = vpd_fields(0xB2, bytes([0, 0xE4 | 0x02, 0x02, 0]))
    assert lbp["lbpu"] and lbp["lbpws"] and lbp["lbpws10"] and lbp["lbprz"] == 1
    assert lbp["anc_sup"] and lbp["provisioning_type"] == "thin provisioned"
    naa = bytes([0x01, 0x03, 0, 8]) + bytes.fromhex("6001405abcdef012")
    name = b"iqn.2026-11.org.x:t,t,0x1\0\0\0"
    port = bytes([0x51, 0x94, 0, 4, 0, 0, 0, 2])
    ident = vpd_fields(0x83, naa + bytes([0x53, 0x08, 0, len(name)]) + name + port)["designators"]
    assert ident[0] == {
        "type": "NAA",
        "association": "logical unit",
        "code_set": "binary",
        "value": "6001405abcdef012",
    }
    assert ident[1]["type"] == "SCSI name string" and ident[1]["value"] == "iqn.2026-11.org.x:t,t,0x1"
    assert ident[2] == {"type": "relative target port", "association": "target port", "code_set": "binary",
                        "value": 2, "protocol": "iSCSI"}  # fmt: skip
    tpc = bytes.fromhex("0001000a") + bytes([6, 0x83, 2, 0x00, 0x01, 0x84, 0]) + bytes(3)
    desc = vpd_fields(0x8F, tpc)["descriptors"]
    assert desc[0]["name"] == "Supported Commands"
    assert desc[0]["commands"][0] == {"opcode": "0x83", "service_actions": ["0x00", "0x01"]}


def test_sense_in_words() -> None:
    assert sense_words(Sense(0x5, 0x25, 0x00), Where(lun=9)) == "LUN 9 does not exist"
    assert sense_words(Sense(0x7, 0x27, 0x00)) == "the LUN is write-protected"
    assert sense_words(Sense(0x7, 0x27, 0x07)) == "the LUN has run out of space"
    assert (
        sense_words(Sense(0x5, 0x21, 0x00), Where(lba=2097152, capacity_blocks=2097152))
        == "LBA 2097152 is beyond the end (capacity 2097152 blocks)"
    )
    exc = ScsiCheckCondition(Sense(0x7, 0x27, 0x00))
    assert describe(exc) == "the LUN is write-protected"
    assert describe(exc, verbose=1) == "the LUN is write-protected (sense: DATA PROTECT ASC/ASCQ 0x27/0x00)"
    assert "0x55/0x01" in describe(ScsiCheckCondition(Sense(0x5, 0x55, 0x01)))


def _record(msg: str, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("cistern.target", level, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_log_formats_and_rate_limit() -> None:
    plain = PlainFormatter().format(_record("line one\nline two"))
    assert plain.endswith(" WARNING cistern.target: line one\\nline two") and "\n" not in plain
    assert plain[:4].isdigit() and plain[10] == "T"  # ISO 8601 with the date
    assert JournalFormatter().format(_record("x", logging.INFO)) == "<6>cistern.target: x"
    assert JournalFormatter().format(_record("x", logging.ERROR)) == "<3>cistern.target: x"
    obj = json.loads(JsonFormatter().format(_record("hello", session=5, peer="1.2.3.4:5")))
    assert obj["message"] == "hello" and obj["session"] == "5" and obj["peer"] == "1.2.3.4:5"
    limiter = RateLimitFilter(window=60, burst=5)
    passed = [limiter.filter(_record("refused", rate_key="10.0.0.1")) for _ in range(1000)]
    assert passed.count(True) == 6  # 5, then one that says the rest are summarised
    assert all(limiter.filter(_record("refused", rate_key=f"10.0.1.{i}")) for i in range(3))  # other sources
    assert limiter.filter(_record("no key"))
    limiter.window = 0  # the window has passed: the next line carries the count
    record = _record("refused", rate_key="10.0.0.1")
    assert limiter.filter(record) and "(994 similar messages suppressed" in record.msg
    for i in range(5000):  # memory stays bounded
        limiter.filter(_record("x", rate_key=i))
    assert len(limiter._state) <= 1024


def test_store_size_rules_and_lock(tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    big.write_bytes(bytes(32 << 20))
    with pytest.raises(ValueError, match="would hide 16777216 bytes"):
        open_store("file", big, 16 << 20)
    empty = tmp_path / "empty.img"
    empty.touch()
    with pytest.raises(ValueError, match="is 0 bytes, not a whole number"):
        open_store("file", empty)
    with pytest.raises(OSError, match="larger than this filesystem allows"):
        open_store("file", tmp_path / "huge.img", 1 << 62)
    assert not (tmp_path / "huge.img").exists()
    small = tmp_path / "small.img"
    small.write_bytes(b"\x01" * 4096)
    with pytest.raises(ValueError, match="read-only LUN cannot grow it"):
        open_store("file", small, 8192, read_only=True)
    store = open_store("file", small, 8192)
    assert store.size == 8192 and small.stat().st_size == 8192
    with pytest.raises(StoreInUse, match="already exported by"):
        open_store("file", small, 8192)
    asyncio.run(store.close())
    again = open_store("file", small, 8192)  # the lock went with the store
    asyncio.run(again.close())


def test_config_check_catches_free_space_and_memory(tmp_path: Path) -> None:
    head = '[[targets]]\nname = "iqn.2026-11.org.example:t"\nopen = true\nportals = ["127.0.0.1:3260"]\n'
    thick = tmp_path / "thick.toml"
    thick.write_text(
        head + f'[[targets.luns]]\nlun = 0\nbackend = "file"\npath = "{tmp_path}/x.img"\nsize = "1P"\n'
    )
    result = CliRunner().invoke(cli, ["config", "check", str(thick)])
    assert result.exit_code == 2 and "a thick LUN of 1.0 PiB needs that much space" in result.stderr
    assert "(set thin = true to overcommit)" in result.stderr
    thin = thick.read_text().replace('size = "1P"', 'size = "1P"\nthin = true')
    thick.write_text(thin)
    assert CliRunner().invoke(cli, ["config", "check", str(thick)]).exit_code == 0
    ram = tmp_path / "ram.toml"
    ram.write_text(head + '[[targets.luns]]\nlun = 0\nbackend = "memory"\nsize = "1P"\n')
    result = CliRunner().invoke(cli, ["config", "check", "--json", str(ram)])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False and "memory LUNs need 1.0 PiB of RAM in all" in report["issues"][0]


def test_demo_file_too_large_leaves_nothing_behind(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path), "--size", "8P"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot make" in result.stderr and "File too large" in result.stderr
    assert not (tmp_path / "demo-lun0.img").exists()


def test_target_errors_name_the_session() -> None:
    from types import SimpleNamespace

    from cistern.target.server import SessionLogContext

    session = SimpleNamespace(
        tsih=7, initiator_name="iqn.2026-11.org.x:host", target=SimpleNamespace(name="iqn.2026-11.org.x:t")
    )
    server = SimpleNamespace(connections=[SimpleNamespace(peer="10.0.0.5:4000", session=session)])
    context = SessionLogContext(server)  # type: ignore[arg-type]
    record = logging.LogRecord(
        "cistern.target",
        logging.WARNING,
        __file__,
        1,
        "%s: dropping connection: %s",
        ("10.0.0.5:4000", "bad"),
        None,
    )
    assert context.filter(record)
    assert record.getMessage() == (
        "10.0.0.5:4000: dropping connection: bad [session TSIH 7, iqn.2026-11.org.x:host -> iqn.2026-11.org.x:t]"
    )
    assert json.loads(JsonFormatter().format(record))["session"] == "7"
    info = logging.LogRecord(
        "cistern.target", logging.INFO, __file__, 1, "%s: fine", ("10.0.0.5:4000",), None
    )
    assert context.filter(info) and info.getMessage() == "10.0.0.5:4000: fine"  # INFO is left alone
