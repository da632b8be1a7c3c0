"""``cistern config check FILE`` (validate and summarize) and ``cistern config example``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cistern.cli.options import json_option, verbose_option
from cistern.cli.output import EXIT_BAD_CONFIG, config_error_exit, print_json, print_table, stdout_is_terminal
from cistern.config.example import EXAMPLE_TOML
from cistern.config.model import Config, ConfigError, TargetConfig, load_config
from cistern.config.sizes import human_size
from cistern.config.tape import TAPE_BACKENDS
from cistern.config.tape import describe as tape_describe

if TYPE_CHECKING:
    from rich.table import Table


def _access(target: TargetConfig) -> str:
    if target.open:
        return "open"
    return "\n".join(target.acl)


def _auth(target: TargetConfig) -> str:
    if target.auth is None or target.auth.chap is None:
        return "none"
    chap = target.auth.chap
    kind = (
        f"mutual CHAP ({chap.username} / {chap.mutual_username})"
        if chap.mutual
        else f"CHAP ({chap.username})"
    )
    return f"{kind}\n{', '.join(target.auth.chap_algorithms)}"


def _flags(target: TargetConfig, index: int) -> str:
    lun = target.luns[index]
    flags = [name for name in ("read_only", "thin", "removable") if getattr(lun, name)]
    return ", ".join(flags) or "-"


def summary_tables(config: Config) -> list[Table]:
    """Rich tables describing ``config``: targets, then LUNs."""
    from rich.table import Table  # when a table is drawn on a terminal, not in every serve/demo process

    targets = Table(title="Targets", show_lines=True)
    for column in ("Target", "Portals (TPGT)", "Access", "Auth", "LUNs"):
        targets.add_column(column, overflow="fold")
    for target in config.targets:
        name = target.name + (f"\n({target.alias})" if target.alias else "")
        portals = "\n".join(str(p) for p in target.portals) + f"\n(tpgt {target.tpgt})"
        targets.add_row(name, portals, _access(target), _auth(target), str(len(target.luns)))
    luns = Table(title="LUNs")
    for column in ("Target", "LUN", "Backend", "Size", "Block", "Path", "Flags"):
        luns.add_column(column, overflow="fold")
    for target in config.targets:
        for index, lun in enumerate(target.luns):
            size = human_size(lun.size) if lun.size is not None else "(device/file)"
            path = str(lun.path) if lun.path is not None else "-"
            block = str(lun.block_size)
            if lun.backend in TAPE_BACKENDS:
                size, block, path = tape_describe(lun), "-", str(lun.library or "-")
            if lun.raid is not None:
                size = f"RAID {lun.raid.level} of {len(lun.raid.members)} (+{len(lun.raid.spares)} spare)"
                path = "\n".join(str(p) for p in lun.raid.members)
            luns.add_row(target.name, str(lun.lun), lun.backend, size, block, path, _flags(target, index))
    return [targets, luns]


@click.group("config")
@verbose_option
def config_group() -> None:
    """Check and write cistern configuration files."""


def summary_json(config: Config) -> dict[str, Any]:
    """The ``config check --json`` object (schema in docs/operations.md); secrets are never included."""
    targets = []
    for target in config.targets:
        chap = target.auth.chap if target.auth is not None else None
        targets.append(
            {
                "name": target.name,
                "alias": target.alias,
                "portals": [str(p) for p in target.portals],
                "tpgt": target.tpgt,
                "open": target.open,
                "acl": list(target.acl),
                "chap_user": chap.username if chap is not None else None,
                "mutual_chap_user": chap.mutual_username if chap is not None and chap.mutual else None,
                "luns": [
                    {
                        "lun": lun.lun,
                        "backend": lun.backend,
                        "size_bytes": lun.size,
                        "block_size": lun.block_size,
                        "path": str(lun.path) if lun.path is not None else None,
                        "read_only": lun.read_only,
                        "thin": lun.thin,
                        "removable": lun.removable,
                    }
                    for lun in target.luns
                ],
            }
        )
    return {"targets": targets}


def _plain_summary(config: Config) -> None:
    rows = []
    for target in config.targets:
        rows.append(
            [
                target.name,
                target.alias or "-",
                " ".join(str(p) for p in target.portals) + f" (tpgt {target.tpgt})",
                _access(target).replace("\n", " "),
                _auth(target).replace("\n", "; "),
                str(len(target.luns)),
            ]
        )
    print_table(("Target", "Alias", "Portals", "Access", "Auth", "LUNs"), rows, title="Targets")
    rows = []
    for target in config.targets:
        for index, lun in enumerate(target.luns):
            size = human_size(lun.size) if lun.size is not None else "(device/file)"
            path = str(lun.path) if lun.path is not None else "-"
            block = str(lun.block_size)
            if lun.backend in TAPE_BACKENDS:
                size, block, path = tape_describe(lun), "-", str(lun.library or "-")
            rows.append([target.name, str(lun.lun), lun.backend, size, block, path, _flags(target, index)])
    print_table(("Target", "LUN", "Backend", "Size", "Block", "Path", "Flags"), rows, title="LUNs")


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--no-path-checks",
    is_flag=True,
    help="Skip checks of backing files/devices, free space and memory (for a config meant for another host).",
)
@json_option
@verbose_option
@click.pass_context
def check(ctx: click.Context, file: Path, no_path_checks: bool, as_json: bool) -> None:
    """Validate FILE and print a summary of its targets and LUNs (exit 2 when it is not valid).

    Besides the values, checks what `serve` will meet on this host: backing paths, sizes of existing
    files and devices, free space for thick files, memory for memory LUNs.
    """
    try:
        config = load_config(file, check_paths=not no_path_checks)
    except ConfigError as exc:
        if as_json:
            print_json({"file": str(file), "valid": False, "issues": [str(i) for i in exc.issues]})
            ctx.exit(EXIT_BAD_CONFIG)
        config_error_exit(ctx, exc, file)
        return
    n_luns = sum(len(t.luns) for t in config.targets)
    if as_json:
        print_json({"file": str(file), "valid": True, "issues": [], **summary_json(config)})
        return
    if config.targets:
        if stdout_is_terminal():
            from rich.console import Console

            console = Console()
            for table in summary_tables(config):
                console.print(table)
        else:
            _plain_summary(config)
    click.echo(f"OK: {file} is valid ({len(config.targets)} target(s), {n_luns} LUN(s))")


@config_group.command("example")
def example() -> None:
    """Print an annotated example configuration (TOML)."""
    click.echo(EXAMPLE_TOML, nl=False)
