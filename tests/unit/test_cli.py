"""The command line through click's CliRunner: config check/example, serve/demo with a stand-in server
(signals really delivered to this process), connect instructions, optional initiator commands."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cistern.cli import runner
from cistern.cli.connect_help import connect_text, target_addresses
from cistern.cli.main import cli, register_optional
from cistern.cli.server_cmds import ensure_sparse_file
from cistern.config import Portal, demo_config, load_config, parse_config
from cistern.config.example import EXAMPLE_TOML

pytestmark = pytest.mark.timeout(20)

GOOD = """
[[targets]]
name = "iqn.2026-11.org.example:t"
alias = "test target"
acl = ["iqn.1993-08.org.debian:01:host"]
portals = ["127.0.0.1:0"]
[targets.auth.chap]
username = "host"
secret = "twelve-chars"
[[targets.luns]]
lun = 3
backend = "memory"
size = "16M"
"""


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help() -> None:
    from cistern import accel

    assert run("--version").output.strip() == f"cistern, version 0.1.0; hot path: {accel.describe()}"
    out = run("--help").output
    for command in ("demo", "serve", "config"):
        assert command in out


def test_demo_help_shows_defaults() -> None:
    result = run("demo", "--help")
    assert result.exit_code == 0
    assert "[default: 127.0.0.1:3260]" in result.output
    assert "[default: 1G]" in result.output
    assert "~/.local/share/cistern" in result.output


def test_config_example_is_a_valid_config(tmp_path: Path) -> None:
    result = run("config", "example")
    assert result.exit_code == 0
    assert result.output == EXAMPLE_TOML
    path = tmp_path / "ex.toml"
    path.write_text(result.output)
    assert len(load_config(path, check_paths=False).targets) == 2


def test_config_check_prints_summary(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    result = run("config", "check", str(path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "iqn.2026-11.org.example:t" in out and "test target" in out
    assert "iqn.1993-08.org.debian:01:host" in out and "CHAP (host)" in out
    assert "16.0 MiB" in out and "memory" in out
    assert "twelve-chars" not in out  # never print secrets
    assert out.rstrip().endswith(f"OK: {path} is valid (1 target(s), 1 LUN(s))")


def test_config_check_bad_config_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('size = "16M"', 'size = "12X"').replace('"twelve-chars"', '"short"'))
    result = run("config", "check", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path} is not a valid cistern config:",
        "  targets[0].auth.chap.secret: secret is 5 characters; at least 12 are required "
        "(96 bits, RFC 7143 section 12.1.3)",
        "  targets[0].luns[0].size: '12X' is not a size (use bytes or K/M/G/T suffixes)",
    ]
    assert result.stdout == ""


def test_config_check_path_checks_optional(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('backend = "memory"', 'backend = "block"\npath = "/nonexistent/sdq"'))
    failed = run("config", "check", str(path))
    assert (
        failed.exit_code == 2
        and "targets[0].luns[0].path: '/nonexistent/sdq' does not exist" in failed.stderr
    )
    assert run("config", "check", "--no-path-checks", str(path)).exit_code == 0


def test_serve_bad_config_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "load_serve", lambda: pytest.fail("must not start the server"))
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("lun = 3", "lun = 99999"))
    result = run("serve", "--config", str(path))
    assert result.exit_code == 2
    assert (
        "  targets[0].luns[0].lun: input should be less than or equal to 16383 (got 99999)" in result.stderr
    )
    missing = run("serve", "-c", str(tmp_path / "missing.toml"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


class FakeServer:
    """Stands in for cistern.target.server.serve: reports bound addresses, then signals this process."""

    def __init__(self, bound: list[tuple[str, int]], signals: tuple[int, ...] = (signal.SIGINT,)) -> None:
        self.bound = bound
        self.signals = signals
        self.config: Any = None
        self.loop_module = ""
        self.cancelled = False
        self.cleanup_interrupted = False

    async def __call__(self, config: Any, *, on_ready: Any = None) -> None:
        self.config = config
        self.loop_module = type(asyncio.get_running_loop()).__module__
        on_ready(self.bound)
        os.kill(os.getpid(), self.signals[0])
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            if len(self.signals) > 1:  # a slow shutdown, cut short by a second signal
                os.kill(os.getpid(), self.signals[1])
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    self.cleanup_interrupted = True
                    raise
            # a clean shutdown that returns normally


def test_serve_runs_until_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer([("127.0.0.1", 40123)], signals=(signal.SIGTERM,))
    monkeypatch.setattr(runner, "load_serve", lambda: fake)
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    result = run("serve", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert fake.cancelled and fake.config.targets[0].name == "iqn.2026-11.org.example:t"
    assert "  listening on 127.0.0.1:40123" in result.stdout
    assert (
        "iscsi-inq -i iqn.1993-08.org.debian:01:host iscsi://host%SECRET@127.0.0.1:40123/iqn.2026-11.org.example:t/3"
        in result.stdout
    )
    assert "Press Ctrl-C to stop." in result.stdout
    if "uvloop" in sys.modules or _has_uvloop():
        assert fake.loop_module.startswith("uvloop")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers removed again


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def test_second_signal_interrupts_slow_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer([("127.0.0.1", 40124)], signals=(signal.SIGINT, signal.SIGINT))
    monkeypatch.setattr(runner, "load_serve", lambda: fake)
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    result = run("serve", "-c", str(path))
    assert result.exit_code == 0
    assert fake.cancelled and fake.cleanup_interrupted


def test_serve_bind_error_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(config: Any, *, on_ready: Any = None) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(runner, "load_serve", lambda: failing)
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    result = run("serve", "-c", str(path))
    assert result.exit_code == 1
    assert "cannot serve: Address already in use" in result.stderr and "Errno" not in result.stderr


def test_demo_creates_sparse_lun_and_prints_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer([("127.0.0.1", 3260)])
    monkeypatch.setattr(runner, "load_serve", lambda: fake)
    data = tmp_path / "data"
    result = run("demo", "--dir", str(data), "--size", "4M")
    assert result.exit_code == 0, result.output
    lun_file = data / "demo-lun0.img"
    assert lun_file.stat().st_size == 4 << 20
    assert lun_file.stat().st_blocks * 512 < 4 << 20  # sparse
    assert fake.config.targets[0].luns[0].path == lun_file and fake.cancelled
    lines = [line.strip() for line in result.stdout.splitlines()]
    iqn = "iqn.2026-11.org.cistern:demo"
    for expected in (
        "iscsi-ls -s iscsi://127.0.0.1:3260",
        f"iscsi-inq iscsi://127.0.0.1:3260/{iqn}/0",
        f"qemu-img info iscsi://127.0.0.1:3260/{iqn}/0",
        "sudo iscsiadm -m discovery -t st -p 127.0.0.1:3260",
        f"sudo iscsiadm -m node -T {iqn} -p 127.0.0.1:3260 --login",
    ):
        assert expected in lines


def test_demo_default_dir_and_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer([("::1", 3300)])
    monkeypatch.setattr(runner, "load_serve", lambda: fake)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    result = run("demo", "--portal", "[::1]:3300", "--size", "1M")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "xdg" / "cistern" / "demo-lun0.img").stat().st_size == 1 << 20
    assert "iscsi-ls -s iscsi://[::1]:3300" in result.stdout
    bad_portal = run("demo", "--portal", "1.2.3.4:70000")
    assert bad_portal.exit_code == 2 and "port '70000' is not a number in 0..65535" in bad_portal.stderr
    bad_size = run("demo", "--size", "12X")
    assert bad_size.exit_code == 2 and "'12X' is not a size" in bad_size.stderr
    assert run("demo", "--size", "1000").exit_code == 2


def test_ensure_sparse_file_grows_but_never_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "f.img"
    ensure_sparse_file(path, 8192)
    path.write_bytes(b"x" * 4096)
    ensure_sparse_file(path, 8192)
    assert path.read_bytes()[:4096] == b"x" * 4096 and path.stat().st_size == 8192
    with pytest.raises(click.ClickException, match="larger than --size"):
        ensure_sparse_file(path, 4096)
    assert path.stat().st_size == 8192


def test_connect_addresses_resolve_port_zero_and_wildcards() -> None:
    config = parse_config(
        {
            "targets": [
                {
                    "name": "iqn.2026-11.org.x:a",
                    "open": True,
                    "portals": ["0.0.0.0:0", "[::]:3260", "10.9.9.9:3260"],
                },
            ]
        }
    )
    target = config.targets[0]
    assert target_addresses(target, [("0.0.0.0", 41000), ("::", 3260)]) == [
        "127.0.0.1:41000",
        "[::1]:3260",
        "10.9.9.9:3260",
    ]
    assert target_addresses(target, []) == ["[::1]:3260", "10.9.9.9:3260"]  # port 0 unknown: not shown


def test_connect_text_demo_and_empty() -> None:
    text = connect_text(demo_config(Portal("127.0.0.1", 3260), "/srv", "1G"), [("127.0.0.1", 3260)])
    assert "Target iqn.2026-11.org.cistern:demo  (open to any initiator, no authentication)" in text
    assert "LUN 0: file, 1.0 GiB  /srv/demo-lun0.img" in text
    assert "iscsi-readcapacity16 iscsi://127.0.0.1:3260/iqn.2026-11.org.cistern:demo/0" in text
    assert "-i " not in text and "%SECRET" not in text
    assert connect_text(parse_config({}), []).startswith("No targets configured")


def test_example_connect_text_mutual_chap() -> None:
    config = parse_config(tomllib.loads(EXAMPLE_TOML))
    text = connect_text(config, [("127.0.0.1", 3260), ("127.0.0.1", 3261), ("::1", 3261)])
    assert "(ACL of 1 initiator(s), mutual CHAP)" in text
    assert "initiator-secret-1" not in text and "target-secret-22" not in text


def test_register_optional_initiator_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    group = click.Group("g")
    assert register_optional(group, "cistern.cli.no_such_module") is False
    module = types.ModuleType("fake_initiator_cmds")

    def register(g: click.Group) -> None:
        @g.command("discover")
        def discover() -> None:
            click.echo("discovering")

    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_initiator_cmds", module)
    assert register_optional(group, "fake_initiator_cmds") is True
    assert CliRunner().invoke(group, ["discover"]).output == "discovering\n"


def test_register_optional_reports_broken_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "broken_cmds.py").write_text("import cistern.initiator.not_written_yet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = click.Group("g")
    assert register_optional(group, "broken_cmds") is False
    assert "broken_cmds is not available: No module named 'cistern.initiator.not_written_yet'" in caplog.text
    assert group.commands == {}
