"""Network portals (RFC 7143 section 4.2.8 / TargetAddress syntax): ``HOST[:PORT]`` with IPv6 in brackets.

Port 0 asks the server for any free port (the bound address is reported once listening).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

ISCSI_PORT = 3260
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _is_hostname(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in host.rstrip(".").split("."))


def format_address(host: str, port: int) -> str:
    """``('::1', 3260)`` -> ``'[::1]:3260'``; ``('127.0.0.1', 3260)`` -> ``'127.0.0.1:3260'``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, order=True)
class Portal:
    """One listening address. ``str(portal)`` is the ``HOST:PORT`` form used in configs and URLs."""

    host: str
    port: int = ISCSI_PORT

    def __str__(self) -> str:
        return format_address(self.host, self.port)

    @classmethod
    def parse(cls, text: str) -> Portal:
        """Parse ``"127.0.0.1:3260"``, ``"[::1]:3260"``, ``"::1"``, ``"host.example"``; ``ValueError`` if not."""
        bad = f"{text!r} is not a portal (use HOST:PORT, IPv6 as [ADDR]:PORT)"
        if not isinstance(text, str) or not text.strip():
            raise ValueError(bad)
        text = text.strip()
        port_text: str | None = None
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(bad)
            port_text = rest[1:] if rest else None
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
        elif text.count(":") > 1:
            host = text  # a bare IPv6 address, no port
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(bad) from None
        else:
            host, sep, port_text_ = text.partition(":")
            port_text = port_text_ if sep else None
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                if not _is_hostname(host) or host.replace(".", "").isdigit():
                    raise ValueError(f"{text!r}: {host!r} is not an IPv4 address or host name") from None
        port = ISCSI_PORT
        if port_text is not None:
            if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
                raise ValueError(f"{text!r}: port {port_text!r} is not a number in 0..65535")
            port = int(port_text)
        return cls(host, port)
