"""Annotated field types shared by the config models: iSCSI names, sizes, portals and paths.

Each parses the friendly TOML spelling on input and writes that spelling back on dump.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, ValidationInfo

from cistern.config.errors import ConfigValueError
from cistern.config.names import normalize_iscsi_name
from cistern.config.portals import Portal
from cistern.config.sizes import format_size, parse_size


def _iscsi_name(value: Any) -> str:
    try:
        return normalize_iscsi_name(value)
    except ValueError as exc:
        raise ConfigValueError(str(exc)) from None


def _size(value: Any) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ConfigValueError(str(exc)) from None


def _portal(value: Any) -> Portal:
    if isinstance(value, Portal):
        return value
    try:
        return Portal.parse(value)
    except ValueError as exc:
        raise ConfigValueError(str(exc)) from None


def _path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        path = value.expanduser()
    elif isinstance(value, str) and value and "\x00" not in value:
        path = Path(value).expanduser()
    else:
        raise ConfigValueError(f"{value!r} is not a path")
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


IscsiName = Annotated[str, BeforeValidator(_iscsi_name)]
"""An RFC 7143 section 4.2.7 name, normalized (see :mod:`cistern.config.names`)."""

SizeBytes = Annotated[int, PlainValidator(_size), PlainSerializer(format_size, return_type=str)]
"""Bytes; accepts ``4096`` or ``"1G"``; dumps as the shortest exact string (``"1G"``)."""

PortalField = Annotated[Portal, PlainValidator(_portal), PlainSerializer(str, return_type=str)]
"""A :class:`~cistern.config.portals.Portal`; accepts ``"HOST:PORT"``; dumps as that string."""

PathField = Annotated[Path, PlainValidator(_path), PlainSerializer(str, return_type=str)]
"""A filesystem path: ``~`` expanded; relative paths are taken from the config file's directory."""
