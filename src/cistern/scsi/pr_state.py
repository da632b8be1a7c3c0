"""APTPL: persistent reservation state that survives a target restart (SPC-4 5.13.5, PTPL_C / APTPL).

When the last REGISTER / REGISTER AND IGNORE EXISTING KEY / REGISTER AND MOVE carried APTPL=1, every
state change is written to a small JSON file before the command completes: written to a temporary
file in the same directory, fsync'd, renamed over the old file, and the directory fsync'd, so a crash
leaves either the old or the new state, never a torn one.  With APTPL=0 the file is removed and the
state is lost at the next restart, as the standard asks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .pr import PersistentReservations


class PrStateFile:
    """The state file of one LU's persistent reservations."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> PersistentReservations | None:
        """The saved state, or None when there is none; ValueError names a corrupt file."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            pr = PersistentReservations.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.path}: unreadable persistent reservation state: {exc}") from None
        return pr if pr.aptpl else None

    def save(self, state: dict[str, Any]) -> None:
        """Atomically replace the file with ``state`` (temp file + fsync + rename + fsync dir)."""
        data = json.dumps(state, indent=1, sort_keys=True).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_dir()

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
