"""One-line error messages for the command line: SCSI status and sense in words, iSCSI and OS errors.

:func:`describe` turns any exception an initiator command can meet into one line a user can act on
(``the LUN is write-protected``, ``LUN 9 does not exist``, ``LBA 2097152 is beyond the end (capacity
2097152 blocks)``); with ``verbose`` the sense key and ASC/ASCQ follow in parentheses (SPC-4 4.5.6,
table of ASC/ASCQ assignments). :class:`Where` carries what the command was doing (LUN, LBA, capacity)
so the words can name it. :func:`fail` prints ``error: <line>`` to stderr and exits with status 1.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import NoReturn

import click

from cistern.cli.output import EXIT_FAILED, EXIT_MISCOMPARE
from cistern.initiator.errors import (
    AuthenticationError,
    ConnectionLost,
    IscsiError,
    LoginError,
    ReservationConflict,
    ScsiError,
    TargetBusy,
)
from cistern.initiator.sense import Sense


@dataclass(slots=True)
class Where:
    """What a command was addressing when it failed (all optional)."""

    lun: int | None = None
    lba: int | None = None
    capacity_blocks: int | None = None


class MiscompareError(Exception):
    """A ``--verify`` pass found different data (exit status :data:`EXIT_MISCOMPARE`)."""


# (sense key or None for any, ASC, ASCQ or None for any) -> words
_SENSE_WORDS: list[tuple[int | None, int, int | None, str]] = [
    (None, 0x25, 0x00, "{lun_name} does not exist"),
    (None, 0x27, None, "the LUN is write-protected"),
    (None, 0x21, 0x00, "{lba_words}"),
    (None, 0x20, 0x00, "the target does not support this command"),
    (None, 0x24, 0x00, "the target rejected a field of the command (invalid field in CDB)"),
    (None, 0x26, None, "the target rejected the parameter data"),
    (None, 0x1D, 0x00, "the data on the LUN differs (miscompare during verify)"),
    (None, 0x3A, None, "no medium is present"),
    (None, 0x04, None, "the LUN is not ready"),
    (None, 0x11, None, "unrecovered read error on the target's storage"),
    (None, 0x0C, None, "write error on the target's storage"),
    (None, 0x27, 0x07, "the LUN has run out of space"),
    (None, 0x29, None, "the target was reset (unit attention); retry"),
    (None, 0x2A, None, "the LUN's parameters changed (unit attention); retry"),
    (None, 0x3F, None, "the target's configuration changed (unit attention); retry"),
    (None, 0x47, None, "the data was damaged in transit (digest error)"),
]


def sense_words(sense: Sense, where: Where | None = None) -> str:
    """The sense data as words (``the LUN is write-protected``...), else its key name."""
    where = where or Where()
    lun_name = f"LUN {where.lun}" if where.lun is not None else "the LUN"
    if where.lba is not None and where.capacity_blocks is not None:
        lba_words = f"LBA {where.lba} is beyond the end (capacity {where.capacity_blocks} blocks)"
    elif sense.information is not None:
        lba_words = f"LBA {sense.information} is beyond the end of the LUN"
    else:
        lba_words = "the address is beyond the end of the LUN"
    for key, asc, ascq, words in sorted(_SENSE_WORDS, key=lambda r: r[2] is None):
        if (key is None or key == sense.key) and asc == sense.asc and (ascq is None or ascq == sense.ascq):
            return words.format(lun_name=lun_name, lba_words=lba_words)
    return f"the target answered {sense.key_name.lower()} (ASC/ASCQ 0x{sense.asc:02x}/0x{sense.ascq:02x})"


def describe(exc: BaseException, where: Where | None = None, verbose: int = 0) -> str:
    """One line for ``exc``; ``verbose`` adds sense codes and exception types."""
    if isinstance(exc, ScsiError) and exc.sense is not None:
        text = sense_words(exc.sense, where)
        if verbose:
            text += f" (sense: {exc.sense})"
        return text
    if isinstance(exc, ReservationConflict):
        return "another initiator holds a reservation on the LUN (RESERVATION CONFLICT)"
    if isinstance(exc, TargetBusy):
        return "the target is busy; retry later"
    if isinstance(exc, AuthenticationError | LoginError | ConnectionLost | IscsiError):
        return str(exc)
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNREFUSED:
            return "connection refused: no iSCSI target listens at that address"
        if exc.errno == errno.EPIPE:
            return "the output was closed before everything was written (broken pipe)"
        name = f"{exc.filename}: " if exc.filename else ""
        return f"{name}{exc.strerror or exc}"
    text = str(exc) or type(exc).__name__
    return f"{text} ({type(exc).__name__})" if verbose >= 2 else text


def fail(exc: BaseException, where: Where | None = None, verbose: int = 0) -> NoReturn:
    """Print ``error: <one line>`` to stderr and exit (1, or 3 for a miscompare)."""
    click.echo(f"error: {describe(exc, where, verbose)}", err=True)
    raise SystemExit(EXIT_MISCOMPARE if isinstance(exc, MiscompareError) else EXIT_FAILED)
