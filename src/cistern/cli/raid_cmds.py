"""``cistern raid``: the software RAID arrays of a config file.

- ``status``: reads every member's superblock (read-only, also while ``cistern serve`` runs) and shows the
  array state, the members' roles and states, rebuild progress (the checkpointed recovery offset) and the
  mismatch count of the last check; ``--json`` for scripts.
- ``check`` / ``repair``: offline scrub (md's ``check``/``repair``; RAID 6 repair names the member it
  fixes, as raid6check does).  Refused while a target holds the members.

A spare is added by listing its file under ``spares`` (or replacing a lost member's file by an empty
one) and restarting: a device without a superblock joins as a spare and is rebuilt onto.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import click

from cistern.config.errors import ConfigError
from cistern.config.lun import LunConfig
from cistern.config.model import Config, load_config
from cistern.storage.raid.superblock import SB_SIZE, Superblock, pick


def _load(ctx: click.Context, path: Path) -> Config:
    from cistern.cli.output import config_error_exit

    try:
        return load_config(path, check_paths=False)
    except ConfigError as exc:
        config_error_exit(ctx, exc, path)
        raise click.exceptions.Exit(2) from None


def _arrays(config: Config, which: str | None) -> list[tuple[str, LunConfig]]:
    out = []
    for t in config.targets:
        for lun in t.luns:
            if lun.raid is None:
                continue
            label = f"{t.name}/{lun.lun}"
            if which is None or which in (label, str(lun.lun)):
                out.append((label, lun))
    if not out:
        raise click.ClickException("no RAID LUN" + (f" called {which!r}" if which else "") + " in the config")
    return out


def _read_sb(path: str) -> tuple[Superblock | None, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(2 * SB_SIZE)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror}"
    sb = pick([raw[:SB_SIZE], raw[SB_SIZE:]])
    return sb, "" if sb is not None else "no superblock (fresh device: joins as a spare)"


def offline_status(lun: LunConfig) -> dict[str, Any]:
    """The array state as the members' superblocks record it."""
    assert lun.raid is not None
    paths = [str(p) for p in [*lun.raid.members, *lun.raid.spares]]
    sbs = {p: _read_sb(p) for p in paths}
    valid = [sb for sb, _ in sbs.values() if sb is not None]
    if not valid:
        return {"state": "not created", "level": lun.raid.level, "devices": [
            {"path": p, "note": note} for p, (_, note) in sbs.items()]}
    auth = max(valid, key=lambda sb: sb.events)
    roles = {s.device: (i, s) for i, s in enumerate(auth.slots) if s.device}
    devices = []
    for p, (sb, note) in sbs.items():
        d: dict[str, Any] = {"path": p}
        if sb is None:
            d["note"] = note
        elif sb.array_uuid != auth.array_uuid:
            d["note"] = f"member of another array {sb.array_uuid}"
        else:
            d["events"] = sb.events
            if sb.device_uuid in roles:
                role, slot = roles[sb.device_uuid]
                d["role"], d["state"] = role, slot.state
                if slot.state == "rebuilding":
                    d["rebuilt"] = round(slot.recovery_offset / auth.member_size, 4)
            elif sb.device_uuid in auth.spares:
                d["role"], d["state"] = -1, "spare"
            else:
                d["state"] = "faulty (removed from the array)"
            if sb.events < auth.events and d.get("state") not in ("faulty",):
                d["state"] = f"stale (events {sb.events} < {auth.events})"
        devices.append(d)
    missing = [i for i, s in enumerate(auth.slots) if s.device is None or s.state in ("faulty", "missing")]
    rebuilding = [i for i, s in enumerate(auth.slots) if s.state == "rebuilding"]
    redundancy = {0: 0, 1: auth.members - 1, 5: 1, 6: 2, 10: 1}[auth.level]
    if len(missing) > redundancy:
        state = "failed"
    elif rebuilding:
        state = "rebuilding"
    elif missing:
        state = "degraded"
    elif auth.sync_action in ("check", "repair"):
        state = "checking"
    else:
        state = "clean"
    return {
        "uuid": auth.array_uuid, "level": auth.level, "chunk": auth.chunk, "members": auth.members,
        "member_size": auth.member_size, "events": auth.events, "state": state,
        "clean_shutdown": auth.clean, "sync_action": auth.sync_action, "mismatch_cnt": auth.mismatch_cnt,
        "missing_roles": missing, "devices": devices,
    }


@click.group("raid")
def raid_group() -> None:
    """Software RAID arrays: status, check, repair."""


@raid_group.command("status")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lun", "which", default=None, help="TARGET/LUN or LUN number (default: every RAID LUN).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per array.")
@click.pass_context
def status(ctx: click.Context, config_path: Path, which: str | None, as_json: bool) -> None:
    """Array and member states from the members' superblocks."""
    config = _load(ctx, config_path)
    for label, lun in _arrays(config, which):
        st = offline_status(lun)
        st["lun"] = label
        if as_json:
            click.echo(json.dumps(st, sort_keys=True))
            continue
        click.echo(f"{label}: RAID {st['level']} {st['state']}"
                   + (f", events {st['events']}, mismatch_cnt {st['mismatch_cnt']}" if "events" in st else ""))
        for d in st["devices"]:
            role = d.get("role")
            what = d.get("state") or d.get("note", "")
            extra = f" rebuilt {d['rebuilt']:.1%}" if "rebuilt" in d else ""
            click.echo(f"  {d['path']}: {'role ' + str(role) if role is not None and role >= 0 else ''} {what}{extra}".replace("  ", " ", 1))
        for r in st.get("missing_roles", []):
            click.echo(f"  role {r}: missing")


def _scrub(ctx: click.Context, config_path: Path, which: str | None, action: str) -> None:
    from cistern.storage.raid import RaidConfigError
    from cistern.storage.raid.open import open_raid

    config = _load(ctx, config_path)
    worst = 0
    for label, lun in _arrays(config, which):
        assert lun.raid is not None
        try:
            arr = open_raid(lun.raid, block_size=lun.block_size, name=label, create=False)
        except (OSError, RaidConfigError) as exc:
            raise click.ClickException(f"{label}: {exc}") from None

        async def run(arr: Any = arr) -> Any:
            try:
                return await (arr.check() if action == "check" else arr.repair())
            finally:
                await arr.close()

        try:
            prog = asyncio.run(run())
        except OSError as exc:
            raise click.ClickException(f"{label}: {exc}") from None
        click.echo(f"{label}: {action}: {prog.mismatches} mismatched stripe(s)"
                   + (f" {prog.mismatch_stripes}" if prog.mismatch_stripes else ""))
        if action == "repair":
            for stripe, what in prog.repaired:
                click.echo(f"  stripe {stripe}: rewrote {what}")
        worst = max(worst, 1 if prog.mismatches else 0)
    ctx.exit(worst)


@raid_group.command("check")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lun", "which", default=None, help="TARGET/LUN or LUN number (default: every RAID LUN).")
@click.pass_context
def check(ctx: click.Context, config_path: Path, which: str | None) -> None:
    """Count inconsistent stripes (offline; exit status 1 when there are any)."""
    _scrub(ctx, config_path, which, "check")


@raid_group.command("repair")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lun", "which", default=None, help="TARGET/LUN or LUN number (default: every RAID LUN).")
@click.pass_context
def repair(ctx: click.Context, config_path: Path, which: str | None) -> None:
    """Fix inconsistent stripes (offline); RAID 6 names the member it rewrites."""
    _scrub(ctx, config_path, which, "repair")


@raid_group.command("fail")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lun", "which", default=None, help="TARGET/LUN or LUN number (default: the only RAID LUN).")
@click.option("--member", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The member file or device to mark faulty (as mdadm --fail).")
@click.pass_context
def fail(ctx: click.Context, config_path: Path, which: str | None, member: Path) -> None:
    """Mark a member faulty in the superblocks (offline): the array runs degraded until a spare is rebuilt."""
    from cistern.storage.raid import RaidConfigError
    from cistern.storage.raid.open import open_raid

    config = _load(ctx, config_path)
    arrays = _arrays(config, which)
    if len(arrays) > 1:
        raise click.ClickException("several RAID LUNs: say which with --lun")
    label, lun = arrays[0]
    assert lun.raid is not None
    try:
        arr = open_raid(lun.raid, block_size=lun.block_size, name=label, create=False)
    except (OSError, RaidConfigError) as exc:
        raise click.ClickException(f"{label}: {exc}") from None
    wanted = os.path.abspath(member)

    async def run() -> str | None:
        arr.auto_rebuild = False  # offline: the serving target starts the rebuild
        try:
            for m in arr.members():
                if os.path.abspath(m.name) == wanted and m.state in ("in_sync", "rebuilding", "spare"):
                    arr._mark_failed(m, "failed by the administrator")
                    await arr.write_superblocks()
                    return m.state
            return None
        finally:
            await arr.close()

    if asyncio.run(run()) is None:
        raise click.ClickException(f"{member} is not an active member or spare of {label}")
    click.echo(f"{label}: {member} marked faulty")


def register(group: click.Group) -> None:
    """Add ``cistern raid`` to the top-level group (cli/main.py COMMAND_MODULES)."""
    group.add_command(raid_group)
