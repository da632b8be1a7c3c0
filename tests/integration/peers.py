"""Drive real iSCSI peers from tests and the benchmark: tgt, the libiscsi tools and QEMU.

Plain functions and classes, no pytest fixtures, so that ``bench/compare.py`` and any test can use
them. What they encode was learned by running the peers (see docs/PEERS.md in the shared notes):

* ``tgtd`` silently falls back to ``0.0.0.0:3260`` when it cannot bind the portal it was given,
  ignores SIGTERM, and exposes LUN 0 as a controller (peripheral device type 0x0c): disks start at
  LUN 1.
* ``iscsi-test-cu`` reports a skipped test as a CUnit *pass* printed ``[SKIPPED]``; only its verbose
  text output tells skips apart, so :func:`parse_cunit_output` reads that text.

Every process started here is stopped by its own PID (or its own new session's process group),
never by name. URLs follow libiscsi's form ``iscsi://[user%secret@]host:port/IQN/LUN``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

INSTALL_HINT = "run `sudo bash scripts/install-test-deps.sh` from the repository root"

Verdict = Literal["PASS", "SKIP", "FAIL"]
_VERDICT_RANK: dict[str, int] = {"PASS": 0, "SKIP": 1, "FAIL": 2}


class PeerError(RuntimeError):
    """A real peer could not be used as the test expected."""


class PeerToolMissing(PeerError):
    """An external program the test needs is not installed."""


class PeerCommandError(PeerError):
    """A peer program exited non-zero or timed out; carries everything it printed."""

    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: str, stderr: str, note: str = ""):
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = note or f"exit status {returncode}"
        super().__init__(
            f"{' '.join(self.cmd)}: {status}\n--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


# --------------------------------------------------------------------------------------------------
# Programs, ports and sockets


def require_tool(name: str) -> str:
    """Return the absolute path of program ``name`` or fail with the install hint."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise PeerToolMissing(f"`{name}` is not installed; {INSTALL_HINT}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the caller must tolerate a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on ``host:port``; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.1f}s") from exc
            time.sleep(0.05)


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for entry in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _decode_proc_addr(hex_addr: str, ipv6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if not ipv6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 prints four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process ``pid`` listens on, read from /proc/net/tcp{,6}."""
    inodes = _socket_inodes(pid)
    found: set[tuple[str, int]] = set()
    for table, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != "0A":  # 0A = TCP_LISTEN
                    continue
                if int(fields[9]) not in inodes:
                    continue
                addr_hex, port_hex = fields[1].split(":")
                found.add((_decode_proc_addr(addr_hex, ipv6), int(port_hex, 16)))
    return found


# --------------------------------------------------------------------------------------------------
# One-shot commands


def run(
    cmd: Sequence[str],
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion; raise :class:`PeerCommandError` with its output on failure or timeout."""
    require_tool(cmd[0])
    full_env = {**os.environ, **env} if env else None
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise PeerCommandError(cmd, None, out, err, note=f"timed out after {timeout:.0f}s") from exc
    if check and done.returncode != 0:
        raise PeerCommandError(cmd, done.returncode, done.stdout, done.stderr)
    return done


def iscsi_url(
    host: str,
    port: int,
    iqn: str | None = None,
    lun: int | None = None,
    user: str | None = None,
    secret: str | None = None,
) -> str:
    """libiscsi URL ``iscsi://[user%secret@]host:port[/IQN[/LUN]]``."""
    cred = f"{user}%{secret}@" if user is not None and secret is not None else ""
    url = f"iscsi://{cred}{host}:{port}"
    if iqn is not None:
        url += f"/{iqn}"
        if lun is not None:
            url += f"/{lun}"
    return url


def chap_env(
    user: str, secret: str, target_user: str | None = None, target_secret: str | None = None
) -> dict[str, str]:
    """Environment for libiscsi tools: CHAP, plus mutual CHAP when the target's credentials are given."""
    env = {"LIBISCSI_CHAP_USERNAME": user, "LIBISCSI_CHAP_PASSWORD": secret}
    if target_user is not None and target_secret is not None:
        env["LIBISCSI_CHAP_TARGET_USERNAME"] = target_user
        env["LIBISCSI_CHAP_TARGET_PASSWORD"] = target_secret
    return env


def iscsi_ls(
    url: str, *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``iscsi-ls [args] URL`` (discovery; ``-s`` also lists LUNs with their sizes)."""
    return run(["iscsi-ls", *args, url], timeout=timeout, env=env)


def iscsi_inq(
    url: str, *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``iscsi-inq [args] URL`` (standard INQUIRY, or a VPD page with ``-e 1 -c PAGE``)."""
    return run(["iscsi-inq", *args, url], timeout=timeout, env=env)


def iscsi_readcapacity16(
    url: str, *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``iscsi-readcapacity16 [args] URL``."""
    return run(["iscsi-readcapacity16", *args, url], timeout=timeout, env=env)


def qemu_img(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``qemu-img ARGS`` (e.g. ``info``, ``convert``, ``bench``; iscsi:// through qemu-block-extra)."""
    return run(["qemu-img", *args], timeout=timeout)


def qemu_io(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``qemu-io ARGS``; note qemu-io exits 0 even when a ``-c`` command fails: check its output."""
    return run(["qemu-io", *args], timeout=timeout)


# --------------------------------------------------------------------------------------------------
# tgt, the reference target

_TGT_SOCKET_DIR = Path("/var/run/tgtd")


def _control_socket_in_use(control: int) -> bool:
    path = _TGT_SOCKET_DIR / f"socket.{control}"
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False  # a stale socket file from a tgtd that is gone
        return True


class Tgt:
    """One private ``tgtd`` listening on exactly ``host:port``, managed through its own control socket.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Targets are created with
    :meth:`new_target`; disks start at LUN 1 because tgt puts a controller at LUN 0.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self.start_timeout = start_timeout
        self.control: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.tids: list[int] = []
        self._ram_files: list[Path] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Tgt:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pick_control(self, attempt: int) -> int:
        base = (os.getpid() * 131 + attempt * 7919 + time.monotonic_ns() // 1000) % 31000 + 1000
        for offset in range(1000):
            control = (base + offset) % 31000 + 1000
            if not _control_socket_in_use(control):
                return control
        raise PeerError("no free tgtd control socket number")

    def start(self, attempts: int = 3) -> None:
        """Start tgtd; retry on a fresh port and control number if it cannot bind exactly the portal."""
        tgtd = require_tool("tgtd")
        require_tool("tgtadm")
        fixed_port = self.port
        last_error = ""
        for attempt in range(attempts):
            port = fixed_port if fixed_port is not None else free_port(self.host)
            control = self._pick_control(attempt)
            with contextlib.ExitStack() as stack:
                log = stack.enter_context(open(self.log_path, "ab")) if self.log_path else subprocess.DEVNULL
                proc = subprocess.Popen(
                    [tgtd, "-f", "-C", str(control), "--iscsi", f"portal={self.host}:{port}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.proc, self.port, self.control = proc, port, control
            error = self._await_listening()
            if error is None:
                return
            last_error = error
            self._kill()
        raise PeerError(f"tgtd did not start on {self.host}:{self.port}: {last_error}")

    def _await_listening(self) -> str | None:
        """None when tgtd listens on exactly the portal and answers tgtadm; else why not."""
        assert self.proc is not None
        want = {(self.host, self.port)}
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"tgtd exited with status {self.proc.returncode} (see {self.log_path})"
            got = listening_addresses(self.proc.pid)
            if got and got != want:
                return f"tgtd listens on {sorted(got)} instead of only {self.host}:{self.port}"
            if got == want:
                probe = self.tgtadm("--mode", "system", "--op", "show", check=False, lld=False)
                if probe.returncode == 0:
                    return None
            time.sleep(0.05)
        return f"tgtd not ready after {self.start_timeout:.0f}s"

    def stop(self, timeout: float = 10.0) -> None:
        """Delete our targets, ask tgtd to exit, SIGKILL our own PID if it lingers; remove RAM files."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            for tid in list(self.tids):
                self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(tid), check=False)
            self.tgtadm("--mode", "system", "--op", "delete", check=False, lld=False)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self.tids.clear()
        self.proc = None
        for path in self._ram_files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._ram_files.clear()

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PeerError("tgtd is not running")
        return self.proc.pid

    # -- administration --------------------------------------------------------------------------

    def tgtadm(
        self, *args: str, check: bool = True, lld: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """``tgtadm -C N [--lld iscsi] ARGS`` against this tgtd."""
        if self.control is None:
            raise PeerError("tgtd is not running")
        cmd = ["tgtadm", "-C", str(self.control)]
        if lld:
            cmd += ["--lld", "iscsi"]
        return run([*cmd, *args], timeout=timeout, check=check)

    def new_target(self, iqn: str, tid: int | None = None) -> int:
        """Create target ``iqn``; return its TID."""
        tid = tid if tid is not None else (max(self.tids, default=0) + 1)
        self.tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "-T", iqn)
        self.tids.append(tid)
        return tid

    def add_lun(self, tid: int, lun: int, path: Path | str, bstype: str = "rdwr") -> None:
        """Attach backing store ``path`` as ``lun`` (>= 1). ``bstype='null'`` keeps no data."""
        if lun < 1:
            raise ValueError("tgt reserves LUN 0 for its controller; disks start at LUN 1")
        self.tgtadm(
            "--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", str(lun),
            "-b", str(path), "--bstype", bstype,
        )  # fmt: skip

    def add_ram_lun(self, tid: int, lun: int, size: int) -> Path:
        """A sparse file of ``size`` bytes on /dev/shm as an rdwr LUN; removed again by :meth:`stop`."""
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
        path = shm / f"cistern-tgt-{os.getpid()}-{uuid.uuid4().hex[:8]}.img"
        with open(path, "wb") as fh:
            fh.truncate(size)
        self._ram_files.append(path)
        self.add_lun(tid, lun, path, bstype="rdwr")
        return path

    def bind_all(self, tid: int) -> None:
        """Admit every initiator name and address to target ``tid``."""
        self.tgtadm("--mode", "target", "--op", "bind", "--tid", str(tid), "-I", "ALL")

    def bind_initiator(self, tid: int, initiator_name: str) -> None:
        """Admit one initiator name (an IQN ACL) to target ``tid``."""
        self.tgtadm("--mode", "target", "--op", "bind", "--tid", str(tid), "-Q", initiator_name)

    def set_param(self, tid: int, name: str, value: str | int) -> None:
        """Set a login key's offered value, e.g. ``MaxRecvDataSegmentLength``, for new sessions."""
        self.tgtadm(
            "--mode", "target", "--op", "update", "--tid", str(tid), "--name", name, "--value", str(value)
        )  # fmt: skip

    def add_chap(self, tid: int, user: str, password: str, outgoing: bool = False) -> None:
        """Create account ``user`` and bind it to ``tid``; ``outgoing`` makes it the mutual-CHAP name."""
        self.tgtadm("--mode", "account", "--op", "new", "--user", user, "--password", password)
        bind = ["--mode", "account", "--op", "bind", "--tid", str(tid), "--user", user]
        self.tgtadm(*bind, *(["--outgoing"] if outgoing else []))

    def show(self) -> str:
        """``tgtadm --mode target --op show`` output (targets, LUNs, ACLs, accounts, sessions)."""
        return self.tgtadm("--mode", "target", "--op", "show").stdout

    def url(self, iqn: str | None = None, lun: int | None = None) -> str:
        assert self.port is not None
        return iscsi_url(self.host, self.port, iqn, lun)


@dataclasses.dataclass(frozen=True, slots=True)
class TgtDisk:
    """A target on a running :class:`Tgt` that is open to all initiators and holds one RAM disk."""

    tgt: Tgt
    tid: int
    iqn: str
    lun: int
    size: int

    @property
    def portal_url(self) -> str:
        return self.tgt.url()

    @property
    def url(self) -> str:
        return self.tgt.url(self.iqn, self.lun)


def open_ram_disk(tgt: Tgt, iqn: str, size: int, lun: int = 1) -> TgtDisk:
    """Create target ``iqn`` on ``tgt`` with a ``size``-byte /dev/shm disk at ``lun``, admitting all."""
    tid = tgt.new_target(iqn)
    tgt.add_ram_lun(tid, lun, size)
    tgt.bind_all(tid)
    return TgtDisk(tgt=tgt, tid=tid, iqn=iqn, lun=lun, size=size)


# --------------------------------------------------------------------------------------------------
# iscsi-test-cu


@dataclasses.dataclass(frozen=True, slots=True)
class CunitSummary:
    """The ``tests`` row of CUnit's Run Summary."""

    total: int
    ran: int
    passed: int
    failed: int
    inactive: int


@dataclasses.dataclass(slots=True)
class CunitRun:
    """What one ``iscsi-test-cu`` run produced."""

    results: dict[str, Verdict]
    details: dict[str, list[str]]
    output: str
    returncode: int | None
    stalled: bool = False
    timed_out: bool = False
    unfinished_test: str | None = None
    summary: CunitSummary | None = None

    def names(self, verdict: Verdict) -> list[str]:
        return [name for name, got in self.results.items() if got == verdict]

    def counts(self) -> dict[str, int]:
        counts = {"PASS": 0, "SKIP": 0, "FAIL": 0}
        for got in self.results.values():
            counts[got] += 1
        return counts

    def report(self) -> str:
        """One ``VERDICT Suite.Test`` line per test, in run order, after a counts header."""
        counts = self.counts()
        head = f"# PASS {counts['PASS']}  SKIP {counts['SKIP']}  FAIL {counts['FAIL']}"
        if self.stalled or self.timed_out:
            why = "stalled" if self.stalled else "timed out"
            head += f"  ({why} in {self.unfinished_test or 'between tests'})"
        return "\n".join([head, *(f"{got} {name}" for name, got in self.results.items())]) + "\n"


def _record(results: dict[str, Verdict], name: str, verdict: Verdict) -> None:
    # Without -t the families run some suites more than once: keep the worst verdict per name.
    old = results.get(name)
    if old is None or _VERDICT_RANK[verdict] > _VERDICT_RANK[old]:
        results[name] = verdict


def parse_cunit_output(
    text: str,
) -> tuple[dict[str, Verdict], dict[str, list[str]], str | None, CunitSummary | None]:
    """Parse CUnit's verbose console output as printed by iscsi-test-cu.

    Returns (results, per-test output lines, the test still running when the text ends, summary).
    The format: ``Suite: NAME`` starts a suite; ``  Test: NAME ...`` starts a test; the test's own
    messages follow, indented; the CUnit verdict ``passed`` or ``FAILED`` comes right after ``...``
    or at the start of an unindented line. A pass whose messages include ``[SKIPPED]`` is a SKIP.
    Text after the verdict (a suite teardown's complaint, CUnit's numbered assert list) is ignored.
    """
    results: dict[str, Verdict] = {}
    details: dict[str, list[str]] = {}
    suite = "?"
    current: str | None = None
    skipped = False
    summary: CunitSummary | None = None

    def body(fragment: str) -> None:
        nonlocal current, skipped
        if current is None:
            return
        if fragment.startswith("passed"):
            _record(results, current, "SKIP" if skipped else "PASS")
            current = None
        elif fragment.startswith("FAILED"):
            _record(results, current, "FAIL")
            current = None
        else:
            if "[SKIPPED]" in fragment:
                skipped = True
            if fragment.strip():
                details[current].append(fragment.strip())

    for line in text.splitlines():
        if line.startswith("Suite: "):
            suite = line[len("Suite: ") :].strip()
            current = None
            continue
        if line.startswith("  Test: ") and " ..." in line:
            name, _, rest = line[len("  Test: ") :].partition(" ...")
            current = f"{suite}.{name.strip()}"
            skipped = False
            details[current] = []
            body(rest)
            continue
        stripped = line.strip()
        if stripped.startswith("tests ") and summary is None:
            fields = stripped.split()
            if len(fields) == 6 and all(f.isdigit() for f in fields[1:]):
                summary = CunitSummary(*(int(f) for f in fields[1:]))
                current = None
                continue
        body(line)
    return results, details, current, summary


def all_suites_except(*excluded: str) -> str:
    """A ``-t`` argument naming every suite of the ALL family but ``excluded`` (e.g. "Sanitize", whose
    Reset test sleeps a minute by itself: one run per LU kind that needs it is enough)."""
    listing = run([require_tool("iscsi-test-cu"), "-l"], timeout=30).stdout.split()
    suites = [line for line in listing if line.count(".") == 1 and line.startswith("ALL.")]
    keep = [name for name in suites if name.split(".", 1)[1] not in excluded]
    if len(keep) == len(suites) - len(excluded) and keep:
        return ",".join(keep)
    raise PeerError(f"iscsi-test-cu -l lists no suite named {excluded!r}")


def run_iscsi_test_cu(
    url: str,
    tests: str = "ALL",
    extra_args: Sequence[str] = (),
    stall_timeout: float = 60.0,
    total_timeout: float = 900.0,
    initiator_name: str | None = None,
    initiator_name_2: str | None = None,
    multipath_url: str | None = None,
    artifact_path: Path | str | None = None,
    dataloss: bool = True,
    scsi_verbose: bool = False,
    env: Mapping[str, str] | None = None,
) -> CunitRun:
    """Run ``iscsi-test-cu`` on ``url`` and return per-test verdicts keyed ``Suite.Test``.

    The run is killed (its whole process group, which is its own session) when it prints nothing
    for ``stall_timeout`` seconds or runs past ``total_timeout``; the test that was running then is
    recorded as FAIL and named in ``unfinished_test``. With ``artifact_path`` the PASS/SKIP/FAIL list
    is written there and the raw output next to it with the suffix ``.log``.
    """
    require_tool("stdbuf")
    binary = require_tool("iscsi-test-cu")
    cmd = ["stdbuf", "-o0", "-e0", binary, "-t", tests]
    if dataloss:
        cmd += ["-d", "-S"]
    if initiator_name:
        cmd += ["-i", initiator_name]
    if initiator_name_2:
        cmd += ["-I", initiator_name_2]
    if scsi_verbose:
        cmd.append("-V")
    cmd += [*extra_args, url]
    if multipath_url:
        cmd.append(multipath_url)

    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **env} if env else None,
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []
    stalled = timed_out = False
    start = last_output = time.monotonic()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if now - last_output > stall_timeout:
                stalled = True
                break
            if now - start > total_timeout:
                timed_out = True
                break
            if not sel.select(timeout=0.5):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            last_output = time.monotonic()
    if stalled or timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.stdout.close()
    returncode = proc.wait(timeout=30)

    output = b"".join(chunks).decode(errors="replace")
    results, details, unfinished, summary = parse_cunit_output(output)
    if unfinished is not None and (stalled or timed_out):
        _record(results, unfinished, "FAIL")
        details[unfinished].append("[harness] killed: no verdict before the stall/total timeout")
    run_result = CunitRun(
        results=results,
        details=details,
        output=output,
        returncode=None if (stalled or timed_out) else returncode,
        stalled=stalled,
        timed_out=timed_out,
        unfinished_test=unfinished,
        summary=summary,
    )
    if artifact_path is not None:
        path = Path(artifact_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_result.report())
        path.with_suffix(".log").write_text(f"$ {' '.join(cmd)}\n{output}")
    return run_result


def still_open(socks: Sequence[socket.socket]) -> int:
    """How many of ``socks`` the target has not closed (a closed one reads EOF or RST at once)."""
    alive = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                continue
        except BlockingIOError:
            alive += 1
        except OSError:
            continue
    return alive
