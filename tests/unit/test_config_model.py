"""Config model happy paths: loading, defaults, inheritance, normalization, dump/save round trips, demo."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from cistern.config import (
    DEMO_TARGET,
    Config,
    Portal,
    default_data_dir,
    demo_config,
    load_config,
    parse_config,
    save_config,
)
from cistern.config.example import EXAMPLE_TOML

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_toml_is_valid_and_complete() -> None:
    config = parse_config(tomllib.loads(EXAMPLE_TOML))
    scratch, db = config.targets
    assert scratch.open and scratch.acl == [] and scratch.auth is None
    assert scratch.portals == [Portal("127.0.0.1", 3260)]  # inherited from the global list
    assert [(lun.lun, lun.backend, lun.size) for lun in scratch.luns] == [
        (0, "memory", 256 << 20),
        (1, "file", 1 << 30),
    ]
    assert scratch.luns[1].block_size == 4096 and scratch.luns[1].thin
    assert db.portals == [Portal("127.0.0.1", 3261), Portal("::1", 3261)]  # its own list wins
    assert db.acl == ["iqn.1993-08.org.debian:01:db-host"]
    assert db.auth is not None and db.auth.chap is not None and db.auth.chap.mutual
    assert db.auth.chap_algorithm_ids == [8, 7, 6, 5]
    assert db.params.text_keys() == {
        "MaxRecvDataSegmentLength": "262144",
        "MaxBurstLength": "1048576",
        "FirstBurstLength": "65536",
        "InitialR2T": "No",
        "ImmediateData": "Yes",
        "HeaderDigest": "CRC32C,None",
        "DataDigest": "None",
    }
    assert db.luns[0].vendor == "CISTERN" and db.luns[0].serial == "DB0001"


@pytest.mark.parametrize("name", ["demo.toml", "chap.toml"])
def test_shipped_examples_load(name: str) -> None:
    config = load_config(EXAMPLES / name, check_paths=False)
    assert config.targets


def test_chap_example_has_one_way_and_mutual() -> None:
    config = load_config(EXAMPLES / "chap.toml", check_paths=False)
    kinds = {t.name: (t.auth.chap.mutual if t.auth and t.auth.chap else None) for t in config.targets}
    assert sorted(kinds.values(), key=str) == [False, True]
    assert config.discovery_auth is not None and config.discovery_auth.chap is not None
    assert all(t.acl and not t.open for t in config.targets)


def test_defaults() -> None:
    config = parse_config(
        {
            "targets": [
                {
                    "name": "iqn.2026-11.org.x:a",
                    "open": True,
                    "luns": [{"lun": 7, "backend": "memory", "size": 4096}],
                }
            ]
        }
    )
    target = config.targets[0]
    assert config.log_level == "info" and config.portals is None and config.discovery_auth is None
    assert target.portals == [Portal("127.0.0.1", 3260)] and target.tpgt == 1 and target.alias is None
    assert target.params.text_keys() == {}
    lun = target.luns[0]
    assert (lun.block_size, lun.read_only, lun.thin, lun.removable, lun.serial) == (
        512,
        False,
        False,
        False,
        None,
    )


def test_names_are_normalized() -> None:
    config = parse_config(
        {
            "targets": [
                {
                    "name": "IQN.2026-11.Org.Example:Disk",
                    "acl": ["eui.02004567a425678d", "NAA.52004567ba64678d"],
                },
                {"name": "naa.52004567BA64678D0123456789abcdef", "open": True},
            ]
        }
    )
    assert config.targets[0].name == "iqn.2026-11.org.example:disk"
    assert config.targets[0].acl == ["eui.02004567A425678D", "naa.52004567BA64678D"]
    assert config.targets[1].name == "naa.52004567BA64678D0123456789ABCDEF"
    assert config.target("iqn.2026-11.org.EXAMPLE:disk") is config.targets[0]
    assert config.target("iqn.2026-11.org.example:none") is None


def test_log_level_case_insensitive() -> None:
    assert parse_config({"log_level": "DEBUG"}).log_level == "debug"


def test_relative_paths_from_config_dir(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "conf" / "c.toml"
    cfg.write_text(
        '[[targets]]\nname = "iqn.2026-11.org.x:a"\nopen = true\n'
        '[[targets.luns]]\nlun = 0\nbackend = "file"\npath = "../data/l0.img"\nsize = "1M"\n'
    )
    lun = load_config(cfg).targets[0].luns[0]
    assert lun.path == tmp_path / "conf" / ".." / "data" / "l0.img"


def test_home_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config(
        {
            "targets": [
                {
                    "name": "iqn.2026-11.org.x:a",
                    "open": True,
                    "luns": [{"lun": 0, "backend": "file", "path": "~/x.img"}],
                }
            ]
        }
    )
    assert config.targets[0].luns[0].path == tmp_path / "x.img"


def test_dump_shape_and_secret_not_in_repr() -> None:
    config = parse_config(tomllib.loads(EXAMPLE_TOML))
    dumped = config.dump()
    assert dumped["portals"] == ["127.0.0.1:3260"]
    assert dumped["targets"][0]["luns"][0]["size"] == "256M"
    assert "params" not in dumped["targets"][0] and "acl" not in dumped["targets"][0]
    assert dumped["targets"][1]["portals"] == ["127.0.0.1:3261", "[::1]:3261"]
    assert dumped["targets"][1]["auth"]["chap"]["secret"] == "initiator-secret-1"
    assert "initiator-secret-1" not in repr(config)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(EXAMPLE_TOML), base_dir=tmp_path)
    out = tmp_path / "saved.toml"
    save_config(config, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds CHAP secrets
    again = load_config(out)
    assert again == config
    assert again.dump() == config.dump()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_save_then_load_weird_strings(tmp_path: Path) -> None:
    data = {
        "targets": [
            {
                "name": "iqn.2026-11.org.x:a",
                "alias": 'here "quoted" back\\slash ünï',
                "open": True,
                "auth": {"chap": {"username": "user\u007fname", "secret": 'p"a\\s\ns\u0001word!!'}},
            }
        ]
    }
    config = parse_config(data)
    save_config(config, tmp_path / "w.toml")
    assert load_config(tmp_path / "w.toml") == config


def test_demo_config(tmp_path: Path) -> None:
    config = demo_config("[::1]:3300", tmp_path, "64M")
    (target,) = config.targets
    assert target.name == DEMO_TARGET == "iqn.2026-11.org.cistern:demo"
    assert target.open and target.auth is None and target.portals == [Portal("::1", 3300)]
    (lun,) = target.luns
    assert (lun.lun, lun.backend, lun.path, lun.size, lun.thin) == (
        0,
        "file",
        tmp_path / "demo-lun0.img",
        64 << 20,
        True,
    )
    assert not (tmp_path / "demo-lun0.img").exists()  # pure: nothing created
    assert isinstance(config, Config)
    assert demo_config(data_dir=tmp_path).targets[0].luns[0].size == 1 << 30


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "cistern"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".local" / "share" / "cistern"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec says relative paths are invalid
    assert default_data_dir() == tmp_path / ".local" / "share" / "cistern"
