"""Ready-to-paste commands for reaching a running target with common initiators: libiscsi's tools
(URL form ``iscsi://[user%secret@]HOST:PORT/IQN/LUN``), QEMU's iSCSI driver, and open-iscsi's iscsiadm.
"""

from __future__ import annotations

from cistern.config.model import Config, TargetConfig
from cistern.config.portals import Portal, format_address
from cistern.config.sizes import human_size
from cistern.config.tape import TAPE_BACKENDS
from cistern.config.tape import describe as tape_describe

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _connect_host(host: str) -> str:
    return _WILDCARDS.get(host, host)


def target_addresses(target: TargetConfig, bound: list[tuple[str, int]]) -> list[str]:
    """The ``HOST:PORT`` strings an initiator should use for ``target``, given the server's bound addresses
    (which resolve port 0 and tell which configured portals actually listen)."""
    bound_portals = [Portal(addr[0], addr[1]) for addr in bound]
    out: list[str] = []
    for portal in target.portals:
        match = next(
            (b for b in bound_portals if b.host == portal.host and (portal.port in (0, b.port))),
            None,
        )
        if match is None and portal.port == 0:
            continue  # a free port was asked for, but the server did not report it
        chosen = match or portal
        text = format_address(_connect_host(chosen.host), chosen.port)
        if text not in out:
            out.append(text)
    return out


def target_lines(target: TargetConfig, bound: list[tuple[str, int]]) -> list[str]:
    """A short description of ``target`` and the commands to try it."""
    addresses = target_addresses(target, bound)
    access = "open to any initiator" if target.open else f"ACL of {len(target.acl)} initiator(s)"
    auth = "no authentication"
    if target.auth is not None and target.auth.chap is not None:
        auth = "mutual CHAP" if target.auth.chap.mutual else "CHAP"
    lines = [f"Target {target.name}  ({access}, {auth})"]
    lines += [f"  listening on {address}" for address in addresses] or ["  not listening on any portal"]
    for lun in target.luns:
        size = human_size(lun.size) if lun.size is not None else "device size"
        if lun.backend in TAPE_BACKENDS:
            size = tape_describe(lun)
        where = f"  {lun.path or lun.library or ''}".rstrip()
        flags = "  read-only" if lun.read_only else ""
        lines.append(f"  LUN {lun.lun}: {lun.backend}, {size}{where}{flags}")
    if not addresses:
        return lines
    address = addresses[0]
    user = ""
    if target.auth is not None and target.auth.chap is not None:
        user = f"{target.auth.chap.username}%SECRET@"
    initiator = "" if target.open else f"-i {target.acl[0]} "
    lines += ["", "  Try it:", f"    iscsi-ls -s {initiator}iscsi://{user}{address}"]
    if target.luns:
        first = min(target.luns, key=lambda lun: lun.lun)
        url = f"iscsi://{user}{address}/{target.name}/{first.lun}"
        lines.append(f"    iscsi-inq {initiator}{url}")
        if first.backend not in TAPE_BACKENDS:
            lines += [f"    iscsi-readcapacity16 {initiator}{url}", f"    qemu-img info {url}"]
    if any(lun.backend in TAPE_BACKENDS for lun in target.luns):
        lines.append(
            "    # logged in from Linux: mtx -f /dev/sch0 status; mt -f /dev/nst0 status (see README, Tape)"
        )
    lines += [
        f"    sudo iscsiadm -m discovery -t st -p {address}",
        f"    sudo iscsiadm -m node -T {target.name} -p {address} --login",
    ]
    if user:
        lines.append(
            "    # CHAP: replace SECRET; for iscsiadm set node.session.auth.authmethod=CHAP, "
            "node.session.auth.username and node.session.auth.password first"
        )
    if not target.open:
        lines.append("    # only ACL initiators may log in: iscsiadm uses /etc/iscsi/initiatorname.iscsi")
    return lines


def connect_text(config: Config, bound: list[tuple[str, int]]) -> str:
    """Everything to print once the server listens."""
    blocks = ["\n".join(target_lines(target, bound)) for target in config.targets]
    if not blocks:
        blocks = ["No targets configured: discovery only."]
    return "\n\n".join(blocks) + "\n\nPress Ctrl-C to stop.\n"
