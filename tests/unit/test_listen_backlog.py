"""``[limits] listen_backlog``: honoured (the kernel reports the configured backlog), 0 means the system
maximum, and a value above net.core.somaxconn (which the kernel would silently use instead) is refused."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError
from test_target_harness import IQN, run

from cistern.config.limits import LimitsConfig, somaxconn
from cistern.scsi import DeviceServer, LogicalUnit
from cistern.storage import MemoryStore
from cistern.target.model import TargetSpec
from cistern.target.server import TargetServer


def kernel_backlog(port: int) -> int:
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])  # Send-Q of a listening socket: its backlog


@pytest.mark.parametrize(("configured", "expected"), [(777, 777), (0, somaxconn())])
def test_listen_backlog_is_what_the_kernel_uses(configured: int, expected: int) -> None:
    async def main() -> None:
        device = DeviceServer({0: LogicalUnit(MemoryStore(1 << 20), lun=0)}, target_name=IQN)
        server = TargetServer(
            [TargetSpec(IQN, device, portals=[("127.0.0.1", 0)])],
            listen_backlog=LimitsConfig(listen_backlog=configured).listen_backlog,
        )
        await server.start()
        try:
            assert kernel_backlog(server.bound[0][1]) == expected
        finally:
            await server.stop(logout_grace=0.05)

    run(main())


def test_listen_backlog_above_somaxconn_is_refused() -> None:
    assert LimitsConfig(listen_backlog=somaxconn()).listen_backlog == somaxconn()
    with pytest.raises(ValidationError, match=r"exceeds net\.core\.somaxconn"):
        LimitsConfig(listen_backlog=somaxconn() + 1)
    with pytest.raises(ValidationError):
        LimitsConfig(listen_backlog=-1)
