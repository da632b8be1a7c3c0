"""Live administration of a running target server: apply a new config without dropping sessions.

:class:`Controller` owns the running :class:`~cistern.config.model.Config` (what ``dump()`` writes) and
changes the :class:`~cistern.target.server.TargetServer` to match a new one in three phases:

1. **validate** the whole new config (pydantic, backing paths) — every issue names its object;
2. **prepare** what can fail: open the new LUNs' stores, bind the new portals, check resizes.  Any
   failure undoes the preparation (closes those stores and listeners) and nothing is applied;
3. **commit** in memory (cannot fail): targets, ACLs, CHAP, login parameters, ALUA states, LUN maps;
   then finish: removed LUNs drain their in-flight commands before their store is closed, sessions of
   removed targets are logged out, listeners no longer used are closed.

Initiators learn of LUN changes by unit attention (SAM-5 5.14): REPORTED LUNS DATA HAS CHANGED (3F/0E)
when the LUN inventory changes, CAPACITY DATA HAS CHANGED (2A/09) after a resize, ASYMMETRIC ACCESS STATE
CHANGED (2A/06) after an ALUA change.  ACL and CHAP changes apply to new logins; existing sessions stay
unless ``end_sessions`` asks to end those that would no longer be admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cistern.config.errors import ConfigError
from cistern.config.lun import LunConfig
from cistern.config.model import Config, config_text, load_config, parse_config, save_config
from cistern.config.names import normalize_iscsi_name
from cistern.config.tape import TAPE_BACKENDS
from cistern.config.target import TargetConfig
from cistern.control.changes import Change, diff, lun_obj, target_obj
from cistern.control.errors import AdminError
from cistern.control.units import (
    check_resize,
    commit_resize,
    library_issues,
    prepare_resize,
    rescan_size,
    reuse_store,
    target_stores,
)
from cistern.scsi.alua import parse_state
from cistern.scsi.lu import LogicalUnit
from cistern.scsi.raid_lu import RaidDiskUnit
from cistern.scsi.ses import EnclosureUnit
from cistern.scsi.unit import LogicalUnitBase
from cistern.target.model import TargetSpec
from cistern.target.raid_luns import build_ses_luns, raid_arrays
from cistern.target.server import (
    TargetServer,
    build_lu,
    build_target,
    close_units_now,
    discovery_secret,
    serial_for,
    target_auth,
    target_limits,
)
from cistern.target.session import Session
from cistern.target.tape_luns import build_tape_luns

log = logging.getLogger("cistern.control")

DRAIN_TIMEOUT = 30.0  # seconds a removed LUN's in-flight commands get to finish before its store closes
ErrFunc = Callable[[str], None]


@dataclass(slots=True)
class ApplyReport:
    """What an apply did: the changes applied live and those that wait for a restart."""

    applied: list[Change] = field(default_factory=list)
    restart: list[Change] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "applied": [c.as_dict() for c in self.applied],
            "restart_required": [c.as_dict() for c in self.restart],
        }


@dataclass(slots=True)
class _Prepared:
    """Resources opened by the prepare phase, handed to commit (or closed on failure)."""

    targets: dict[str, TargetSpec] = field(default_factory=dict)
    lus: dict[tuple[str, int], LogicalUnitBase] = field(default_factory=dict)
    resizes: dict[tuple[str, int], int] = field(default_factory=dict)
    #: id() of the stores a replaced LUN hands over to its new unit (not closed by anyone here)
    kept_stores: set[int] = field(default_factory=set)

    def close(self) -> None:
        units = [lu for target in self.targets.values() for lu in target.device.luns.values()]
        close_units_now(
            lu
            for lu in [*units, *self.lus.values()]
            if not (isinstance(lu, LogicalUnit) and id(lu.store) in self.kept_stores)
        )


def _lun_config(tcfg: TargetConfig, number: int) -> LunConfig:
    return next(lun for lun in tcfg.luns if lun.lun == number)


def _issue(obj: str, exc: OSError | ValueError) -> str:
    """One issue line for a store or library that cannot be opened (build_lu / build_target already name
    the LUN or target in their messages)."""
    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename:
        cause = f"{cause}: {exc.filename}"
    return cause if cause.startswith(("target ", "portal ")) else f"{obj}: {cause}"


def _named_issues(exc: ConfigError, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Config issues as (object, cause): ``targets[i].luns[j].path`` becomes object ``target NAME LUN n``
    with cause ``path: ...``, so each names its object the way an operator does."""
    targets = [t if isinstance(t, Mapping) else {} for t in data.get("targets", []) or []]
    out = []
    for issue in exc.issues:
        obj, rest = issue.path, ""
        match = re.match(r"^targets\[(\d+)\](?:\.luns\[(\d+)\])?\.?(.*)$", issue.path)
        if match and int(match.group(1)) < len(targets):
            target = targets[int(match.group(1))]
            obj = f"target {target.get('name', match.group(1))}"
            if match.group(2) is not None:
                j = int(match.group(2))
                luns = target.get("luns") or []
                entry = luns[j] if j < len(luns) and isinstance(luns[j], Mapping) else {}
                obj += f" LUN {entry.get('lun', f'#{j}')}"
            rest = match.group(3)
        elif issue.path:
            obj, rest = "config", issue.path
        else:
            obj = "config"
        out.append((obj, f"{rest}: {issue.message}" if rest else issue.message))
    return out


def _normalized(name: str) -> str:
    """An iSCSI name as the config stores it (case folded); an invalid name is returned as given and
    refused by validation later, naming it."""
    try:
        return normalize_iscsi_name(name)
    except ValueError:
        return name


def _object_of(issue: str) -> str:
    """The object an issue line names: the text before its first ``": "``."""
    return issue.split(": ", 1)[0]


class Controller:
    """The running config of one server and every live change to it (see the module docstring)."""

    def __init__(self, server: TargetServer, config: Config, config_path: Path | None = None) -> None:
        self.server = server
        self.config = config
        self.config_path = config_path
        self.lock = asyncio.Lock()
        self._drains: set[asyncio.Task[None]] = set()

    # ---- reading

    def dump(self) -> str:
        """The running config as TOML (the bytes ``config save`` writes)."""
        return config_text(self.config)

    def target_config(self, name: str) -> TargetConfig:
        tcfg = self.config.target(name)
        if tcfg is None:
            raise AdminError(target_obj(name), "no such target", 404)
        return tcfg

    def session(self, tsih: int) -> Session:
        session = self.server.sessions.get(tsih)
        if session is None:
            raise AdminError(f"session {tsih}", "no such session (TSIH)", 404)
        return session

    # ---- whole-config operations

    def parse(self, data: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
        """Validate ``data`` (a config mapping) and check its backing paths; AdminError names each issue."""
        try:
            return parse_config(data, base_dir=base_dir, check_paths=True)
        except ConfigError as exc:
            named = _named_issues(exc, data)
            issues = [f"{obj}: {cause}" for obj, cause in named]
            raise AdminError(named[0][0], named[0][1], 400, issues) from None

    def plan(self, new: Config) -> list[Change]:
        return diff(self.config, new)

    async def restore(self, data: Mapping[str, Any] | Config, err_func: ErrFunc | None = None) -> ApplyReport:
        """Make the server match ``data``; rtslib-style: each problem is passed to ``err_func`` (and the
        first raised as :class:`AdminError`) and, when there is one, nothing at all is applied."""
        try:
            new = data if isinstance(data, Config) else self.parse(data)
            return await self.apply(new)
        except AdminError as exc:
            if err_func is not None:
                for issue in exc.issues:
                    err_func(issue)
            raise

    async def reload(self) -> ApplyReport:
        """Re-read the config file and apply it (SIGHUP, ``POST /api/config/reload``)."""
        if self.config_path is None:
            raise AdminError("config", "this server was not started from a config file", 409)
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            issues = [str(i) for i in exc.issues]
            raise AdminError(str(self.config_path), "invalid configuration", 400, issues) from None
        return await self.apply(new)

    async def save(self, path: Path | None = None) -> Path:
        """Write the running config atomically to ``path`` (default: the file ``serve`` read), keeping the
        ``[admin] backups`` rotated copies."""
        target = path or self.config_path
        if target is None:
            raise AdminError("config", "no file to save to: the server was not started from one", 409)
        backups = self.config.admin.backups if self.config.admin is not None else 5
        try:
            await asyncio.to_thread(save_config, self.config, target, backups=backups)
        except OSError as exc:
            raise AdminError(str(target), f"cannot save: {exc.strerror or exc}", 500) from None
        self.server.monitor.event("admin", f"running config saved to {target}")
        return target

    async def apply(self, new: Config, *, end_sessions: bool = False) -> ApplyReport:
        """Apply ``new`` live (see the module docstring); raises :class:`AdminError` having applied nothing."""
        async with self.lock:
            return await self._apply_locked(new, end_sessions)

    async def _apply_locked(self, new: Config, end_sessions: bool) -> ApplyReport:
        changes = self.plan(new)
        prepared = await self._prepare(new, changes)
        report = ApplyReport()
        try:
            removed = self._commit(new, changes, prepared, end_sessions, report)
        except Exception:  # a bug: the in-memory commit is not meant to fail
            prepared.close()
            log.exception("applying the configuration failed half-way")
            raise
        restart = [c for c in changes if c.action == "restart"]
        running = new
        if restart:  # keep what really runs in the running config
            running = new.model_copy(update={"admin": self.config.admin})
        self.config = running
        report.restart = restart
        await self.server.sync_listeners()
        for lu, close_store in removed:
            self._drain_later(lu, close_store)
        for change in report.applied:
            self.server.monitor.event("admin", str(change))
            log.info("admin: %s", change)
        for change in restart:
            log.warning("admin: %s (needs a restart)", change)
        return report

    # ---- phases

    async def _prepare(self, new: Config, changes: list[Change]) -> _Prepared:
        prepared = _Prepared()
        issues: list[str] = []
        new_targets = {str(t.name): t for t in new.targets}
        old_targets = {str(t.name): t for t in self.config.targets}
        rebuilt = {c.target for c in changes if c.lun is None and c.action in ("add", "remove", "replace")}
        for name in sorted((new_targets.keys() & old_targets.keys()) - rebuilt):
            issues += library_issues(name, old_targets[name], new_targets[name], changes)
        grouped: dict[str, list[LunConfig]] = {}  # tape, changer and SES LUNs: built per target below
        for change in changes:
            try:
                if change.action in ("add", "replace") and change.lun is None and change.target is not None:
                    stores = {}
                    if change.action == "replace":  # the new version keeps the old one's open stores
                        stores = target_stores(
                            change.target,
                            old_targets[change.target],
                            new_targets[change.target],
                            self.server.targets[change.target].device.luns,
                        )
                        prepared.kept_stores.update(id(store) for store in stores.values())
                    prepared.targets[change.target] = build_target(new_targets[change.target], stores)
                elif change.action in ("add", "replace") and change.lun is not None:
                    assert change.target is not None
                    lcfg = _lun_config(new_targets[change.target], change.lun)
                    store = None
                    if change.action == "replace" and reuse_store(
                        change, _lun_config(old_targets[change.target], change.lun), lcfg
                    ):
                        running = self.server.targets[change.target].device.luns.get(change.lun)
                        if isinstance(running, LogicalUnit):
                            store = running.store
                            prepared.kept_stores.add(id(store))
                    if lcfg.backend in TAPE_BACKENDS or lcfg.backend == "ses":
                        grouped.setdefault(change.target, []).append(lcfg)
                    else:
                        prepared.lus[(change.target, change.lun)] = build_lu(change.target, lcfg, store)
                elif change.action == "resize":
                    assert change.target is not None and change.lun is not None
                    lu = self._running_disk(change)
                    size = check_resize(change, lu, _lun_config(new_targets[change.target], change.lun).size)
                    if size is not None:
                        prepare_resize(lu, size)
                        prepared.resizes[(change.target, change.lun)] = size
                elif change.action == "modify" and " portal group " in change.obj and change.target:
                    for group in new_targets[change.target].effective_portal_groups():
                        parse_state(group.alua_state)
            except (OSError, ValueError) as exc:
                issues.append(_issue(change.obj, exc))
            except AdminError as exc:
                issues.append(str(exc))
        if not issues:
            issues += self._build_grouped(grouped, new_targets, changes, prepared)
        if not issues:
            issues += await self._bind_new_portals(new)
        if issues:
            prepared.close()
            await self.server.sync_listeners()  # close what _bind_new_portals opened
            obj = _object_of(issues[0])
            raise AdminError(obj, "cannot apply: " + issues[0].split(": ", 1)[-1].strip(), 409, issues)
        return prepared

    def _build_grouped(
        self,
        grouped: dict[str, list[LunConfig]],
        new_targets: dict[str, TargetConfig],
        changes: list[Change],
        prepared: _Prepared,
    ) -> list[str]:
        """Build the new tape/changer LUNs of each target as one library (``build_tape_luns``: a changer with
        its drives, or standalone drives) and its new SES LUNs over the RAID LUNs it will have."""
        issues: list[str] = []
        for name, lcfgs in grouped.items():
            tcfg = new_targets[name]

            def serial(lun: int, name: str = name) -> str:
                return serial_for(name, lun)

            tapes = [lcfg for lcfg in lcfgs if lcfg.backend in TAPE_BACKENDS]
            ses = [lcfg for lcfg in lcfgs if lcfg.backend == "ses"]
            try:
                if tapes:
                    tape_units = build_tape_luns(tcfg.model_copy(update={"luns": tapes}), serial)
                    prepared.lus.update({(name, n): lu for n, lu in tape_units.items()})
                if ses:
                    gone = {c.lun for c in changes if c.target == name and c.action in ("remove", "replace")}
                    luns = {n: lu for n, lu in self.server.targets[name].device.luns.items() if n not in gone}
                    luns.update({n: lu for (t, n), lu in prepared.lus.items() if t == name})
                    ses_units = build_ses_luns(tcfg.model_copy(update={"luns": ses}), luns, serial)
                    prepared.lus.update({(name, n): lu for n, lu in ses_units.items()})
            except (OSError, ValueError) as exc:
                issues.append(_issue(lun_obj(name, (tapes or ses)[0].lun), exc))
        return issues

    def _running_disk(self, change: Change) -> LogicalUnit:
        assert change.target is not None and change.lun is not None
        target = self.server.targets.get(change.target)
        lu = target.device.luns.get(change.lun) if target is not None else None
        if not isinstance(lu, LogicalUnit):
            raise AdminError(change.obj, "no such disk LUN (only disks have a size)", 404)
        return lu

    async def _bind_new_portals(self, new: Config) -> list[str]:
        """Listen on the portals ``new`` adds (so a busy port fails now, before anything changed)."""
        wanted = {
            (p.host, p.port): str(t.name)
            for t in new.targets
            for g in t.effective_portal_groups()
            for p in g.portals
        }
        try:
            await self.server.open_listeners(wanted.keys())
        except OSError as exc:
            text = exc.strerror or str(exc)
            return [f"portal {exc.filename}: {text}" if exc.filename else text]
        return []

    def _commit(
        self, new: Config, changes: list[Change], prepared: _Prepared, end_sessions: bool, report: ApplyReport
    ) -> list[tuple[LogicalUnitBase, bool]]:
        """In-memory changes only; returns the removed logical units still to drain, each with whether its
        store closes too (not when a replacing unit took the store over)."""
        server = self.server
        removed: list[tuple[LogicalUnitBase, bool]] = []
        new_targets = {str(t.name): t for t in new.targets}
        lun_targets: set[str] = set()
        # root settings
        server.login_timeout = new.login_timeout
        server.nop_interval = new.nop_interval
        server.nop_timeout = new.nop_timeout
        server.set_busy_poll(new.busy_poll_us, new.busy_poll_mode)
        server.discovery_chap = discovery_secret(new)
        logging.getLogger("cistern").setLevel(new.log_level.upper())
        for change in changes:
            if change.action == "restart":
                continue
            name, number = change.target, change.lun
            if name is None:
                report.applied.append(change)
                continue
            if number is None and change.action in ("remove", "replace"):
                old = server.targets.pop(name)
                for session in server.sessions_of(name):
                    for conn in list(session.connections.values()):
                        conn.request_logout(2)
                    server.end_session(session)
                removed.extend(
                    (lu, not (isinstance(lu, LogicalUnit) and id(lu.store) in prepared.kept_stores))
                    for lu in old.device.luns.values()
                )
            if number is None and change.action in ("add", "replace"):
                spec = prepared.targets.pop(name)
                server.targets[name] = spec
                server.install_abort_hook(spec)
                for lu in spec.device.luns.values():
                    if isinstance(lu, LogicalUnit):
                        self._serve_store(lu)
            elif number is None and change.action == "modify":
                self._modify_target(server.targets[name], new_targets[name], change, end_sessions)
            elif number is not None:
                lun_targets.add(name)
                device = server.targets[name].device
                if change.action in ("remove", "replace"):
                    gone = device.remove_lun(number)
                    if gone is not None:
                        kept = isinstance(gone, LogicalUnit) and id(gone.store) in prepared.kept_stores
                        removed.append((gone, not kept))
                if change.action in ("add", "replace"):
                    lu = prepared.lus.pop((name, number))
                    device.add_lun(lu)
                    if isinstance(lu, LogicalUnit):
                        self._serve_store(lu)
                disk = device.luns.get(number)
                if (
                    change.action == "resize"
                    and (name, number) in prepared.resizes
                    and isinstance(disk, LogicalUnit)
                ):
                    commit_resize(disk, prepared.resizes[(name, number)])
                    device.capacity_changed(number)
            report.applied.append(change)
        for name in lun_targets:  # SES LUs report the RAID LUNs their target has now
            luns = server.targets[name].device.luns
            for unit in luns.values():
                if isinstance(unit, EnclosureUnit):
                    unit.arrays = raid_arrays(luns)
        for lu, close_store in removed:
            if isinstance(lu, LogicalUnit) and close_store:
                with contextlib.suppress(ValueError):
                    server.stores.remove(lu.store)
        return removed

    def _serve_store(self, lu: LogicalUnit) -> None:
        """A new unit's store joins the server's (flushed and closed at shutdown); a RAID array starts its
        background work (resync, rebuild, member watch)."""
        if all(store is not lu.store for store in self.server.stores):
            self.server.stores.append(lu.store)
        start_background = getattr(lu.store, "start_background", None)
        if start_background is not None:
            start_background()

    async def rescan(self, name: str, number: int) -> ApplyReport:
        """Re-read the size of block (or file) LUN ``number`` of target ``name``: when its device grew
        (``losetup -c``, ``lvextend``), serve the new size (up to the config's ``size`` cap) and give every
        I_T nexus CAPACITY DATA HAS CHANGED (2A/09, SBC-4 4.10).  The config does not change."""
        async with self.lock:
            tcfg = self.target_config(name)
            obj = lun_obj(str(tcfg.name), number)
            lcfg = next((lun for lun in tcfg.luns if lun.lun == number), None)
            if lcfg is None:
                raise AdminError(obj, "no such LUN", 404)
            change = Change("resize", obj, "rescanned", str(tcfg.name), number)
            lu = self._running_disk(change)
            try:
                size = rescan_size(obj, lu, lcfg.size)
            except OSError as exc:
                raise AdminError(obj, f"cannot read its size: {exc.strerror or exc}", 409) from None
            report = ApplyReport()
            if size is None:
                return report
            old = lu.store.size
            commit_resize(lu, size)
            self.server.targets[str(tcfg.name)].device.capacity_changed(number)
            change = Change("resize", obj, f"rescanned: size {old} -> {size} bytes", str(tcfg.name), number)
            report.applied.append(change)
            self.server.monitor.event("admin", str(change))
            log.info("admin: %s", change)
            return report

    def _modify_target(
        self, spec: TargetSpec, tcfg: TargetConfig, change: Change, end_sessions: bool
    ) -> None:
        spec.alias = tcfg.alias
        spec.acl = None if tcfg.open else frozenset(str(a) for a in tcfg.acl)
        spec.chap, spec.mutual_chap, spec.chap_algorithms = target_auth(tcfg)
        spec.limits = target_limits(tcfg)
        groups = {g.tag: g for g in tcfg.effective_portal_groups()}
        for group in spec.portal_groups:
            gcfg = groups[group.tag]
            group.listen = [(p.host, p.port) for p in gcfg.portals]
            alua_group = spec.device.alua.groups.get(group.tag)
            if alua_group is not None:
                alua_group.preferred = gcfg.preferred
                spec.device.set_access_state(group.tag, gcfg.alua_state)
        if end_sessions and change.detail.startswith(("ACL", "access", "CHAP")):
            for session in self.server.sessions_of(spec.name):
                if "CHAP" in change.detail or not spec.admits(session.initiator_name):
                    self.kill_session(session, reason=change.detail)

    def _drain_later(self, lu: LogicalUnitBase, close_store: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.drain_and_close(lu, close_store=close_store))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def drain_and_close(
        self, lu: LogicalUnitBase, timeout: float = DRAIN_TIMEOUT, *, close_store: bool = True
    ) -> None:
        """Wait for a removed LU's in-flight commands to finish (at most ``timeout`` s), then flush and
        close its store (``close_store``; not when a replacing unit serves the same store)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while lu.stats.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if lu.stats.in_flight:
            log.warning(
                "LUN %d: %d command(s) still running after %.0f s; closing",
                lu.lun,
                lu.stats.in_flight,
                timeout,
            )
        try:
            if isinstance(lu, LogicalUnit) and close_store:
                await lu.store.flush()
                await lu.store.close()
            if close_store:
                await lu.close()
            elif isinstance(lu, RaidDiskUnit) and lu.unwatch is not None:
                lu.unwatch()  # the new unit over the same array gets its events now  # tape: the loaded cartridge; changer: the library lock
        except OSError as exc:
            log.error("LUN %d: closing it: %s", lu.lun, exc)

    async def wait_drained(self) -> None:
        """Wait for every pending drain (tests, shutdown)."""
        while self._drains:
            await asyncio.gather(*list(self._drains), return_exceptions=True)

    # ---- object operations (each builds a new config and applies it)

    def _target_dict(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        wanted = self.target_config(name).name
        return next(t for t in data["targets"] if t["name"] == wanted)

    @staticmethod
    def _lun_dict(target: dict[str, Any], name: str, number: int) -> dict[str, Any]:
        for lun in target.get("luns", []):
            if lun["lun"] == number:
                return lun
        raise AdminError(lun_obj(name, number), "no such LUN", 404)

    async def _mutate(
        self, edit: Callable[[dict[str, Any]], None], *, end_sessions: bool = False
    ) -> ApplyReport:
        """Edit a copy of the running config (as plain data) and apply it, all under the lock, so two
        concurrent operations never apply one another's stale copy."""
        async with self.lock:
            data = self.config.dump()
            edit(data)
            return await self._apply_locked(self.parse(data), end_sessions)

    async def target_add(self, body: Mapping[str, Any]) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            name = body.get("name")
            if isinstance(name, str) and self.config.target(name) is not None:
                raise AdminError(target_obj(name), "already exists", 409)
            data.setdefault("targets", []).append(dict(body))

        return await self._mutate(edit)

    async def target_remove(self, name: str) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            wanted = self.target_config(name).name
            data["targets"] = [t for t in data["targets"] if t["name"] != wanted]

        return await self._mutate(edit)

    async def lun_add(self, name: str, body: Mapping[str, Any]) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            target = self._target_dict(data, name)
            number = body.get("lun")
            if isinstance(number, int) and any(lun["lun"] == number for lun in target.get("luns", [])):
                raise AdminError(lun_obj(name, number), "already exists", 409)
            target.setdefault("luns", []).append(dict(body))

        return await self._mutate(edit)

    async def lun_remove(self, name: str, number: int) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            target = self._target_dict(data, name)
            self._lun_dict(target, name, number)
            target["luns"] = [lun for lun in target["luns"] if lun["lun"] != number]

        return await self._mutate(edit)

    async def lun_resize(self, name: str, number: int, size: int | str) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            self._lun_dict(self._target_dict(data, name), name, number)["size"] = size

        return await self._mutate(edit)

    async def acl_add(self, name: str, initiator: str) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            target = self._target_dict(data, name)
            if target.get("open"):
                raise AdminError(
                    target_obj(name), "the target is open to every initiator; it has no ACL", 409
                )
            acl = target.setdefault("acl", [])
            if _normalized(initiator) in acl:
                raise AdminError(f"{target_obj(name)} ACL {initiator}", "already in the ACL", 409)
            acl.append(initiator)

        return await self._mutate(edit)

    async def acl_remove(self, name: str, initiator: str, *, end_sessions: bool = False) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            target = self._target_dict(data, name)
            wanted = _normalized(initiator)
            if wanted not in target.get("acl", []):
                raise AdminError(f"{target_obj(name)} ACL {initiator}", "not in the ACL", 404)
            target["acl"] = [a for a in target["acl"] if a != wanted]

        return await self._mutate(edit, end_sessions=end_sessions)

    async def auth_set(
        self, name: str, auth: Mapping[str, Any] | None, *, end_sessions: bool = False
    ) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            target = self._target_dict(data, name)
            if auth is None:
                target.pop("auth", None)
            else:
                target["auth"] = dict(auth)

        return await self._mutate(edit, end_sessions=end_sessions)

    async def alua_set(self, name: str, tag: int, state: str) -> ApplyReport:
        def edit(data: dict[str, Any]) -> None:
            tcfg = self.target_config(name)
            target = self._target_dict(data, name)
            if tcfg.portal_groups is None:
                if tag != tcfg.tpgt:
                    raise AdminError(f"{target_obj(name)} portal group {tag}", "no such portal group", 404)
                group = {"tag": tcfg.tpgt, "portals": target.pop("portals"), "alua_state": state}
                target["portal_groups"] = [group]
                target.pop("tpgt", None)
            else:
                found = next((g for g in target["portal_groups"] if g["tag"] == tag), None)
                if found is None:
                    raise AdminError(f"{target_obj(name)} portal group {tag}", "no such portal group", 404)
                found["alua_state"] = state

        return await self._mutate(edit)

    def _group_portals(self, data: dict[str, Any], name: str, tag: int) -> list[str]:
        """The (mutable) portal list of portal group ``tag`` of target ``name`` in ``data``."""
        tcfg = self.target_config(name)
        target = self._target_dict(data, name)
        if tcfg.portal_groups is None:
            if tag != tcfg.tpgt:
                raise AdminError(f"{target_obj(name)} portal group {tag}", "no such portal group", 404)
            portals: list[str] = target.setdefault("portals", [])
            return portals
        found = next((g for g in target["portal_groups"] if g["tag"] == tag), None)
        if found is None:
            raise AdminError(f"{target_obj(name)} portal group {tag}", "no such portal group", 404)
        group_portals: list[str] = found.setdefault("portals", [])
        return group_portals

    async def portal_add(self, name: str, tag: int, portal: str) -> ApplyReport:
        """Serve target ``name`` on ``portal`` (``HOST:PORT``) too, in portal group ``tag``: the listener
        opens now (a port in use fails the change, naming the portal); SendTargets lists it."""

        def edit(data: dict[str, Any]) -> None:
            portals = self._group_portals(data, name, tag)
            if portal in portals:
                raise AdminError(f"{target_obj(name)} portal {portal}", "already served", 409)
            portals.append(portal)

        return await self._mutate(edit)

    async def portal_remove(self, name: str, tag: int, portal: str) -> ApplyReport:
        """Stop serving target ``name`` on ``portal``: new logins there are refused (the listener closes
        when no target uses it); connections already open stay."""

        def edit(data: dict[str, Any]) -> None:
            portals = self._group_portals(data, name, tag)
            if portal not in portals:
                raise AdminError(f"{target_obj(name)} portal {portal}", f"not a portal of group {tag}", 404)
            portals.remove(portal)

        return await self._mutate(edit)

    def kill_session(self, session: Session, reason: str = "ended by the administrator") -> None:
        """End a session: ask its initiator to log out (Async Message) and drop its connections."""
        for conn in list(session.connections.values()):
            conn.request_logout(1)
        # the initiator gets a moment to log out by itself; then its connections are dropped
        asyncio.get_running_loop().call_later(1.5, self.server.end_session, session)
        self.server.monitor.event(
            "admin", f"session {session.tsih} of {session.initiator_name} ended: {reason}"
        )
        log.info("admin: session %d of %s ended: %s", session.tsih, session.initiator_name, reason)
