"""A small TOML 1.0 writer for the config tree (the standard library reads TOML but cannot write it).

Handles what :meth:`Config.dump` produces: tables, arrays of tables, strings, integers, floats, booleans
and arrays of those. Scalars come before sub-tables in each table, as TOML requires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _write_table(
    lines: list[str], table: Mapping[str, Any], path: tuple[str, ...], header: str | None
) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
    if header is not None and (scalars or not (tables or arrays) or header.startswith("[[")):
        if lines:
            lines.append("")
        lines.append(header)
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars)
    for key, sub in tables:
        sub_path = (*path, key)
        _write_table(lines, sub, sub_path, "[" + ".".join(_key(p) for p in sub_path) + "]")
    for key, items in arrays:
        sub_path = (*path, key)
        for item in items:
            _write_table(lines, item, sub_path, "[[" + ".".join(_key(p) for p in sub_path) + "]]")


def dumps(data: Mapping[str, Any]) -> str:
    """``data`` as TOML text, ending with a newline."""
    lines: list[str] = []
    _write_table(lines, data, (), None)
    return "\n".join(lines) + "\n"
