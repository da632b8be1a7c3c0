"""The two targets under comparison, each started privately on 127.0.0.1 with one RAM-backed disk.

Both offer the same login keys (RFC 7143 section 13) so the comparison measures implementations, not
defaults: tgt through ``tgtadm --op update``, cistern through its config's ``[targets.params]``.
tgt's disk is an rdwr file on /dev/shm (``bstype null`` would discard data); cistern's a memory LUN.
"""

from __future__ import annotations

import contextlib
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


def _tgt_value(value: int | bool) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return str(value)


@contextlib.contextmanager
def tgt_target(size: int, log_dir: Path) -> Iterator[str]:
    """Yield the URL of a disk of ``size`` bytes on a private tgtd; stop tgtd afterwards."""
    with peers.Tgt(log_path=log_dir / "tgtd.log") as tgt:
        disk = peers.open_ram_disk(tgt, IQN, size)
        for name, value in {**PARAMS, **TGT_EXTRA_PARAMS}.items():
            tgt.set_param(disk.tid, name, _tgt_value(value))
        yield disk.url


def cistern_config_toml(port: int, size: int) -> str:
    """A cistern config with one open target on 127.0.0.1:``port`` and a memory LUN 0 of ``size`` bytes."""
    params = "\n".join(
        f"{_CONFIG_KEYS[name]} = {str(value).lower() if isinstance(value, bool) else value}"
        for name, value in PARAMS.items()
    )
    return (
        'log_level = "warning"\n\n'
        "[[targets]]\n"
        f'name = "{IQN}"\n'
        f'portals = ["127.0.0.1:{port}"]\n'
        "open = true\n\n"
        "[targets.params]\n"
        f"{params}\n\n"
        "[[targets.luns]]\n"
        "lun = 0\n"
        'backend = "memory"\n'
        f"size = {size}\n"
    )


def _validate_config(text: str) -> None:
    """Check the generated config with cistern's own model when it is importable (fail early)."""
    try:
        from cistern.config.model import parse_config
    except ImportError:
        return
    parse_config(tomllib.loads(text))


@contextlib.contextmanager
def cistern_target(size: int, log_dir: Path, start_timeout: float = 20.0) -> Iterator[str]:
    """Yield the URL of a memory disk served by ``cistern serve``; stop it (by PID) afterwards."""
    port = peers.free_port()
    text = cistern_config_toml(port, size)
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
            yield peers.iscsi_url("127.0.0.1", port, IQN, 0)
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
