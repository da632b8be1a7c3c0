"""``cistern tls``: a private CA, target and initiator certificates, and revocation, for TLS portals.

Three commands set a host up (files land in ``--dir``, default the current directory)::

    cistern tls ca                                            # ca.pem, ca.key
    cistern tls target iqn.2024-01.org.example:disk --host 127.0.0.1 --host storage.example
                                                              # target.pem, target.key
    cistern tls initiator iqn.2024-01.org.example:host1       # initiator.pem, initiator.key

``cistern tls revoke initiator.pem`` adds a certificate to ``crl.pem``.  Certificates are EC P-256,
signed with SHA-256 by :mod:`cistern.security.pki` (the ``cryptography`` library).
"""

from __future__ import annotations

from pathlib import Path

import click


def _dir_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="Where the files are read and written.",
    )(fn)


def _ca_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--ca", "ca_name", default="ca", show_default=True, help="CA file stem (STEM.pem/STEM.key)."
    )(fn)
    return _dir_option(fn)


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise click.UsageError(f"{', '.join(existing)} exists; pass --force to replace it")


def _ca_files(directory: Path, stem: str) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    for path in (cert, key):
        if not path.exists():
            raise click.UsageError(f"{path} does not exist: create the CA first with 'cistern tls ca'")
    return cert, key


@click.group("tls")
def tls_group() -> None:
    """Certificates for TLS portals (a private CA, target and initiator certificates, a CRL)."""


@tls_group.command("ca")
@click.option("--name", default="cistern CA", show_default=True, help="The CA's common name.")
@click.option("--days", type=click.IntRange(1, 36500), default=3650, show_default=True)
@click.option("--force", is_flag=True, help="Replace existing files.")
@_ca_options
def ca_cmd(name: str, days: int, force: bool, directory: Path, ca_name: str) -> None:
    """Create a private CA: STEM.pem (give it to initiators and targets) and STEM.key (keep it safe)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{ca_name}.pem", directory / f"{ca_name}.key"
    _refuse_overwrite([cert, key], force)
    from cistern.security import pki  # cryptography is imported when a tls command runs, not at every start

    pki.create_ca(cert, key, name=name, days=days)
    click.echo(f"{cert}\n{key}")


def _leaf(
    server: bool,
    name: str,
    hosts: tuple[str, ...],
    out: str,
    days: int,
    force: bool,
    directory: Path,
    ca_name: str,
) -> None:
    ca_cert, ca_key = _ca_files(directory, ca_name)
    cert, key = directory / f"{out}.pem", directory / f"{out}.key"
    _refuse_overwrite([cert, key], force)
    try:
        from cistern.security import pki

        pki.issue(ca_cert, ca_key, cert, key, common_name=name, names=hosts, server=server, days=days)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{cert}\n{key}")


@tls_group.command("target")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--host", "hosts", multiple=True, help="DNS name or IP address initiators connect to (repeatable)."
)
@click.option("--out", default="target", show_default=True, help="Output file stem (STEM.pem/STEM.key).")
@click.option("--days", type=click.IntRange(1, 3650), default=825, show_default=True)
@click.option("--force", is_flag=True, help="Replace existing files.")
@_ca_options
def target_cmd(
    names: tuple[str, ...],
    hosts: tuple[str, ...],
    out: str,
    days: int,
    force: bool,
    directory: Path,
    ca_name: str,
) -> None:
    """A target certificate naming the target IQN(s) NAMES (URI SANs) and the --host names/addresses."""
    _leaf(True, names[0], (*names[1:], *hosts), out, days, force, directory, ca_name)


@tls_group.command("initiator")
@click.argument("name")
@click.option("--out", default="initiator", show_default=True, help="Output file stem (STEM.pem/STEM.key).")
@click.option("--days", type=click.IntRange(1, 3650), default=825, show_default=True)
@click.option("--force", is_flag=True, help="Replace existing files.")
@_ca_options
def initiator_cmd(name: str, out: str, days: int, force: bool, directory: Path, ca_name: str) -> None:
    """A client certificate for the initiator NAME (its InitiatorName: subject CN and URI SAN)."""
    _leaf(False, name, (), out, days, force, directory, ca_name)


@tls_group.command("revoke")
@click.argument(
    "certificates", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--crl", default="crl.pem", show_default=True, help="The CRL file (in --dir) to create or extend."
)
@_ca_options
def revoke_cmd(certificates: tuple[Path, ...], crl: str, directory: Path, ca_name: str) -> None:
    """Add CERTIFICATES to the CRL; name it as ``crl`` in ``[tls]`` and reload (SIGHUP)."""
    ca_cert, ca_key = _ca_files(directory, ca_name)
    try:
        from cistern.security import pki

        count = pki.revoke(ca_cert, ca_key, directory / crl, certificates)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{directory / crl}: {count} revoked certificate(s)")


def register(group: click.Group) -> None:
    """Add ``cistern tls`` to the top-level command group."""
    group.add_command(tls_group)
