"""TLS for portals (``[tls]``): the target's certificate and key, the CA that signs client certificates,
an optional CRL.  Which portals speak TLS is said per portal group (``tls = true`` in
``[[targets.portal_groups]]``, or ``tls = true`` on a target using the flat ``portals`` form).

    [tls]
    certificate = "target.pem"       # PEM chain presented to initiators
    key = "target.key"
    ca = "ca.pem"                    # client certificates must chain to this CA
    crl = "crl.pem"                  # optional: revoked client certificates are refused
    require_client_certificate = true    # mutual TLS (default)
    bind_initiator_name = true       # the InitiatorName must be a name in the client certificate
    handshake_timeout = 10           # seconds

Relative paths are taken from the config file's directory.  The files are re-read on SIGHUP (and by the
admin reload): new connections use the new certificate, running sessions are not touched.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cistern.config.errors import ConfigValueError
from cistern.config.fields import PathField


class TlsConfig(BaseModel):
    """Certificates of the TLS portals (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    certificate: PathField
    key: PathField
    ca: PathField | None = None
    crl: PathField | None = None
    require_client_certificate: bool = True
    bind_initiator_name: bool = True
    handshake_timeout: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _ca_needed(self) -> TlsConfig:
        if self.require_client_certificate and self.ca is None:
            raise ConfigValueError(
                "client certificates are required (mutual TLS): name the CA that signs them, "
                "or set require_client_certificate = false",
                at=("ca",),
            )
        if self.crl is not None and self.ca is None:
            raise ConfigValueError("a CRL needs the CA it belongs to", at=("crl",))
        return self
