"""The targets the initiator's integration tests run against (issue 4, "must show" 1 and 2).

One small adapter per target gives the tests what they need without knowing which target is behind it:
the URLs, the disk's LUN and size, how to turn on CHAP (one-way and mutual, RFC 7143 section 12.1.3) and
digests (section 13.1), whether the target still holds a session, how to freeze the target process
(SIGSTOP) for the dead-target test, and what INQUIRY / REPORT LUNS must answer there.

- :class:`TgtUnderTest`: tgt 1.0.85 (a target we did not write) administered with ``tgtadm``; LUN 0 is
  its controller (peripheral device type 0x0C) and the disk is LUN 1, vendor ``IET``.
- :class:`CisternUnderTest`: our own target as a ``cistern serve`` process (``cistern_proc``); the disk
  is a RAM LUN 0, vendor ``CISTERN``.  The process lives for a whole test module; a test that changes
  its configuration (CHAP) restarts it with the new config, and :meth:`CisternUnderTest.reset` puts the
  open configuration back afterwards.
"""

from __future__ import annotations

import abc
import os
import signal
import time
from pathlib import Path

import peers
from cistern_proc import CisternTarget, lun_toml, target_toml

from cistern.wire.constants import TmfResponse

HOST = "127.0.0.1"


def established_peer_ports(pid: int, local_port: int) -> set[int]:
    """Remote ports of the ESTABLISHED IPv4 TCP connections process ``pid`` holds on ``local_port``."""
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        try:
            link = os.readlink(entry)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    found: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "01" or int(fields[9]) not in inodes:  # 01 = TCP_ESTABLISHED
            continue
        if int(fields[1].split(":")[1], 16) == local_port:
            found.add(int(fields[2].split(":")[1], 16))
    return found


class DiskUnderTest(abc.ABC):
    """One target with one scratch disk, as the initiator tests see it."""

    kind: str
    iqn: str
    lun: int
    size: int
    #: what REPORT LUNS lists, the LUN of a SCSI controller (or None), INQUIRY's T10 vendor and product
    luns: list[int]
    controller_lun: int | None
    vendor: str
    product: str
    #: the answers ABORT TASK of a write whose R2T is held may get on this target
    abort_responses: frozenset[int]

    @property
    @abc.abstractmethod
    def port(self) -> int: ...

    @property
    @abc.abstractmethod
    def pid(self) -> int: ...

    @property
    def portal_url(self) -> str:
        return peers.iscsi_url(HOST, self.port)

    @property
    def url(self) -> str:
        return peers.iscsi_url(HOST, self.port, self.iqn, self.lun)

    def url_as(self, user: str, secret: str, port: int | None = None) -> str:
        """The disk's URL with CHAP credentials in it (libiscsi style), optionally through another port."""
        return peers.iscsi_url(HOST, port or self.port, self.iqn, self.lun, user, secret)

    def url_via(self, port: int) -> str:
        """The disk's URL through another port (a proxy in front of the target)."""
        return peers.iscsi_url(HOST, port, self.iqn, self.lun)

    @abc.abstractmethod
    def enable_chap(self, user: str, secret: str, mutual: tuple[str, str] | None = None) -> None:
        """Require CHAP as ``user``/``secret`` from now on; ``mutual`` is the target's own name and secret."""

    @abc.abstractmethod
    def enable_digests(self) -> None:
        """Make the target accept CRC32C for HeaderDigest and DataDigest."""

    @abc.abstractmethod
    def tune_for_streaming(self) -> None:
        """MaxRecvDataSegmentLength 256 KiB on the target's side, for the large transfer tests."""

    @abc.abstractmethod
    def holds_session(self, initiator_name: str) -> bool:
        """Whether the target currently holds a session of ``initiator_name``."""

    def freeze(self) -> None:
        """Stop the target process (SIGSTOP): it keeps its sockets but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def wait_session_gone(self, initiator_name: str, timeout: float = 3.0) -> bool:
        """True once the target no longer holds a session of ``initiator_name`` (polled)."""
        deadline = time.monotonic() + timeout
        while self.holds_session(initiator_name):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


class TgtUnderTest(DiskUnderTest):
    kind = "tgt"
    luns = [0, 1]
    controller_lun = 0
    vendor = "IET"
    product = "VIRTUAL-DISK"
    # tgt 1.0.85 answers TASK DOES NOT EXIST for a write still waiting for its Data-Out (the task has
    # not reached its SCSI layer yet), FUNCTION COMPLETE otherwise
    abort_responses = frozenset({TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST})

    def __init__(self, disk: peers.TgtDisk) -> None:
        self.disk = disk
        self.tgt = disk.tgt
        self.iqn, self.lun, self.size = disk.iqn, disk.lun, disk.size

    @property
    def port(self) -> int:
        assert self.tgt.port is not None
        return self.tgt.port

    @property
    def pid(self) -> int:
        return self.tgt.pid

    def enable_chap(self, user: str, secret: str, mutual: tuple[str, str] | None = None) -> None:
        self.tgt.add_chap(self.disk.tid, user, secret)
        if mutual is not None:
            self.tgt.add_chap(self.disk.tid, *mutual, outgoing=True)

    def enable_digests(self) -> None:
        self.tgt.set_param(self.disk.tid, "HeaderDigest", "CRC32C")
        self.tgt.set_param(self.disk.tid, "DataDigest", "CRC32C")

    def tune_for_streaming(self) -> None:
        self.tgt.set_param(self.disk.tid, "MaxRecvDataSegmentLength", 262144)

    def holds_session(self, initiator_name: str) -> bool:
        return f"Initiator: {initiator_name}" in self.tgt.show()


class CisternUnderTest(DiskUnderTest):
    """``cistern serve`` with one open target and a RAM disk at LUN 0; restarted to change its config."""

    kind = "cistern"
    luns = [0]
    controller_lun = None
    vendor = "CISTERN"
    product = "cistern disk"
    # our target finds a write waiting for Data-Out in its task table and aborts it (RFC 7143 11.5.1)
    abort_responses = frozenset({TmfResponse.FUNCTION_COMPLETE})

    def __init__(self, iqn: str, size: int, workdir: Path, log_path: Path) -> None:
        self.iqn, self.lun, self.size = iqn, 0, size
        self._port = peers.free_port(HOST)
        self._workdir = workdir
        self._log_path = log_path
        self._chap: tuple[str, str] | None = None
        self._mutual: tuple[str, str] | None = None
        self._proc: CisternTarget | None = None
        self._log_mark = 0

    def _config(self) -> str:
        luns = lun_toml(0, "memory", size=f"{self.size // (1024 * 1024)}M")
        return target_toml(self.iqn, self._port, luns, chap=self._chap, mutual=self._mutual)

    def start(self) -> None:
        self._proc = CisternTarget(self._config(), self._workdir, self._log_path, port=self._port)
        self._proc.start()

    def stop(self) -> None:
        if self._proc is not None:
            self.thaw_if_stopped()
            self._proc.stop()
            self._proc = None

    def _restart(self) -> None:
        self.stop()
        self.start()

    def thaw_if_stopped(self) -> None:
        proc = self._proc.proc if self._proc is not None else None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)

    def mark(self) -> None:
        """Remember where the log ends, for :meth:`reset`'s check of what a test made the target say."""
        self._log_mark = self._log_path.stat().st_size if self._log_path.exists() else 0

    def reset(self) -> None:
        """Back to the open configuration (no CHAP) if a test changed it; a stopped process is resumed.

        Raises AssertionError when the process died during the test or logged a traceback or an ERROR
        (a target bug the test itself might not see); the process is restarted first either way."""
        self.thaw_if_stopped()
        proc = self._proc.proc if self._proc is not None else None
        died = proc is None or proc.poll() is not None
        with open(self._log_path, "rb") as fh:
            fh.seek(self._log_mark)
            said = fh.read().decode(errors="replace")
        if died or self._chap is not None or self._mutual is not None:
            self._chap = self._mutual = None
            self._restart()
        assert not died, f"cistern serve died during the test: {said[-2000:]}"
        bad = [line for line in said.splitlines() if "Traceback" in line or " ERROR " in line]
        assert not bad, f"cistern logged {bad[:3]} during the test; see {self._log_path}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        assert self._proc is not None and self._proc.proc is not None
        return self._proc.proc.pid

    @property
    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace")

    def enable_chap(self, user: str, secret: str, mutual: tuple[str, str] | None = None) -> None:
        self._chap, self._mutual = (user, secret), mutual
        self._restart()

    def enable_digests(self) -> None:
        """Nothing to do: cistern offers CRC32C for both digests by default (TargetLimits); the tests
        check it was really negotiated."""

    def tune_for_streaming(self) -> None:
        """Nothing to do: cistern's default MaxRecvDataSegmentLength is already 256 KiB."""

    def holds_session(self, initiator_name: str) -> bool:
        """cistern has no admin API listing sessions yet; at ErrorRecoveryLevel 0 one of its sessions lives
        exactly as long as its connection (``Server.connection_closed``), so an ESTABLISHED connection on
        the portal stands for it.  The tests run one session at a time, so the name is not needed."""
        return bool(established_peer_ports(self.pid, self._port))
