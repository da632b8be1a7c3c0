"""libiscsi-style iSCSI URLs: ``iscsi://[user%secret@]host[:port][/target-iqn[/lun]]``.

``iscsis://`` is the same URL for a portal that speaks iSCSI inside TLS (cistern's convention, see
docs/design.md): the connection is TLS 1.3 and the target's certificate is verified.

The target's mutual CHAP credentials are not part of the URL (libiscsi takes them from the environment);
callers pass them separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from cistern.initiator.params import DEFAULT_PORT, ChapSecret


class UrlError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class IscsiUrl:
    host: str
    port: int = DEFAULT_PORT
    target: str | None = None
    lun: int | None = None
    chap: ChapSecret | None = None
    tls: bool = False

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        text = f"{'iscsis' if self.tls else 'iscsi'}://{self.portal}"
        if self.target:
            text += f"/{self.target}"
            if self.lun is not None:
                text += f"/{self.lun}"
        return text


def parse_portal(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UrlError(f"unterminated IPv6 address in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UrlError(f"bad portal {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise UrlError(f"no host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UrlError(f"bad port in {text!r}")
    return host, int(port_text)


def is_url(text: str) -> bool:
    return text.startswith(("iscsi://", "iscsis://"))


def parse_url(text: str) -> IscsiUrl:
    if not is_url(text):
        raise UrlError(f"not an iscsi:// or iscsis:// URL: {text!r}")
    tls = text.startswith("iscsis://")
    rest = text.partition("://")[2]
    chap = None
    at = rest.rfind("@", 0, rest.find("/") if "/" in rest else len(rest))
    if at >= 0:
        cred, rest = rest[:at], rest[at + 1 :]
        user, sep, secret = cred.partition("%")
        if not sep or not user:
            raise UrlError("credentials must be written user%secret@")
        chap = ChapSecret(unquote(user), unquote(secret))
    portal, _, path = rest.partition("/")
    host, port = parse_portal(portal)
    target: str | None = None
    lun: int | None = None
    if path:
        target_text, _, lun_text = path.partition("/")
        target = unquote(target_text) or None
        lun_text = lun_text.rstrip("/")
        if lun_text:
            if not lun_text.isdigit() or int(lun_text) > 16383:
                raise UrlError(f"bad LUN {lun_text!r}")
            lun = int(lun_text)
    return IscsiUrl(host, port, target, lun, chap, tls)
