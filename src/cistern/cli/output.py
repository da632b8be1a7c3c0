"""Shared CLI output: logging setup (rich, to stderr) and how a bad config is reported."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console
from rich.logging import RichHandler

from cistern.config.model import ConfigError

#: exit status for a config that does not validate (the same as click's usage errors)
EXIT_BAD_CONFIG = 2


def setup_logging(verbose: int, config_level: str | None = None) -> None:
    """``-v`` -> INFO, ``-vv`` -> DEBUG; otherwise the config's log_level, else WARNING."""
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    elif config_level is not None:
        level = logging.getLevelName(config_level.upper())
    else:
        level = logging.WARNING
    handler = RichHandler(console=Console(file=sys.stderr), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)


def config_error_exit(ctx: click.Context, exc: ConfigError, path: object) -> None:
    """Print every issue of ``exc`` to stderr and exit with :data:`EXIT_BAD_CONFIG`."""
    click.echo(f"error: {path} is not a valid cistern config:", err=True)
    for issue in exc.issues:
        click.echo(f"  {issue}", err=True)
    ctx.exit(EXIT_BAD_CONFIG)
