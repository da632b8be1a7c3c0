"""The two targets under comparison, each started privately on 127.0.0.1, and the disks they serve.

Both offer the same login keys (RFC 7143 section 13) so the comparison measures implementations, not
defaults: tgt through ``tgtadm --op update``, cistern through its config's ``[targets.params]``.

Like is compared with like: tgt's ``rdwr`` backing store on a file against cistern's ``file`` store on a
file of the same filesystem (each target its own file, both written in full first, so reads return real
blocks), and optionally both on the same block device (a loop device over a written file).  cistern's
``memory`` store is an extra row, compared with tgt's file.  :func:`cpu_seconds` reads a server's CPU time
(user + system, all threads) from ``/proc/PID/stat`` so the caller can report CPU per I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import peers

IQN = "iqn.2024-01.org.cistern.bench:disk"

#: The negotiated parameters both targets offer (the initiator's offers are the same for both).
PARAMS: dict[str, int | bool] = {
    "MaxRecvDataSegmentLength": 262144,
    "MaxBurstLength": 1048576,
    "FirstBurstLength": 262144,
    "InitialR2T": False,
    "ImmediateData": True,
}
# tgt caps its own Data-In PDUs separately (default 8 KiB); match the 256 KiB segment above.
TGT_EXTRA_PARAMS: dict[str, int] = {"MaxXmitDataSegmentLength": 262144}

_CONFIG_KEYS = {
    "MaxRecvDataSegmentLength": "max_recv_data_segment_length",
    "MaxBurstLength": "max_burst_length",
    "FirstBurstLength": "first_burst_length",
    "InitialR2T": "initial_r2t",
    "ImmediateData": "immediate_data",
}

#: Store kinds, in table order.  tgt serves ``file`` and ``block``; cistern all three.
STORE_KINDS = ("file", "memory", "block")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True, slots=True)
class Disks:
    """What the targets serve: a written file for each target (same filesystem), an optional block device."""

    size: int
    tgt_file: Path
    cistern_file: Path
    block: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Running:
    """A started target: its server PID and an iSCSI URL per store kind it serves."""

    name: str
    pid: int
    urls: dict[str, str]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from ``/proc/PID/stat``, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15 of stat)


def write_pattern_file(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes of non-zero data (every block allocated and written)."""
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(chunk))
            fh.write(chunk[:n])
            left -= n


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[Path | None]:
    """A loop device over ``backing`` (``losetup --find --show``), detached afterwards; None if unavailable."""
    try:
        done = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        yield None
        return
    if done.returncode != 0 or not done.stdout.strip():
        print(f"no loop device: {done.stderr.strip()}", file=sys.stderr)
        yield None
        return
    device = Path(done.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(device)], capture_output=True, timeout=30)


@contextlib.contextmanager
def prepared_disks(directory: Path, size: int, block: bool = False) -> Iterator[Disks]:
    """Written files for both targets in ``directory`` (and, with ``block``, a loop device over a third);
    all removed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"
    paths = [directory / f"cistern-bench-{tag}-{name}.img" for name in ("tgt", "cistern", "block")]
    try:
        for path in paths[: 3 if block else 2]:
            write_pattern_file(path, size)
        with contextlib.ExitStack() as stack:
            device = stack.enter_context(loop_device(paths[2])) if block else None
            yield Disks(size, paths[0], paths[1], device)
    finally:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _tgt_value(value: int | bool) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return str(value)


@contextlib.contextmanager
def tgt_target(disks: Disks, log_dir: Path) -> Iterator[Running]:
    """A private tgtd serving the tgt file (LUN 1) and the block device (LUN 2), ``bs rdwr``."""
    with peers.Tgt(log_path=log_dir / "tgtd.log") as tgt:
        tid = tgt.new_target(IQN)
        tgt.add_lun(tid, 1, disks.tgt_file, bstype="rdwr")
        urls = {"file": tgt.url(IQN, 1)}
        if disks.block is not None:
            tgt.add_lun(tid, 2, disks.block, bstype="rdwr")
            urls["block"] = tgt.url(IQN, 2)
        tgt.bind_all(tid)
        for name, value in {**PARAMS, **TGT_EXTRA_PARAMS}.items():
            tgt.set_param(tid, name, _tgt_value(value))
        yield Running("tgt", tgt.pid, urls)


def cistern_config_toml(port: int, disks: Disks, root: tuple[str, ...] = ()) -> str:
    """One open target on 127.0.0.1:``port``: LUN 0 file, LUN 1 memory, LUN 2 block device (if any).
    ``root``: extra root-level TOML lines (``key = value``), e.g. ``busy_poll_us = 0``."""
    params = "\n".join(
        f"{_CONFIG_KEYS[name]} = {str(value).lower() if isinstance(value, bool) else value}"
        for name, value in PARAMS.items()
    )
    luns = [
        f'lun = 0\nbackend = "file"\npath = "{disks.cistern_file}"\nsize = {disks.size}\n'
        "persist_reservations = false\n",
        f'lun = 1\nbackend = "memory"\nsize = {disks.size}\n',
    ]
    if disks.block is not None:
        luns.append(f'lun = 2\nbackend = "block"\npath = "{disks.block}"\npersist_reservations = false\n')
    return (
        'log_level = "warning"\n'
        + "".join(f"{line}\n" for line in root)
        + "\n"
        "[[targets]]\n"
        f'name = "{IQN}"\n'
        f'portals = ["127.0.0.1:{port}"]\n'
        "open = true\n\n"
        "[targets.params]\n"
        f"{params}\n\n" + "".join(f"[[targets.luns]]\n{lun}\n" for lun in luns)
    )


def root_settings(items: list[str]) -> tuple[str, ...]:
    """``KEY=VALUE`` items (TOML values) -> root-level TOML lines, checked with :func:`check_root_settings`;
    ValueError (one line) when an item is malformed or the settings are not a valid config."""
    root = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        root.append(f"{key.strip()} = {value.strip()}")
    check_root_settings(tuple(root))
    return tuple(root)


def check_root_settings(root: tuple[str, ...]) -> None:
    """Raise ValueError (one line) unless ``root`` lines make a valid cistern config."""
    try:
        from cistern.config.errors import ConfigError
    except ImportError:
        return
    try:
        _validate_config("".join(f"{line}\n" for line in root))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML: {exc}") from None
    except ConfigError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def _validate_config(text: str) -> None:
    """Check the generated config with cistern's own model when it is importable (fail early)."""
    try:
        from cistern.config.model import parse_config
    except ImportError:
        return
    parse_config(tomllib.loads(text))


@contextlib.contextmanager
def cistern_target(
    disks: Disks,
    log_dir: Path,
    start_timeout: float = 20.0,
    env: dict[str, str] | None = None,
    root: tuple[str, ...] = (),
) -> Iterator[Running]:
    """``cistern serve`` with the file, memory and block LUNs of :func:`cistern_config_toml`; stopped by PID."""
    port = peers.free_port()
    text = cistern_config_toml(port, disks, root)
    _validate_config(text)
    with tempfile.TemporaryDirectory(prefix="cistern-bench-") as tmp:
        config_path = Path(tmp) / "bench.toml"
        config_path.write_text(text)
        with open(log_dir / "cistern.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cistern", "serve", "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        try:
            try:
                peers.wait_port("127.0.0.1", port, timeout=start_timeout)
            except TimeoutError:
                status = proc.poll()
                raise peers.PeerError(
                    f"cistern serve did not listen on 127.0.0.1:{port} "
                    f"(exit status {status}); see {log_dir / 'cistern.log'}"
                ) from None
            urls = {"file": peers.iscsi_url("127.0.0.1", port, IQN, 0)}
            urls["memory"] = peers.iscsi_url("127.0.0.1", port, IQN, 1)
            if disks.block is not None:
                urls["block"] = peers.iscsi_url("127.0.0.1", port, IQN, 2)
            yield Running("cistern", proc.pid, urls)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
