"""TLS contexts for portals and for our initiator (stdlib :mod:`ssl`, TLS 1.3 minimum, RFC 8446).

iSCSI runs unchanged inside the TLS connection: the TLS record layer gives every PDU encryption and
integrity, which RFC 3723 puts in IPsec.  A target context requires a client certificate signed by the
configured CA by default (mutual TLS) and checks the CRL when one is given; an initiator context verifies
the target's certificate against the CA.  Who a certificate names is :func:`certificate_names` (subject CN
and every subjectAltName value), which the target ties to the InitiatorName and the initiator to the
TargetName.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

__all__ = ["certificate_names", "initiator_context", "refusal_reason", "target_context"]


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def target_context(
    certificate: Path,
    key: Path,
    ca: Path | None,
    crl: Path | None = None,
    *,
    require_client_certificate: bool = True,
) -> ssl.SSLContext:
    """The server context of a TLS portal.  Raises OSError/ssl.SSLError (unreadable or mismatched files),
    ValueError (a client certificate required without a CA)."""
    context = _base(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    if require_client_certificate:
        if ca is None:
            raise ValueError("client certificates are required but no CA is configured")
        context.verify_mode = ssl.CERT_REQUIRED
    elif ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
    if crl is not None:
        context.load_verify_locations(cafile=str(crl))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def initiator_context(
    ca: Path | None, certificate: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """The client context of our initiator: verify the target against ``ca`` (the system store when None),
    present ``certificate``/``key`` when given.  The name check is the caller's (see
    :func:`certificate_names`), so ``check_hostname`` is off here."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
    if certificate is not None:
        context.load_cert_chain(certificate, key)
    return context


def certificate_names(peercert: dict[str, Any] | None) -> frozenset[str]:
    """The names a verified peer certificate (``SSLObject.getpeercert()``) carries: subject commonName and
    every subjectAltName value (URI, DNS, IP Address, email)."""
    if not peercert:
        return frozenset()
    names: set[str] = set()
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                names.add(value)
    for _kind, value in peercert.get("subjectAltName", ()):
        names.add(value.rstrip("\n") if isinstance(value, str) else str(value))
    return frozenset(names)


def refusal_reason(exc: BaseException) -> str:
    """A one-line reason for a failed handshake: the OpenSSL verify message when there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        hints = {
            "HTTP_REQUEST": "plaintext HTTP instead of TLS",
            "WRONG_VERSION_NUMBER": "not TLS (plaintext iSCSI?) or an older TLS version",
            "UNSUPPORTED_PROTOCOL": "TLS version below 1.3",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "no client certificate",
            "CERTIFICATE_VERIFY_FAILED": "certificate rejected",
            "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate revoked",
        }
        return hints.get(str(reason), str(reason).lower().replace("_", " "))
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    if isinstance(exc, ConnectionError):
        return f"connection lost during the TLS handshake ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"
