"""Shared click option types and decorators for every ``cistern`` command module.

Every option is validated at parse time, so a hostile value (0, negative, huge, wrong type) is ONE
usage-error line and exit status 2 from click, never a traceback, hang or unbounded allocation later.

Types (use them as ``type=`` of ``click.option``):

- :class:`SizeType` (``SIZE``): bytes with K/M/G/T suffixes (binary, K = 1024), with a minimum, a
  maximum and an optional ``multiple_of``; returns ``int`` bytes.
- :class:`IscsiNameType` (``IQN``): an iSCSI name (RFC 7143 4.2.7), normalized.
- :class:`VpdPageType` (``PAGE``): a VPD page code as a number (``0x83``, ``131``) or a name
  (``device-id``, ``block-limits``... see :data:`VPD_PAGE_NAMES`); returns ``int``.
- ``DEPTH`` = ``click.IntRange(1, MAX_DEPTH)``, ``DURATION`` = seconds in (0, 1 day].

Decorators:

- :func:`verbose_option`: ``-v/--verbose`` accepted after the subcommand too; it adds to the group's
  count (``ctx.find_root().obj.verbose``), so ``cistern -v ls`` and ``cistern ls -v`` mean the same.
- :func:`json_option`: ``--json`` (a bool parameter named ``as_json``).
- :func:`yes_option` + :func:`confirm_or_refuse`: ``--yes`` for commands that overwrite data the user
  did not name as a destination; without it, ask on a terminal and refuse (exit 2) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cistern.config.names import normalize_iscsi_name
from cistern.config.sizes import format_size, parse_size

F = TypeVar("F", bound=Callable[..., Any])

#: commands in flight at most (a bound on memory: depth x chunk)
MAX_DEPTH = 1024
#: largest transfer unit of read/write/copy (one READ/WRITE of up to 64 MiB)
MAX_CHUNK = 64 << 20
#: largest byte offset or length of a transfer (LBAs are 64-bit; 2**63 bytes is far beyond any LUN)
MAX_OFFSET = (1 << 63) - 1
#: longest bench run, seconds
MAX_DURATION = 86400.0


class SizeType(click.ParamType):
    """Bytes from ``4096``, ``512K``, ``1M``, ``1.5G``; bounded and optionally aligned."""

    name = "SIZE"

    def __init__(self, minimum: int = 0, maximum: int | None = None, multiple_of: int | None = None) -> None:
        self.minimum, self.maximum, self.multiple_of = minimum, maximum, multiple_of

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        else:
            try:
                size = parse_size(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if size < self.minimum:
            self.fail(f"{value!r} is below the minimum of {format_size(self.minimum)}", param, ctx)
        if self.maximum is not None and size > self.maximum:
            self.fail(f"{value!r} is above the maximum of {format_size(self.maximum)}", param, ctx)
        if self.multiple_of and size % self.multiple_of:
            self.fail(f"{value!r} is not a multiple of {self.multiple_of} bytes", param, ctx)
        return size


class IscsiNameType(click.ParamType):
    """An iSCSI name (``iqn.YYYY-MM.domain[:x]``, ``eui.``, ``naa.``), returned normalized."""

    name = "IQN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return normalize_iscsi_name(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: VPD page names accepted by ``--vpd`` (SPC-4 7.8, SBC-3 6.6)
VPD_PAGE_NAMES = {
    "supported": 0x00,
    "serial": 0x80,
    "device-id": 0x83,
    "extended": 0x86,
    "third-party-copy": 0x8F,
    "block-limits": 0xB0,
    "block-characteristics": 0xB1,
    "lbp": 0xB2,
    "provisioning": 0xB2,
}


class VpdPageType(click.ParamType):
    """A VPD page code: a number 0..255 (decimal or 0x hex) or a name from :data:`VPD_PAGE_NAMES`."""

    name = "PAGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            code = value
        else:
            text = str(value).strip().lower()
            if text in VPD_PAGE_NAMES:
                return VPD_PAGE_NAMES[text]
            try:
                code = int(text, 0)
            except ValueError:
                names = ", ".join(VPD_PAGE_NAMES)
                self.fail(f"{value!r} is not a page number or one of: {names}", param, ctx)
        if not 0 <= code <= 0xFF:
            self.fail(f"{value!r} is not a page code in 0..255", param, ctx)
        return code


DEPTH = click.IntRange(1, MAX_DEPTH)
DURATION = click.FloatRange(0, MAX_DURATION, min_open=True)


def _add_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    root = ctx.find_root()
    if root.obj is not None and hasattr(root.obj, "verbose"):
        root.obj.verbose += value
        return int(root.obj.verbose)
    return value


def verbose_option(fn: F) -> F:
    """``-v/--verbose`` after the subcommand (adds to the group's ``-v``); not passed to ``fn``."""
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        is_eager=True,
        callback=_add_verbose,
        help="More detail: -v for info (and SCSI sense codes), -vv for debug.",
    )(fn)


def verbosity(ctx: click.Context | None = None) -> int:
    """The total ``-v`` count of this invocation (group and subcommand)."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return 0
    obj = ctx.find_root().obj
    return int(getattr(obj, "verbose", 0) or 0)


def json_option(fn: F) -> F:
    """``--json``: machine-readable output (schemas in docs/operations.md); parameter ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in docs/operations.md).")(
        fn
    )


def yes_option(fn: F) -> F:
    """``-y/--yes``: do not ask before overwriting data; parameter ``yes``."""
    return click.option("-y", "--yes", is_flag=True, help="Do not ask before overwriting data.")(fn)


def confirm_or_refuse(message: str, yes: bool) -> None:
    """Go on when ``yes``; ask on a terminal; refuse (usage error, exit 2) when stdin is not a terminal."""
    if yes:
        return
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        if click.confirm(f"{message} Continue?", default=False, err=True):
            return
        raise click.ClickException("cancelled; nothing was written")
    raise click.UsageError(f"{message} Pass --yes to confirm.")
