"""The difference between two configs, as a list of changes to a running server (no I/O here).

:func:`diff` compares the running :class:`~cistern.config.model.Config` with a new one object by object
(root settings, targets by name, portal groups by tag, LUNs by number) and says, for each difference, how
it is applied live: ``add``, ``remove``, ``modify`` (in place: new logins only, or with a unit attention),
``resize``, ``replace`` (the object is rebuilt: a LUN gets REPORTED LUNS DATA HAS CHANGED, a target's
sessions end) or ``restart`` (only the ``[admin]`` table: the API cannot move under its own feet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cistern.config.lun import LunConfig
from cistern.config.model import Config
from cistern.config.tape import TAPE_BACKENDS
from cistern.config.tape import describe as describe_tape
from cistern.config.target import TargetConfig

Action = Literal["add", "remove", "modify", "resize", "replace", "restart"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference.  ``obj`` names the object (``target iqn...``, ``target iqn... LUN 3``, ``admin``)."""

    action: Action
    obj: str
    detail: str
    target: str | None = None
    lun: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action, "object": self.obj, "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.action} {self.obj}: {self.detail}"


def target_obj(name: str) -> str:
    return f"target {name}"


def lun_obj(target: str, lun: int) -> str:
    return f"target {target} LUN {lun}"


_LUN_RESIZE_ONLY = {"size"}


def _lun_changes(tname: str, old: TargetConfig, new: TargetConfig) -> list[Change]:
    out: list[Change] = []
    before = {lun.lun: lun for lun in old.luns}
    after = {lun.lun: lun for lun in new.luns}
    for number in sorted(before.keys() - after.keys()):
        out.append(Change("remove", lun_obj(tname, number), "LUN removed", tname, number))
    for number in sorted(after.keys() - before.keys()):
        lun = after[number]
        out.append(Change("add", lun_obj(tname, number), _describe_lun(lun), tname, number))
    for number in sorted(before.keys() & after.keys()):
        a, b = before[number], after[number]
        if a == b:
            continue
        fields = _changed_fields(a, b)
        if fields <= _LUN_RESIZE_ONLY:
            out.append(Change("resize", lun_obj(tname, number), f"size -> {b.size}", tname, number))
        else:
            out.append(
                Change(
                    "replace", lun_obj(tname, number), "changed " + ", ".join(sorted(fields)), tname, number
                )
            )
    return out


def _describe_lun(lun: LunConfig) -> str:
    if lun.backend in TAPE_BACKENDS:
        return f"{lun.backend} {describe_tape(lun)}"
    if lun.backend == "ses":
        return "ses (enclosure services over the target's RAID LUNs)"
    if lun.raid is not None:
        return f"raid{lun.raid.level} of {len(lun.raid.members)} members"
    where = str(lun.path) if lun.path is not None else f"{lun.size} bytes"
    return f"{lun.backend} {where}"


def _changed_fields(a: LunConfig | TargetConfig | Config, b: LunConfig | TargetConfig | Config) -> set[str]:
    da, db = a.model_dump(), b.model_dump()
    return {key for key in da.keys() | db.keys() if da.get(key) != db.get(key)}


def _group_shape(t: TargetConfig) -> tuple[object, ...]:
    """What a live change cannot alter: the portal groups' tags and the ALUA mode."""
    return (tuple(g.tag for g in t.effective_portal_groups()), t.alua_mode)


def _target_changes(old: TargetConfig, new: TargetConfig) -> list[Change]:
    name = str(new.name)
    if _group_shape(old) != _group_shape(new):
        return [
            Change("replace", target_obj(name), "portal group tags or ALUA mode changed: sessions end", name)
        ]
    out: list[Change] = []
    fields = _changed_fields(old, new) - {"luns"}
    old_groups = {g.tag: g for g in old.effective_portal_groups()}
    for group in new.effective_portal_groups():
        before = old_groups[group.tag]
        if [str(p) for p in before.portals] != [str(p) for p in group.portals]:
            out.append(
                Change(
                    "modify",
                    f"target {name} portal group {group.tag}",
                    "portals " + ", ".join(str(p) for p in group.portals),
                    name,
                )
            )
        if before.alua_state != group.alua_state or before.preferred != group.preferred:
            out.append(
                Change(
                    "modify",
                    f"target {name} portal group {group.tag}",
                    f"ALUA state {group.alua_state}{' (preferred)' if group.preferred else ''}",
                    name,
                )
            )
    fields -= {"portals", "tpgt", "portal_groups"}
    for key in sorted(fields):
        what = {"acl": "ACL", "open": "access", "auth": "CHAP credentials", "params": "login parameters"}.get(
            key, key
        )
        out.append(Change("modify", target_obj(name), f"{what} changed (new logins)", name))
    return out + _lun_changes(name, old, new)


def diff(old: Config, new: Config) -> list[Change]:
    """Every difference between ``old`` (running) and ``new``, in the order they are applied."""
    out: list[Change] = []
    for key in sorted(_changed_fields(old, new) - {"targets", "admin", "portals"}):
        out.append(Change("modify", key, "changed"))
    if old.admin != new.admin:
        out.append(Change("restart", "admin", "the [admin] table takes effect at the next start"))
    before = {str(t.name): t for t in old.targets}
    after = {str(t.name): t for t in new.targets}
    for name in before:
        if name not in after:
            out.append(Change("remove", target_obj(name), "target removed: its sessions end", name))
    for name, tcfg in after.items():
        if name not in before:
            out.append(Change("add", target_obj(name), f"{len(tcfg.luns)} LUN(s)", name))
        elif before[name] != tcfg:
            out.extend(_target_changes(before[name], tcfg))
    return out
