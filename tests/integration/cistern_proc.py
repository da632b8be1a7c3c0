"""Start ``cistern serve`` as a real process on 127.0.0.1 for peer tests, and stop it by PID.

The config is written as TOML into the test's own folder; the port is picked free; the process's output
goes to a log file in the artifacts folder so a failing CI run shows what the target said.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import peers


@dataclass
class CisternTarget:
    """One ``cistern serve`` process; a context manager."""

    config_text: str | None  # None: run ``cistern demo`` with its data in ``workdir``
    workdir: Path
    log_path: Path
    port: int = 0
    verbosity: str = "-v"  # "-vv": the debug log, which names every CHECK CONDITION with its sense
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: run in the child before exec (e.g. a lower RLIMIT_NOFILE with resource.setrlimit)
    preexec: Callable[[], None] | None = field(default=None, repr=False)

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config_text is None:
            args = ["demo", "--portal", f"127.0.0.1:{self.port}", "--dir", str(self.workdir), "--size", "64M"]
        else:
            cfg = self.workdir / "cistern.toml"
            cfg.write_text(self.config_text)
            args = ["serve", "--config", str(cfg)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cistern", self.verbosity, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"cistern serve exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            try:
                peers.wait_port("127.0.0.1", self.port, timeout=0.2)
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (clean shutdown), then SIGKILL if it does not exit; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.proc = None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL by PID, as a crash (``start`` again to restart on the same config and data)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def __enter__(self) -> CisternTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, iqn: str, lun: int = 0, user: str | None = None, secret: str | None = None) -> str:
        cred = f"{user}%{secret}@" if user else ""
        return f"iscsi://{cred}127.0.0.1:{self.port}/{iqn}/{lun}"

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"


def lun_toml(
    lun: int, backend: str, *, path: Path | None = None, size: str | None = None, **flags: bool
) -> str:
    lines = ["[[targets.luns]]", f"lun = {lun}", f'backend = "{backend}"']
    if path is not None:
        lines.append(f'path = "{path}"')
    if size is not None:
        lines.append(f'size = "{size}"')
    lines += [f"{k} = {'true' if v else 'false'}" for k, v in flags.items()]
    return "\n".join(lines) + "\n"


def target_toml(
    iqn: str,
    port: int,
    luns: str,
    *,
    acl: list[str] | None = None,
    chap: tuple[str, str] | None = None,
    mutual: tuple[str, str] | None = None,
    params: dict[str, object] | None = None,
) -> str:
    out = ["[[targets]]", f'name = "{iqn}"', f'portals = ["127.0.0.1:{port}"]']
    if acl is None:
        out.append("open = true")
    else:
        out.append("acl = [" + ", ".join(f'"{a}"' for a in acl) + "]")
    if params:
        out.append("[targets.params]")
        for k, v in params.items():
            out.append(
                f"{k} = " + ("true" if v is True else "false" if v is False else repr(v).replace("'", '"'))
            )
    if chap is not None:
        out += ["[targets.auth.chap]", f'username = "{chap[0]}"', f'secret = "{chap[1]}"']
        if mutual is not None:
            out += [f'mutual_username = "{mutual[0]}"', f'mutual_secret = "{mutual[1]}"']
    return "\n".join(out) + "\n" + luns


ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@contextlib.contextmanager
def memory_lun_target(module_name: str, iqn: str, params: dict[str, object]) -> Iterator[CisternTarget]:
    """A running target ``iqn`` with LUN 0 a 64 MiB memory store and the login ``params`` (config keys), its
    work files and log in ``artifacts/<module>-cistern``: the fault-proxy test modules' shared target."""
    folder = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", module_name) + "-cistern")
    folder.mkdir(parents=True, exist_ok=True)
    port = peers.free_port()
    config = target_toml(iqn, port, lun_toml(0, "memory", size="64MiB"), params=params)
    proc = CisternTarget(config, folder / "work", folder / "cistern.log", port=port)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def verified_io(s: object, rng: random.Random, lbas: list[int], chunk: int, rounds: int = 1) -> None:
    """Write ``chunk`` random bytes at each of ``lbas`` (LUN 0, 512-byte blocks) concurrently, read them back
    concurrently and compare sha256; ``rounds`` times."""
    for _ in range(rounds):
        batch = {lba: rng.randbytes(chunk) for lba in lbas}
        await asyncio.gather(*(s.write(0, lba, d) for lba, d in batch.items()))  # type: ignore[attr-defined]
        got = await asyncio.gather(*(s.read(0, lba, chunk // 512) for lba in lbas))  # type: ignore[attr-defined]
        for lba, data in zip(lbas, got, strict=True):
            assert hashlib.sha256(bytes(data)).digest() == hashlib.sha256(batch[lba]).digest(), lba
