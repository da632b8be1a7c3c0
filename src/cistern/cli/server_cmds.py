"""``cistern demo`` (a one-minute target) and ``cistern serve --config FILE``: build or load a config,
print how to connect once the server listens, and run until SIGINT/SIGTERM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cistern.cli import runner
from cistern.cli.connect_help import connect_text
from cistern.cli.options import verbose_option
from cistern.cli.output import config_error_exit, setup_logging_from
from cistern.config.demo import default_data_dir, demo_config
from cistern.config.model import Config, ConfigError, load_config
from cistern.config.portals import Portal
from cistern.config.sizes import format_size, human_size, parse_size


def _portal(ctx: click.Context, param: click.Parameter, value: str) -> Portal:
    try:
        return Portal.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if size < 512 or size % 512:
        raise click.BadParameter(f"{value!r} must be a positive multiple of 512 bytes")
    return size


def ensure_sparse_file(path: Path, size: int) -> None:
    """Create ``path`` as a sparse file of ``size`` bytes, or grow a smaller one; never shrink."""
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        current = os.fstat(fd).st_size
        if current > size:
            raise click.ClickException(
                f"{path} is {human_size(current)}, larger than --size {human_size(size)}: "
                f"pass --size {format_size(current)} or remove the file"
            )
        if current < size:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                if created:
                    path.unlink()  # no empty file left behind
                raise click.ClickException(
                    f"cannot make {path} {human_size(size)} long: {exc.strerror}"
                ) from None
    finally:
        os.close(fd)


def _run(config: Config) -> None:
    def on_ready(bound: list[tuple[str, int]]) -> None:
        click.echo(connect_text(config, bound), nl=False)
        sys.stdout.flush()  # a pipe or a log file sees the connect text now, not at exit

    try:
        runner.run_server(config, on_ready=on_ready)
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("cistern."):
            raise
        raise click.ClickException(f"the target server is not available in this build: {exc}") from None
    except (OSError, ValueError) as exc:  # cannot bind a portal, cannot open a backing store
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        raise click.ClickException(f"cannot serve: {text}") from None


@click.command()
@click.option(
    "--portal", default="127.0.0.1:3260", show_default=True, callback=_portal, help="Listen on HOST:PORT."
)
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the LUN file lives [default: $XDG_DATA_HOME/cistern or ~/.local/share/cistern].",
)
@click.option("--size", default="1G", show_default=True, callback=_size, help="LUN size (bytes or K/M/G/T).")
@click.option(
    "--tape", is_flag=True, help="Also serve a tape library: one changer, two drives, eight cartridges."
)
@verbose_option
@click.pass_context
def demo(ctx: click.Context, portal: Portal, data_dir: Path | None, size: int, tape: bool) -> None:
    """Serve a demo target (iqn.2026-11.org.cistern:demo, open, one sparse file LUN) and show how to use it."""
    directory = data_dir if data_dir is not None else default_data_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        config = demo_config(portal, directory, size, tape=tape)
        lun_path = config.targets[0].luns[0].path
        assert lun_path is not None
        ensure_sparse_file(lun_path, size)
    except OSError as exc:
        raise click.ClickException(f"cannot prepare {directory}: {exc}") from None
    setup_logging_from(ctx, config.log_level)
    _run(config)


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file.",
)
@verbose_option
@click.pass_context
def serve(ctx: click.Context, config_path: Path) -> None:
    """Serve the targets described in a config file until SIGINT/SIGTERM.

    Logs go to stderr (plain ISO-8601 lines unless stderr is a terminal; journald priorities under
    systemd), or to --log-file. Under systemd Type=notify, READY=1 is sent once every portal listens.
    See docs/operations.md for the unit file, signals and exit codes.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        config_error_exit(ctx, exc, config_path)
        return
    setup_logging_from(ctx, config.log_level)
    _run(config)
