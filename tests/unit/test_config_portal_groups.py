"""``[[targets.portal_groups]]`` and ``alua``: parsing, the old ``portals``/``tpgt`` form, round trip,
and the errors a bad group gives (each naming its path)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from cistern.config import ConfigError, Portal, load_config, parse_config, save_config

T = "iqn.2026-11.org.example:mp"

TWO_GROUPS = f"""
[[targets]]
name = "{T}"
open = true
alua = "both"

[[targets.portal_groups]]
tag = 1
portals = ["127.0.0.1:3260"]
alua_state = "active/optimized"
preferred = true

[[targets.portal_groups]]
tag = 2
portals = ["127.0.0.1:3261", "[::1]:3261"]
alua_state = "Active/Non-Optimized"

[[targets.luns]]
lun = 0
backend = "memory"
size = "1M"
"""


def base(**target: Any) -> dict[str, Any]:
    return {"targets": [{"name": T, "open": True, **target}]}


def group(tag: int, *portals: str, **kw: Any) -> dict[str, Any]:
    return {"tag": tag, "portals": list(portals), **kw}


def issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(issue) for issue in info.value.issues]


def test_two_groups_parse() -> None:
    target = parse_config(tomllib.loads(TWO_GROUPS)).targets[0]
    groups = target.effective_portal_groups()
    assert [g.tag for g in groups] == [1, 2]
    assert groups[0].portals == [Portal("127.0.0.1", 3260)] and groups[0].preferred
    assert groups[1].alua_state == "active/non-optimized" and not groups[1].preferred
    assert groups[1].portals == [Portal("127.0.0.1", 3261), Portal("::1", 3261)]
    assert target.alua_mode == "both"
    # the flat view older readers use
    assert target.portals == [Portal("127.0.0.1", 3260), Portal("127.0.0.1", 3261), Portal("::1", 3261)]
    assert target.tpgt == 1


def test_old_form_is_one_group() -> None:
    target = parse_config(base(portals=["127.0.0.1:3300"], tpgt=7)).targets[0]
    (only,) = target.effective_portal_groups()
    assert only.tag == 7 and only.portals == [Portal("127.0.0.1", 3300)]
    assert only.alua_state == "active/optimized"
    assert target.alua is None and target.alua_mode == "implicit"
    assert "portal_groups" not in parse_config(base()).dump()["targets"][0]


def test_root_portals_do_not_override_groups() -> None:
    data = tomllib.loads('portals = ["127.0.0.1:3999"]\n' + TWO_GROUPS)
    target = parse_config(data).targets[0]
    assert Portal("127.0.0.1", 3999) not in target.portals
    assert [g.tag for g in target.effective_portal_groups()] == [1, 2]


def test_round_trip_through_save(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(TWO_GROUPS))
    dumped = config.dump()["targets"][0]
    assert "portals" not in dumped and "tpgt" not in dumped
    assert dumped["portal_groups"][1] == {
        "tag": 2,
        "portals": ["127.0.0.1:3261", "[::1]:3261"],
        "alua_state": "active/non-optimized",
        "preferred": False,
    }
    path = tmp_path / "cistern.toml"
    save_config(config, path)
    again = load_config(path, check_paths=False)
    assert again.dump() == config.dump()


@pytest.mark.parametrize(
    "target, expected",
    [
        (
            {"portal_groups": [group(1, "127.0.0.1:3260"), group(1, "127.0.0.1:3261")]},
            "targets[0].portal_groups[1].tag: tag 1 is already used by portal_groups[0]",
        ),
        (
            {"portal_groups": [group(1, "127.0.0.1:3260"), group(2, "127.0.0.1:3261", "127.0.0.1:3260")]},
            "targets[0].portal_groups[1].portals[1]: portal '127.0.0.1:3260' is already in portal_groups[0];"
            " a portal belongs to one group",
        ),
        (
            {"portal_groups": [group(1, "127.0.0.1:3260", "127.0.0.1:3260")]},
            "targets[0].portal_groups[0].portals[1]: portal '127.0.0.1:3260' is listed twice (also at [0])",
        ),
        (
            {"portal_groups": [group(1, "127.0.0.1:3260", alua_state="sleeping")]},
            "targets[0].portal_groups[0].alua_state: 'sleeping' is not an ALUA state; use one of:"
            " active/optimized, active/non-optimized, standby, unavailable",
        ),
        (
            {"portal_groups": [group(1, "127.0.0.1:3260", alua_state="transitioning")]},
            "targets[0].portal_groups[0].alua_state: 'transitioning' is not an ALUA state; use one of:"
            " active/optimized, active/non-optimized, standby, unavailable"
            " (transitioning is entered and left by the target itself)",
        ),
        (
            {"portal_groups": [group(1)]},
            "targets[0].portal_groups[0].portals: a portal group needs at least one portal",
        ),
        (
            {"portal_groups": []},
            "targets[0].portal_groups: leave portal_groups out, or list at least one group",
        ),
        (
            {"portal_groups": [group(0, "127.0.0.1:3260")]},
            "targets[0].portal_groups[0].tag: input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"portal_groups": [group(1, "127.0.0.1:3260", color="red")]},
            "targets[0].portal_groups[0].color: unknown key 'color' (allowed: alua_state, portals, preferred, tag, tls)",
        ),
        (
            {"portals": ["127.0.0.1:3260"], "portal_groups": [group(1, "127.0.0.1:3261")]},
            "targets[0].portals: portals cannot be given with portal_groups: list the portals in their groups",
        ),
        (
            {"tpgt": 3, "portal_groups": [group(1, "127.0.0.1:3261")]},
            "targets[0].tpgt: tpgt cannot be given with portal_groups: list the portals in their groups",
        ),
    ],
)
def test_bad_portal_groups(target: dict[str, Any], expected: str) -> None:
    assert issues(base(**target)) == [expected]


def test_unknown_alua_mode() -> None:
    (line,) = issues(base(alua="sometimes"))
    assert line.startswith("targets[0].alua: ") and "'implicit', 'explicit' or 'both'" in line
