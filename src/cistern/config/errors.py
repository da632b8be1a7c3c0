"""Configuration errors: every problem found in a config, each named by its path in the object tree.

A path reads like the TOML it came from: ``targets[0].luns[1].size``. Validators raise
:class:`ConfigValueError` (a ``ValueError`` that may carry a sub-path below the node being validated);
:func:`issues_from_validation_error` turns pydantic's ``ValidationError`` into :class:`ConfigIssue` lines,
and :class:`ConfigError` carries them all to the caller.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


def format_loc(loc: Iterable[str | int]) -> str:
    """``('targets', 0, 'luns', 1, 'size')`` -> ``'targets[0].luns[1].size'``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: where it is (``path``, empty for the whole file) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """An invalid configuration. ``str()`` gives one ``path: message`` line per issue."""

    def __init__(self, issues: Sequence[ConfigIssue] | str, *, source: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.issues))


class ConfigValueError(ValueError):
    """A validator's complaint. ``at`` names a sub-path below the validated node, e.g. ``('luns', 2, 'lun')``."""

    def __init__(self, message: str, at: Loc = ()) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None``, ``list[X]`` or ``Annotated[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_of(typing.get_args(annotation)[0])
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _allowed_keys(root: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model that holds the last element of ``loc``."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _describe(error: Any, root: type[BaseModel]) -> tuple[Loc, str]:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if kind in ("value_error", "assertion_error") and isinstance(cause, ConfigValueError):
        return loc + cause.at, cause.message
    if kind in ("value_error", "assertion_error") and cause is not None:
        return loc, str(cause)
    if kind == "missing":
        return loc, "is required but missing"
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _allowed_keys(root, loc)
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = (
            f" (did you mean {close[0]!r}?)"
            if close
            else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        )
        return loc, f"unknown key {key!r}{hint}"
    msg = str(error["msg"])
    msg = msg[:1].lower() + msg[1:]
    return loc, f"{msg} (got {error['input']!r})"


def issues_from_validation_error(exc: ValidationError, root: type[BaseModel]) -> list[ConfigIssue]:
    """Translate pydantic's errors into path-named issues, in document order."""
    issues = []
    for error in exc.errors():
        loc, message = _describe(error, root)
        issues.append(ConfigIssue(format_loc(loc), message))
    return issues
