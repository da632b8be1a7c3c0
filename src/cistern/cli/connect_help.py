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


def target_lines(
    target: TargetConfig, bound: list[tuple[str, int]], discovery_chap: str | None = None
) -> list[str]:
    """A short description of ``target`` and the commands to try it (``discovery_chap``: the discovery
    CHAP user name, when discovery sessions must authenticate)."""
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
    env = ""
    chap = target.auth.chap if target.auth is not None else None
    if chap is not None:
        user = f"{chap.username}%SECRET@"
        if chap.mutual:
            env = f"LIBISCSI_CHAP_TARGET_USERNAME={chap.mutual_username} LIBISCSI_CHAP_TARGET_PASSWORD=TARGET_SECRET "
    discovery_user = user
    if discovery_chap is not None:
        discovery_user = f"{discovery_chap}%DISCOVERY_SECRET@"
    initiator = "" if target.open else f"-i {target.acl[0]} "
    lines += ["", "  Try it:", f"    {env}iscsi-ls -s {initiator}iscsi://{discovery_user}{address}"]
    if target.luns:
        first_lun = min(target.luns, key=lambda lun: lun.lun)
        first = first_lun.lun
        url = f"iscsi://{user}{address}/{target.name}/{first}"
        lines.append(f"    {env}iscsi-inq {initiator}{url}")
        if first_lun.backend not in TAPE_BACKENDS:  # a changer or tape drive has no capacity to read
            lines.append(f"    {env}iscsi-readcapacity16 {initiator}{url}")
        if first_lun.backend in TAPE_BACKENDS:
            pass
        elif target.open and chap is None:
            lines.append(f"    qemu-img info {url}")
        elif chap is None or not chap.mutual:  # QEMU has no mutual CHAP
            opts = f"driver=iscsi,transport=tcp,portal={address},target={target.name},lun={first}"
            if not target.open:
                opts += f",initiator-name={target.acl[0]}"
            if chap is not None:
                opts += f",user={chap.username},password=SECRET"
            lines.append(f"    qemu-img info --image-opts '{opts}'")
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
    libraries = [lun.library for lun in target.luns if lun.backend in TAPE_BACKENDS and lun.library]
    if any(lun.backend in TAPE_BACKENDS for lun in target.luns):
        lines += [
            "  Tape, from a Linux host logged in to it (modules st, ch, sg; packages mt-st, mtx, tar):",
            "    mtx -f /dev/sch0 status               # slots, drives, barcodes",
            "    mtx -f /dev/sch0 load 1 0             # slot 1 into drive 0",
            "    tar cvf /dev/nst0 -b 128 /etc         # an archive in 64 KiB blocks",
            "    mt -f /dev/nst0 tell; mt -f /dev/nst0 rewind; tar tvf /dev/nst0 -b 128",
            "    mt -f /dev/nst0 offline; mtx -f /dev/sch0 unload 1 0",
            "    mt -f /dev/nst0 load                  # after a target restart (drive holds it unloaded)",
        ]
        lines += [f"    cistern tape list -l {lib}" for lib in libraries[:1]]
    return lines


def connect_text(config: Config, bound: list[tuple[str, int]]) -> str:
    """Everything to print once the server listens."""
    discovery = (
        config.discovery_auth.chap.username if config.discovery_auth and config.discovery_auth.chap else None
    )
    blocks = ["\n".join(target_lines(target, bound, discovery)) for target in config.targets]
    if not blocks:
        blocks = ["No targets configured: discovery only."]
    return "\n\n".join(blocks) + "\n\nPress Ctrl-C to stop.\n"
