"""JSON views of the running server for the admin API and the dashboard (no secrets: CHAP shows names only).

Shapes (all plain JSON): a target is ``{name, alias, access, acl, auth, portal_groups, luns, sessions}``;
a LUN ``{lun, kind, summary, state, device_type, path, size_bytes, block_size, read_only, thin, stats}``; a session
``{tsih, initiator, isid, target, portal_group, portals, connections, params, in_flight, read_bytes,
write_bytes}``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from cistern.control.live import AdminError, Controller
from cistern.control.looplag import LoopLag
from cistern.scsi.changer import ChangerUnit
from cistern.scsi.lu import LogicalUnit
from cistern.scsi.ses import EnclosureUnit
from cistern.scsi.tape import TapeUnit
from cistern.scsi.unit import LogicalUnitBase
from cistern.storage.file import BlockDeviceStore
from cistern.storage.memory import MemoryStore
from cistern.storage.raid import as_raid
from cistern.target.model import portal_text
from cistern.target.server import TargetServer
from cistern.target.session import Session

_KINDS = {0x01: "tape drive", 0x08: "medium changer", 0x0D: "enclosure services"}


def _kind(lu: LogicalUnitBase) -> str:
    """What the LUN is in an operator's words: file, block, memory, raid, tape drive, medium changer..."""
    if isinstance(lu, LogicalUnit):
        store = lu.store
        if as_raid(store) is not None:
            return "raid"
        if isinstance(store, MemoryStore):
            return "memory"
        return "block" if isinstance(store, BlockDeviceStore) else "file"
    return _KINDS.get(lu.device_type, f"device type 0x{lu.device_type:02x}")


def _state(lu: LogicalUnitBase) -> tuple[str, dict[str, Any] | None]:
    """(one-line summary, details) of what a RAID array, tape drive, changer or SES unit is doing now."""
    raid = as_raid(getattr(lu, "store", None))
    if raid is not None:
        st = raid.status()
        devices = [{k: d[k] for k in ("name", "role", "state", "errors")} for d in st["devices"]]
        in_sync = sum(1 for d in devices if d["state"] == "in_sync")
        text = f"raid{st['level']} {st['state']}, {in_sync}/{st['members']} in sync"
        if st["sync_progress"] is not None:
            text += f", {st['sync_action']} {st['sync_progress'] * 100:.0f}%"
        detail = {k: st[k] for k in ("name", "level", "state", "sync_action", "sync_progress", "mismatch_cnt")}
        return text, {**detail, "devices": devices}
    if isinstance(lu, TapeUnit):
        text = f"loaded {lu.barcode}" if lu.loaded else ("cartridge waiting" if lu.cartridge else "empty")
        return text, {"loaded": lu.loaded, "barcode": lu.barcode}
    if isinstance(lu, ChangerUnit):
        where = {str(kind): list(places) for kind, places in lu.library.where.items()}
        names = {"slot": "slots", "drive": "drives", "ie": "mailslots"}
        text = ", ".join(
            f"{names.get(kind, kind)} {sum(1 for b in places if b is not None)}/{len(places)} full"
            for kind, places in where.items()
        )
        return text, where
    if isinstance(lu, EnclosureUnit):
        labels = [label for label, _ in lu.arrays]
        return f"reports {len(labels)} array(s)", {"arrays": labels}
    return "", None


def _lun(lu: LogicalUnitBase) -> dict[str, Any]:
    st = lu.stats
    disk = lu if isinstance(lu, LogicalUnit) else None
    summary, state = _state(lu)
    return {
        "lun": lu.lun,
        "kind": _kind(lu),
        "summary": summary,  # RAID array, tape drive, changer or SES state in one line ("" for plain disks)
        "state": state,
        "device_type": lu.device_type,  # PERIPHERAL DEVICE TYPE: 0 disk, 1 tape, 8 changer, 0x0D SES
        "size_bytes": disk.num_blocks * disk.block_size if disk else None,
        "block_size": disk.block_size if disk else None,
        "read_only": bool(getattr(lu, "read_only", False)),
        "thin": disk.thin if disk else False,
        "path": getattr(disk.store, "path", None) if disk else None,
        "stats": {
            "read_bytes": st.read_bytes,
            "write_bytes": st.write_bytes,
            "read_commands": st.read_commands,
            "write_commands": st.write_commands,
            "other_commands": st.other_commands,
            "in_flight": st.in_flight,
            "latency_sum_seconds": st.latency_sum,
        },
    }


def target_view(controller: Controller, name: str) -> dict[str, Any]:
    """One target as the API shows it; AdminError 404 when there is none."""
    tcfg = controller.target_config(name)
    spec = controller.server.targets[str(tcfg.name)]
    chap = tcfg.auth.chap if tcfg.auth is not None else None
    groups = []
    for group in spec.portal_groups:
        alua = spec.device.alua.groups.get(group.tag)
        groups.append(
            {
                "tag": group.tag,
                "portals": [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in group.portals],
                "alua_state": alua.state.label if alua is not None else None,
                "preferred": bool(alua.preferred) if alua is not None else False,
            }
        )
    return {
        "name": spec.name,
        "alias": spec.alias,
        "access": "open" if spec.acl is None else "acl",
        "acl": sorted(spec.acl) if spec.acl is not None else [],
        "auth": None
        if chap is None
        else {
            "username": chap.username,
            "mutual_username": chap.mutual_username,
            "algorithms": list(spec.chap_algorithms),
        },
        "portal_groups": groups,
        "luns": [_lun(lu) for _, lu in sorted(spec.device.luns.items())],
        "sessions": [s.tsih for s in controller.server.sessions_of(spec.name)],
    }


def targets_view(controller: Controller) -> list[dict[str, Any]]:
    return [target_view(controller, name) for name in controller.server.targets]


def session_view(session: Session) -> dict[str, Any]:
    io = None
    if session.target is not None and session.nexus is not None:
        io = session.target.device.nexus_io.get(id(session.nexus))
    # the negotiated parameters: one dataclass, or (wire/params.Negotiated) its session + connection parts
    params: dict[str, Any] = {}
    for part in (
        session.params,
        getattr(session.params, "session", None),
        getattr(session.params, "connection", None),
    ):
        if part is not None and dataclasses.is_dataclass(part) and not isinstance(part, type):
            params.update(dataclasses.asdict(part))
    return {
        "tsih": session.tsih,
        "initiator": session.initiator_name,
        "isid": session.isid.hex(),
        "target": session.target.name if session.target is not None else None,
        "portal_group": session.nexus.tpgt if session.nexus is not None else None,
        "portals": sorted({portal_text(conn.portal) for conn in session.connections.values()}),
        "connections": [
            {"cid": cid, "peer": conn.peer, "portal": portal_text(conn.portal)}
            for cid, conn in sorted(session.connections.items())
        ],
        "params": params,
        "in_flight": session.outstanding,
        "held": len(session.held),  # commands received ahead of ExpCmdSN, waiting for the gap to fill
        "expcmdsn": session.expcmdsn,
        "maxcmdsn": session.maxcmdsn,
        "tasks": sum(len(conn.tasks) for conn in session.connections.values()),
        "read_bytes": io[0] if io else 0,
        "write_bytes": io[1] if io else 0,
    }


def sessions_view(server: TargetServer) -> list[dict[str, Any]]:
    return [session_view(s) for s in sorted(server.sessions, key=lambda s: s.tsih)]


def stats_view(server: TargetServer, lag: LoopLag | None) -> dict[str, Any]:
    """Counters for the dashboard's charts: it differentiates successive samples itself."""
    luns = []
    for target in server.targets.values():
        for number, lu in sorted(target.device.luns.items()):
            st = lu.stats
            luns.append(
                {
                    "target": target.name,
                    "lun": number,
                    "read_bytes": st.read_bytes,
                    "write_bytes": st.write_bytes,
                    "commands": st.commands,
                    "latency_sum_seconds": st.latency_sum,
                    "in_flight": st.in_flight,
                }
            )
    return {
        "time": time.time(),
        "luns": luns,
        "sessions": len(server.sessions),
        "event_loop_lag_seconds": lag.last if lag is not None else None,
    }


__all__ = ["AdminError", "session_view", "sessions_view", "stats_view", "target_view", "targets_view"]
