"""A small private PKI for TLS portals, made with the ``cryptography`` library (X.509, RFC 5280).

:func:`create_ca` makes a self-signed CA; :func:`issue` signs a target certificate (its iSCSI names as URI
SANs plus DNS/IP SANs for the hosts initiators connect to) or a client certificate (the initiator's iSCSI
name as subject CN and URI SAN, so the target can tie it to the InitiatorName); :func:`revoke` writes a
CRL.  Keys are EC P-256.  Files are PEM; private keys are written mode 0600.  ``cistern tls`` is the
command-line face of these functions.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "create_ca", "issue", "load_ca", "revoke"]


@dataclass(frozen=True, slots=True)
class Issued:
    """Paths of what was written."""

    certificate: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create_ca(cert_path: Path, key_path: Path, *, name: str = "cistern CA", days: int = 3650) -> Issued:
    """A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign, cRLSign) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return Issued(cert_path, key_path)


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key; ValueError when the files are not a PEM certificate / EC key."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    return cert, key


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        if name.startswith(("iqn.", "eui.", "naa.")):
            out.append(x509.UniformResourceIdentifier(name))
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def issue(
    ca_cert: Path,
    ca_key: Path,
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    names: Iterable[str] = (),
    server: bool,
    days: int = 825,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """Sign a leaf certificate with the CA.

    ``names`` become subjectAltNames: iSCSI names (``iqn.``/``eui.``/``naa.``) as URIs, IP addresses as
    iPAddress, anything else as dNSName.  ``server`` picks the extended key usage (serverAuth for a target,
    clientAuth for an initiator).  ``not_before``/``not_after`` override the validity (tests make expired
    certificates with them).
    """
    authority, authority_key = load_ca(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start = not_before or now - datetime.timedelta(minutes=5)
    end = not_after or now + datetime.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), critical=False
        )
    )
    sans = _san(dict.fromkeys([common_name, *names]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(authority_key, hashes.SHA256())
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return Issued(cert_path, key_path)


def revoke(
    ca_cert: Path, ca_key: Path, crl_path: Path, certificates: Iterable[Path], *, days: int = 30
) -> int:
    """Add ``certificates`` to the CRL at ``crl_path`` (created if missing, earlier entries kept), signed by
    the CA; returns the number of revoked serials in the new CRL."""
    authority, authority_key = load_ca(ca_cert, ca_key)
    now = _now()
    serials: dict[int, datetime.datetime] = {}
    if crl_path.exists():
        old = x509.load_pem_x509_crl(crl_path.read_bytes())
        for entry in old:
            serials[entry.serial_number] = entry.revocation_date_utc
    for path in certificates:
        serials.setdefault(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=days))
    )
    for serial, when in serials.items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(authority_key, hashes.SHA256())
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return len(serials)
