"""The ``cistern`` command: a click group holding the target-side commands (demo, serve, config) and,
when :mod:`cistern.cli.initiator_cmds` exists, the initiator commands it registers.

Contract for that module: ``def register(group: click.Group) -> None`` adds its commands to the group.
The modules of :data:`COMMAND_MODULES` register when a command other than the built-in ones is looked up
or the commands are listed (``--help``), not at import: ``cistern serve``/``demo`` then run without
importing the initiator, tape, RAID, admin-client and TLS commands (about 4 MiB of RSS a long-running
server would keep for nothing; bench/RESULTS.md, "Idle memory, third session").
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import click

from cistern import __version__, accel
from cistern.cli.config_cmds import config_group
from cistern.cli.output import LOG_FORMATS
from cistern.cli.server_cmds import demo, serve

log = logging.getLogger(__name__)


@dataclass
class CliState:
    """What the group passes to its commands (``ctx.obj``)."""

    verbose: int = 0
    log_file: str | None = None
    log_format: str = "text"


class _Group(click.Group):
    """The ``cistern`` group: registers :data:`COMMAND_MODULES` on the first lookup it cannot answer
    from the built-in commands, and before listing them."""

    registered = False

    def _register_all(self) -> None:
        if not self.registered:
            self.registered = True
            for module in COMMAND_MODULES:
                register_optional(self, module)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._register_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._register_all()
        return super().list_commands(ctx)


@click.group("cistern", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    "-V",
    "--version",
    prog_name="cistern",
    message=f"%(prog)s, version %(version)s; hot path: {accel.describe()}",
)
@click.option(
    "-v", "--verbose", count=True, help="More logging: -v for info, -vv for debug (also after the command)."
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Append log records to this file instead of stderr (plain or JSON lines, never wrapped).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="text: rich on a terminal, one plain ISO-8601-stamped line otherwise; json: one object per line.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, log_file: str | None, log_format: str) -> None:
    """cistern: an iSCSI target, initiator and storage system in Python.

    Exit status: 0 success, 1 the operation failed, 2 bad usage or config, 3 verify found different
    data, 130 interrupted (Ctrl-C). See docs/operations.md.
    """
    ctx.obj = CliState(verbose=verbose, log_file=log_file, log_format=log_format)


cli.add_command(demo)
cli.add_command(serve)
cli.add_command(config_group)


def register_optional(group: click.Group, module_name: str = "cistern.cli.initiator_cmds") -> bool:
    """Let ``module_name`` add its commands; a missing module is fine, a broken one is reported."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return False
        log.warning("%s is not available: %s", module_name, exc)
        return False
    except ImportError as exc:
        log.warning("%s is not available: %s", module_name, exc)
        return False
    module.register(group)
    return True


#: Modules that add command groups of their own (each defines ``register(group)``): one line per
#: area, so areas can grow their commands without touching this file's logic.
COMMAND_MODULES = (
    "cistern.cli.initiator_cmds",
    "cistern.cli.tape_cmds",
    "cistern.cli.raid_cmds",
    "cistern.cli.admin_cmds",
    "cistern.cli.tls_cmds",
)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cistern")
