"""Admission limits (``[limits]``): session caps, connections that have not finished login, login rate
and lockouts, the listen backlog.  See :mod:`cistern.security.admission` for the rules.

    [limits]
    max_sessions = 4096               # in total (0: no cap); answered with login status 0x0302
    max_sessions_per_target = 1024
    max_sessions_per_initiator = 64
    max_pending_connections = 512     # connections that have not finished login, in total
    max_pending_per_address = 16      # ... from one source address
    login_rate = 50.0                 # new connections per second per source address
    login_burst = 100
    auth_failures = 10                # failed authentications before a lockout (per address, per CHAP user)
    lockout_seconds = 60
    listen_backlog = 0                # 0: the system maximum (net.core.somaxconn); above it: refused
    max_write_buffers = "1G"          # write buffers of all sessions together; beyond: TASK SET FULL
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cistern.config.fields import SizeBytes
from cistern.security.admission import AdmissionLimits


class LimitsConfig(BaseModel):
    """Caps and rates (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_sessions: int = Field(default=4096, ge=0, le=65535)
    max_sessions_per_target: int = Field(default=1024, ge=0, le=65535)
    max_sessions_per_initiator: int = Field(default=64, ge=0, le=65535)
    max_pending_connections: int = Field(default=512, ge=1, le=1_000_000)
    max_pending_per_address: int = Field(default=16, ge=1, le=1_000_000)
    login_rate: float = Field(default=50.0, ge=0, le=1_000_000)
    login_burst: int = Field(default=100, ge=1, le=1_000_000)
    auth_failures: int = Field(default=10, ge=0, le=1000)
    lockout_seconds: float = Field(default=60.0, ge=0, le=86400)
    listen_backlog: int = Field(default=0, ge=0, le=65535)
    max_write_buffers: Annotated[SizeBytes, Field(ge=1024 * 1024)] = 1 << 30

    @field_validator("listen_backlog")
    @classmethod
    def _backlog_fits_the_kernel(cls, value: int) -> int:
        ceiling = somaxconn()
        if value > ceiling:
            raise ValueError(
                f"{value} exceeds net.core.somaxconn ({ceiling}) on this host, which the kernel would silently "
                "use instead: raise the sysctl or lower listen_backlog (0 means the system maximum)"
            )
        return value

    def admission(self) -> AdmissionLimits:
        return AdmissionLimits(
            max_sessions=self.max_sessions,
            max_sessions_per_target=self.max_sessions_per_target,
            max_sessions_per_initiator=self.max_sessions_per_initiator,
            max_pending_connections=self.max_pending_connections,
            max_pending_per_address=self.max_pending_per_address,
            login_rate=self.login_rate,
            login_burst=self.login_burst,
            auth_failures=self.auth_failures,
            lockout_seconds=self.lockout_seconds,
        )


def somaxconn() -> int:
    """The system's largest listen backlog (net.core.somaxconn; 4096 when it cannot be read)."""
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as handle:
            return max(128, int(handle.read().strip()))
    except (OSError, ValueError):
        return 4096
