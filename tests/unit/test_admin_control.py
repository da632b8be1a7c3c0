"""The control layer in process: [admin] validation, config save with rotated backups, the diff, and a
restore that applies nothing when one object is bad (the prepare phase closes what it opened)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from cistern.config.model import ConfigError, config_text, load_config, parse_config, save_config
from cistern.control.changes import diff
from cistern.control.live import AdminError, Controller
from cistern.target.server import build_server

IQN = "iqn.2026-11.org.cistern.test:unit"


def _data(tmp_path: Path, port: int, luns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "targets": [
            {
                "name": IQN,
                "portals": [f"127.0.0.1:{port}"],
                "open": True,
                "luns": luns
                if luns is not None
                else [{"lun": 0, "backend": "file", "path": str(tmp_path / "l0.img"), "size": "1M"}],
            }
        ]
    }


@pytest.mark.parametrize(
    ("admin", "where"),
    [
        ({"token": "short"}, "admin.token"),
        ({"listen": "127.0.0.1:9470", "token": "has space in it 0123"}, "admin.token"),
        ({"token": "0123456789abcdef0123"}, "admin.token"),  # a token without a TCP listener
        ({"listen": "127.0.0.1:9470", "tls_cert": "c.pem"}, "admin.tls_key"),
        ({"backups": 101}, "admin.backups"),
        ({"listen": "nowhere:port"}, "admin.listen"),
        ({"sockett": "/x"}, "admin.sockett"),
    ],
)
def test_admin_table_refuses_bad_values(admin: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"admin": admin})
    assert info.value.issues[0].path == where, info.value.issues


def test_save_is_atomic_with_rotated_backups(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    versions = []
    for n in range(4):
        config = parse_config({"login_timeout": float(10 + n), "admin": {"backups": 2}})
        save_config(config, path, backups=2)
        versions.append(config_text(config))
    assert path.read_text() == versions[3]
    assert (tmp_path / "c.toml.1").read_text() == versions[2]
    assert (tmp_path / "c.toml.2").read_text() == versions[1]
    assert not (tmp_path / "c.toml.3").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "c.toml.1", "c.toml.2"]  # no temp files
    assert path.stat().st_mode & 0o777 == 0o600
    assert config_text(load_config(path)) == versions[3]  # dump -> load -> dump is byte-identical


def test_diff_names_each_change(tmp_path: Path) -> None:
    old = parse_config(_data(tmp_path, 3260))
    new_data = _data(
        tmp_path,
        3260,
        [
            {"lun": 0, "backend": "file", "path": str(tmp_path / "l0.img"), "size": "2M"},
            {"lun": 1, "backend": "memory", "size": "1M"},
        ],
    )
    new_data["admin"] = {"backups": 3}
    new_data["targets"][0]["alias"] = "renamed"
    changes = {(c.action, c.obj) for c in diff(old, parse_config(new_data))}
    assert changes == {
        ("restart", "admin"),
        ("modify", f"target {IQN}"),
        ("resize", f"target {IQN} LUN 0"),
        ("add", f"target {IQN} LUN 1"),
    }


def test_restore_with_one_bad_object_applies_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = parse_config(_data(tmp_path, port))
        server = build_server(config)
        await server.start()
        controller = Controller(server, config)
        try:
            before = controller.dump()
            # LUN 1 is fine, LUN 2 names a directory that does not exist: validation refuses it
            data = _data(tmp_path, port)
            data["targets"][0]["luns"] += [
                {"lun": 1, "backend": "file", "path": str(tmp_path / "l1.img"), "size": "1M"},
                {"lun": 2, "backend": "file", "path": str(tmp_path / "no" / "l2.img"), "size": "1M"},
            ]
            errors: list[str] = []
            with pytest.raises(AdminError) as info:
                await controller.restore(data, errors.append)
            assert info.value.obj == f"target {IQN} LUN 2"
            assert errors and errors[0].startswith(f"target {IQN} LUN 2: path:")
            # a busy portal is found when preparing: LUN 1's store, opened already, is closed again
            with socket.socket() as busy:
                busy.bind(("127.0.0.1", 0))
                busy.listen()
                busy_port = busy.getsockname()[1]
                data["targets"][0]["luns"].pop()
                data["targets"].append(
                    {"name": IQN + "-2", "portals": [f"127.0.0.1:{busy_port}"], "open": True}
                )
                with pytest.raises(AdminError) as info:
                    await controller.restore(data, errors.append)
            assert info.value.obj == f"portal 127.0.0.1:{busy_port}", info.value.issues
            assert controller.dump() == before
            assert sorted(server.targets) == [IQN]
            assert sorted(server.targets[IQN].device.luns) == [0]
            assert {key[1] for key in server._listeners} == {port}
        finally:
            await server.stop()

    asyncio.run(scenario())
