"""The declarative configuration: an object tree shaped like rtslib's (root -> target -> portal group ->
portals/ACL/LUNs), validated by pydantic, read from TOML, written back with :func:`save_config`.

    Config
      log_level, portals (default for targets), discovery_auth
      targets: [TargetConfig]  name, alias, portals, tpgt, acl | open, auth, params, luns: [LunConfig]
      admin: AdminConfig       socket, listen, token, TLS, backups

This module is the public face of :mod:`cistern.config`; the node classes live in their own files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cistern.config.admin import AdminConfig
from cistern.config.auth import AuthConfig, ChapConfig
from cistern.config.checks import check_paths as _check_paths
from cistern.config.errors import ConfigError, ConfigIssue, ConfigValueError
from cistern.config.errors import issues_from_validation_error as _issues
from cistern.config.fields import PortalField
from cistern.config.limits import LimitsConfig
from cistern.config.lun import LunConfig
from cistern.config.params import ParamsConfig
from cistern.config.portals import Portal
from cistern.config.tape import drop_disk_defaults
from cistern.config.target import DEFAULT_PORTAL, TargetConfig
from cistern.config.tls import TlsConfig
from cistern.config.toml_writer import dumps as toml_dumps

__all__ = [
    "DEFAULT_PORTAL",
    "AdminConfig",
    "AuthConfig",
    "ChapConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "LunConfig",
    "ParamsConfig",
    "Portal",
    "TargetConfig",
    "config_text",
    "load_config",
    "parse_config",
    "save_config",
]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Config(BaseModel):
    """The root. ``portals`` here is the default for targets that do not list their own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    log_level: LogLevel = "info"
    #: seconds a connection may take to log in
    login_timeout: float = Field(default=15.0, gt=0, le=3600)
    #: seconds of silence from an initiator before the target sends a NOP-In ping (0: never ping)
    nop_interval: float = Field(default=10.0, ge=0, le=3600)
    #: seconds an unanswered ping waits before the connection is dropped as dead.  Generous on purpose:
    #: some initiators (libiscsi's synchronous tools) service their socket only when they send a command.
    nop_timeout: float = Field(default=75.0, gt=0, le=3600)
    #: microseconds a connection polls for its initiator's next command after sending its responses, while
    #: the initiator answers that fast (adaptive; 0: never poll).  See :mod:`cistern.target.busypoll`.
    busy_poll_us: int = Field(default=50, ge=0, le=1000)
    #: "adaptive": poll only while polling costs less server CPU per command than sleeping, measured in
    #: turns; "always": poll whenever the initiator answers within busy_poll_us (lowest latency)
    busy_poll_mode: Literal["adaptive", "always"] = "adaptive"
    portals: list[PortalField] | None = None
    discovery_auth: AuthConfig | None = None
    #: certificates of the TLS portals (see :mod:`cistern.config.tls`)
    tls: TlsConfig | None = None
    #: session caps, pre-login connection caps, login rate and lockouts (see :mod:`cistern.config.limits`)
    limits: LimitsConfig | None = None
    targets: list[TargetConfig] = Field(default_factory=list)
    #: the live administration API, metrics and dashboard (see :mod:`cistern.config.admin`)
    admin: AdminConfig | None = None
    #: the file this config was read from (set by :func:`load_config`; never dumped)
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("portals")
    @classmethod
    def _portals(cls, value: list[Portal] | None) -> list[Portal] | None:
        if value is not None and not value:
            raise ConfigValueError("leave portals out rather than empty")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names: dict[str, int] = {}
        paths: dict[Path, tuple[int, int]] = {}
        for t_index, target in enumerate(self.targets):
            if target.name in names:
                raise ConfigValueError(
                    f"{target.name!r} is already the name of targets[{names[target.name]}]",
                    at=("targets", t_index, "name"),
                )
            names[target.name] = t_index
            if self.portals and "portals" not in target.model_fields_set:
                target.portals = list(self.portals)
            for l_index, lun in enumerate(target.luns):
                for path in lun.backing_paths():
                    key = Path(os.path.abspath(path))
                    if key in paths:
                        t0, l0 = paths[key]
                        raise ConfigValueError(
                            f"{str(path)!r} already backs targets[{t0}].luns[{l0}]",
                            at=("targets", t_index, "luns", l_index, "raid" if lun.raid else "path"),
                        )
                    paths[key] = (t_index, l_index)
        self._check_tls()
        return self

    def _check_tls(self) -> None:
        """A TLS portal needs ``[tls]``; one address cannot be TLS for one target and plaintext for another."""
        kind: dict[str, tuple[bool, int]] = {}
        for t_index, target in enumerate(self.targets):
            for group in target.effective_portal_groups():
                if group.tls and self.tls is None:
                    raise ConfigValueError(
                        "a TLS portal needs the [tls] table (certificate, key, ca)", at=("targets", t_index)
                    )
                for portal in group.portals:
                    seen = kind.setdefault(str(portal), (group.tls, t_index))
                    if seen[0] != group.tls:
                        raise ConfigValueError(
                            f"portal {str(portal)!r} is {'TLS' if seen[0] else 'plaintext'} for targets[{seen[1]}]:"
                            " a portal is TLS for every target or for none",
                            at=("targets", t_index),
                        )

    def __eq__(self, other: object) -> bool:
        """Equal settings (where the config was read from does not count)."""
        if not isinstance(other, Config):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    @property
    def source_path(self) -> Path | None:
        """The file :func:`load_config` read this config from (None when built otherwise)."""
        return self._source

    def target(self, name: str) -> TargetConfig | None:
        """The target called ``name`` (any case for iqn.), or None."""
        wanted = name.lower()
        return next((t for t in self.targets if t.name.lower() == wanted), None)

    def dump(self) -> dict[str, Any]:
        """A plain dict in the TOML shape (sizes as ``"1G"``, portals as ``"HOST:PORT"``); None left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        for target in data.get("targets", []):
            for lun in target.get("luns", []):
                drop_disk_defaults(lun)
        return _prune(data)


def _prune(value: Any) -> Any:
    """Drop empty tables and empty arrays, which say nothing in TOML."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def parse_config(
    data: Mapping[str, Any], *, base_dir: str | Path | None = None, check_paths: bool = False
) -> Config:
    """Validate an already-parsed mapping. Relative LUN paths are taken from ``base_dir`` if given."""
    context = {"base_dir": Path(base_dir)} if base_dir is not None else None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, Config)) from None
    if check_paths:
        issues = _check_paths(config)
        if issues:
            raise ConfigError(issues)
    return config


def load_config(path: str | Path, *, check_paths: bool = True) -> Config:
    """Read and validate a TOML config; raises :class:`ConfigError` naming each bad path and value.

    ``check_paths`` also checks the backing files/devices on this host (see :mod:`cistern.config.checks`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text: {exc.reason}", source=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    try:
        config = parse_config(data, base_dir=path.resolve().parent, check_paths=check_paths)
    except ConfigError as exc:
        exc.source = str(path)
        raise
    config._source = path.resolve()
    return config


def config_text(config: Config) -> str:
    """The TOML text :func:`save_config` writes: the same config always gives the same bytes."""
    return "# cistern configuration (written by cistern)\n" + toml_dumps(config.dump())


def _rotate(path: Path, backups: int) -> None:
    """``FILE.{N-1}`` -> ``FILE.N`` ... ``FILE`` -> ``FILE.1`` (copies of the old file, oldest dropped)."""
    if backups <= 0 or not path.exists():
        return
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(path.read_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path.with_name(f"{path.name}.1"))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_config(config: Config, path: str | Path, *, backups: int = 0) -> None:
    """Write ``config`` as TOML atomically (temp file, fsync, rename, fsync of the directory), readable by
    the owner only (it may hold CHAP secrets), after keeping ``backups`` rotated copies of the old file
    (``FILE.1`` newest).  Raises OSError."""
    path = Path(path)
    text = config_text(config)
    _rotate(path, backups)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
