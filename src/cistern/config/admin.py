"""The ``[admin]`` table: where the live administration API, the metrics and the dashboard listen.

    [admin]
    socket = "/run/cistern/admin.sock"  # the API on a Unix socket (default: see default_socket_path)
    listen = "127.0.0.1:9470"           # also HTTP on TCP: /metrics and the dashboard; the API with token
    token = "a-long-random-string"      # bearer token for the API over TCP (and dashboard actions)
    tls_cert = "cert.pem"               # serve the TCP listener with TLS (both or neither)
    tls_key = "key.pem"
    backups = 5                         # rotated copies kept by "config save" (FILE.1 .. FILE.N)

File permissions of the socket (0600, owner = the server's user) are its access control; the TCP
listener serves the API only to requests bearing the token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cistern.config.errors import ConfigValueError
from cistern.config.fields import PathField, PortalField

MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 256


def default_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/cistern/admin.sock``, else ``/run/cistern/admin.sock`` for root, else
    ``/tmp/cistern-UID/admin.sock``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "cistern" / "admin.sock"
    if os.geteuid() == 0:
        return Path("/run/cistern/admin.sock")
    return Path(f"/tmp/cistern-{os.geteuid()}") / "admin.sock"


class AdminConfig(BaseModel):
    """Where the admin API listens and how it is protected."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: Unix socket of the API; unset: :func:`default_socket_path`
    socket: PathField | None = None
    #: false: no Unix socket at all
    socket_enabled: bool = True
    #: HOST:PORT of the HTTP listener (metrics, dashboard, API with token)
    listen: PortalField | None = None
    token: str | None = Field(default=None, repr=False)
    tls_cert: PathField | None = None
    tls_key: PathField | None = None
    backups: Annotated[int, Field(ge=0, le=100)] = 5

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not MIN_TOKEN_CHARS <= len(value) <= MAX_TOKEN_CHARS or any(
            not 0x21 <= ord(ch) <= 0x7E for ch in value
        ):
            raise ConfigValueError(
                f"token must be {MIN_TOKEN_CHARS}..{MAX_TOKEN_CHARS} printable ASCII characters without spaces"
            )
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> AdminConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ConfigValueError("TLS needs both tls_cert and tls_key", at=(missing,))
        if self.tls_cert is not None and self.listen is None:
            raise ConfigValueError("tls_cert is for the TCP listener: set listen too", at=("tls_cert",))
        if self.token is not None and self.listen is None:
            raise ConfigValueError("token protects the TCP listener: set listen too", at=("token",))
        return self

    def socket_path(self) -> Path | None:
        """The Unix socket to serve, or None when disabled."""
        if not self.socket_enabled:
            return None
        return self.socket if self.socket is not None else default_socket_path()
