"""Shared CLI output: logging setup, tables and JSON for scripts, and how a bad config is reported.

Logging (:func:`setup_logging`), chosen by where stderr goes:

- a terminal: rich's handler (colours, wrapping), timestamps with the date;
- not a terminal (a pipe, a file, ``--log-file``): one plain line per record, never wrapped,
  ``2026-11-29T18:30:00.123+00:00 WARNING cistern.target.login_glue: message`` (ISO 8601);
- under systemd (``JOURNAL_STREAM`` names our stderr): ``<4>message`` lines, the sd-daemon(3)
  priority prefix journald understands, no timestamp (the journal adds its own);
- ``--log-format json``: one JSON object per line, ``{"time", "level", "logger", "message"}`` plus
  ``"session"``/``"peer"`` when the record carries them.

Repeated records that carry ``extra={"rate_key": ...}`` (a failed login from one address, say) pass
:class:`RateLimitFilter`: the first :data:`RATE_BURST` per :data:`RATE_WINDOW` seconds and key are
written, the rest counted and summarised in the next line written for that key.

Tables and JSON (:func:`print_table`, :func:`print_json`): a rich table on a terminal, and aligned
plain text with full, untruncated values when stdout is a pipe or a file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import click

from cistern.config.model import ConfigError

#: exit status for a config that does not validate (the same as click's usage errors)
EXIT_BAD_CONFIG = 2
#: exit status of a failed operation (I/O, SCSI or iSCSI error, refused login...)
EXIT_FAILED = 1
#: exit status of a verify that found different data
EXIT_MISCOMPARE = 3
#: exit status after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 130

LOG_FORMATS = ("text", "json")
RATE_WINDOW = 60.0
RATE_BURST = 5
_MAX_RATE_KEYS = 1024
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def iso_time(created: float) -> str:
    """ISO 8601 local time with the UTC offset and milliseconds."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


class PlainFormatter(logging.Formatter):
    """``<ISO time> <LEVEL> <logger>: <message>`` on one line (embedded newlines escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        text = text.replace("\n", "\\n")
        return f"{iso_time(record.created)} {record.levelname} {record.name}: {text}"


class JournalFormatter(logging.Formatter):
    """``<N>message``: the sd-daemon(3) priority prefix; journald timestamps the line itself."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = record.getMessage().replace("\n", "\\n")
        return f"<{prio}>{record.name}: {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ session, peer when given)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session", "peer", "initiator", "target"):
            value = getattr(record, key, None)
            if value is not None:
                obj[key] = str(value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


class RateLimitFilter(logging.Filter):
    """Lets through :data:`RATE_BURST` records per key per :data:`RATE_WINDOW` seconds, then counts.

    Only records with a ``rate_key`` attribute are limited. The first record written after a window in
    which some were dropped says how many (``(N similar messages suppressed)``). Memory is bounded:
    at most 1024 keys are remembered (oldest forgotten first).
    """

    def __init__(self, window: float = RATE_WINDOW, burst: int = RATE_BURST) -> None:
        super().__init__()
        self.window, self.burst = window, burst
        self._state: OrderedDict[Any, list[float]] = OrderedDict()  # key -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = getattr(record, "rate_key", None)
        if key is None:
            return True
        now = time.monotonic()
        state = self._state.get(key)
        if state is None or now - state[0] >= self.window:
            dropped = int(state[2]) if state is not None else 0
            self._state[key] = [now, 1, 0]
            self._state.move_to_end(key)
            while len(self._state) > _MAX_RATE_KEYS:
                self._state.popitem(last=False)
            if dropped:
                record.msg = f"{record.msg} ({dropped} similar messages suppressed in the last window)"
            return True
        state[1] += 1
        if state[1] <= self.burst:
            return True
        if state[1] == self.burst + 1:
            record.msg = f"{record.msg} (more like this from {key} are summarised every {self.window:.0f} s)"
            return True
        state[2] += 1
        return False


def _journal_stderr() -> bool:
    """True when systemd connected our stderr to the journal (``JOURNAL_STREAM=dev:inode``)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(
    verbose: int,
    config_level: str | None = None,
    *,
    log_file: str | os.PathLike[str] | None = None,
    log_format: str = "text",
) -> None:
    """``-v`` -> INFO, ``-vv`` -> DEBUG; otherwise the config's log_level, else WARNING.

    Where and how records are written is described in the module docstring; raises ``OSError`` when
    ``log_file`` cannot be opened.
    """
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    elif config_level is not None:
        level = logging.getLevelName(config_level.upper())
    else:
        level = logging.WARNING
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    elif log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif _journal_stderr():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
    elif _isatty(sys.stderr):
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=sys.stderr), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PlainFormatter())
    handler.addFilter(RateLimitFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def setup_logging_from(ctx: click.Context | None, config_level: str | None = None) -> None:
    """:func:`setup_logging` with the group's ``-v``, ``--log-file`` and ``--log-format``; a log file
    that cannot be opened is a usage error (exit 2)."""
    obj = ctx.find_root().obj if ctx is not None else None
    try:
        setup_logging(
            int(getattr(obj, "verbose", 0) or 0),
            config_level,
            log_file=getattr(obj, "log_file", None),
            log_format=getattr(obj, "log_format", "text"),
        )
    except OSError as exc:
        raise click.UsageError(f"cannot open the log file: {exc.strerror} ({exc.filename})") from None


def stdout_is_terminal() -> bool:
    return _isatty(click.get_text_stream("stdout"))


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout."""
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    """A rich table on a terminal; aligned plain columns with full values otherwise."""
    if stdout_is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    if title:
        click.echo(title)
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def config_error_exit(ctx: click.Context, exc: ConfigError, path: object) -> None:
    """Print every issue of ``exc`` to stderr and exit with :data:`EXIT_BAD_CONFIG`."""
    click.echo(f"error: {path} is not a valid cistern config:", err=True)
    for issue in exc.issues:
        click.echo(f"  {issue}", err=True)
    ctx.exit(EXIT_BAD_CONFIG)
