"""``backend = "raid"`` / ``"ses"`` LUN configs: honoured or refused with one line naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cistern.config import ConfigError, load_config, parse_config

T = "iqn.2026-11.org.example:t"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "raid.toml"


def cfg(raid: dict[str, Any] | None = None, extra_luns: list[dict[str, Any]] | None = None, **lun: Any) -> dict[str, Any]:
    r = {"level": 5, "members": ["a.img", "b.img", "c.img"], "member_size": "8M"}
    if raid is not None:
        r.update(raid)
    first = {"lun": 0, "backend": "raid", "raid": r, **lun}
    return {"targets": [{"name": T, "open": True, "luns": [first, *(extra_luns or [])]}]}


def error(data: dict[str, Any], tmp: Path | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, base_dir=tmp, check_paths=tmp is not None)
    return str(exc.value)


def test_valid_raid_and_ses() -> None:
    c = parse_config(cfg(extra_luns=[{"lun": 1, "backend": "ses"}]), base_dir="/srv")
    lun = c.targets[0].luns[0]
    assert lun.raid is not None and lun.raid.level == 5 and lun.raid.chunk == 512 * 1024
    assert str(lun.raid.members[0]) == "/srv/a.img"
    assert c.targets[0].luns[1].backend == "ses"


@pytest.mark.parametrize(
    ("raid", "lun", "message"),
    [
        ({"level": 6}, {}, "targets[0].luns[0].raid.members: RAID 6 needs at least 4 members, got 3"),
        ({"level": 4}, {}, "targets[0].luns[0].raid.level"),
        ({"members": ["a.img", "b.img", "a.img"]}, {}, "raid.members[2]: 'a.img' is already used as members[0]"),
        ({"spares": ["b.img"]}, {}, "raid.spares[0]: 'b.img' is already used as members[1]"),
        ({"chunk": "48K"}, {}, "raid.chunk: chunk 49152 must be a power of two from 4K to 64M"),
        ({"member_size": "1M"}, {}, "raid.member_size: member_size must hold"),
        ({"level": 0, "spares": ["d.img"]}, {}, "RAID 0 has no redundancy"),
        ({"level": 1, "journal": "j.img"}, {}, "raid.journal: a journal closes the RAID 5/6 write hole"),
        ({"journal": "a.img"}, {}, "raid.journal: the journal cannot be a member"),
        ({"rebuild_speed_min": "10M", "rebuild_speed_max": "1M"}, {}, "rebuild_speed_min is above"),
        ({"member_timeout": 0}, {}, "raid.member_timeout"),
        ({"bogus": 1}, {}, "raid.bogus"),
        ({}, {"path": "x.img"}, "targets[0].luns[0].path: a raid LUN has no path"),
        ({}, {"thin": True}, "a RAID LUN is not thin-provisioned"),
    ],
)
def test_impossible_raid_refused(raid: dict[str, Any], lun: dict[str, Any], message: str) -> None:
    assert message in error(cfg(raid, **lun))


def test_raid_table_needs_raid_backend_and_ses_takes_no_store() -> None:
    d = cfg()
    d["targets"][0]["luns"][0]["backend"] = "file"
    assert "a [raid] table goes with backend" in error(d)
    d = cfg(extra_luns=[{"lun": 1, "backend": "ses", "size": "1M"}])
    assert "targets[0].luns[1].size: an SES LUN has no size" in error(d)


def test_member_shared_with_another_lun_refused() -> None:
    d = cfg(extra_luns=[{"lun": 1, "backend": "file", "path": "b.img", "size": "1M"}])
    assert "already backs targets[0].luns[0]" in error(d)


def test_host_checks_sizes_and_missing_members(tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(bytes(4 << 20))
    (tmp_path / "b.img").write_bytes(bytes(8 << 20))
    d = cfg({"member_size": None, "chunk": "64K"})
    del d["targets"][0]["luns"][0]["raid"]["member_size"]
    msg = error(d, tmp_path)
    assert "member sizes differ by more than 1.0%" in msg or "c.img' does not exist; member_size is needed" in msg
    assert "c.img' does not exist; member_size is needed to create it" in msg


def test_example_is_accepted_as_is() -> None:
    c = load_config(EXAMPLE)
    lun = c.targets[0].luns[0]
    assert lun.raid is not None and lun.raid.level == 6 and len(lun.raid.members) == 5 and lun.raid.spares
    assert any(x.backend == "ses" for x in c.targets[0].luns)
    assert c.targets[0].portals[0].port == 3260
