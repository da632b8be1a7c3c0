"""One iSCSI target node (RFC 7143 section 4.2.7): its target portal groups, access, LUNs.

Where it listens is either ``portals`` + ``tpgt`` (one portal group, the original form) or
``portal_groups`` (several groups, each a SCSI target port with its own ALUA state; see
:mod:`cistern.config.portal_groups`), never both.  ``alua`` says which ALUA the target supports.

Access is explicit: either ``acl`` lists the initiator names allowed to log in, or ``open = true`` admits
any initiator. Exactly one of the two; a target with neither would refuse everyone.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from cistern.config.auth import AuthConfig
from cistern.config.errors import ConfigValueError
from cistern.config.fields import IscsiName, PortalField
from cistern.config.lun import LunConfig
from cistern.config.params import ParamsConfig
from cistern.config.portal_groups import AluaMode, PortalGroupConfig, check_portal_groups
from cistern.config.portals import Portal
from cistern.config.tape import check_target_tape

DEFAULT_PORTAL = Portal("127.0.0.1", 3260)
MAX_ALIAS_BYTES = 255


class TargetConfig(BaseModel):
    """A target: its name, where it listens (one portal group, tag ``tpgt``), who may log in, its LUNs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: IscsiName
    alias: str | None = None
    portals: list[PortalField] = Field(default_factory=lambda: [DEFAULT_PORTAL])
    tpgt: Annotated[int, Field(ge=1, le=65535)] = 1
    portal_groups: list[PortalGroupConfig] | None = None
    alua: AluaMode | None = None  # None: "implicit"
    acl: list[IscsiName] = Field(default_factory=list)
    open: bool = False
    #: the flat ``portals`` form: these portals speak TLS (with ``portal_groups``, say it per group)
    tls: bool = False
    #: client-certificate names (subject CN or a subjectAltName) admitted to this target over TLS, on top of
    #: the ACL; empty: any certificate the CA signed (tied to the InitiatorName by ``tls.bind_initiator_name``)
    tls_clients: list[str] = Field(default_factory=list)
    auth: AuthConfig | None = None
    params: ParamsConfig = Field(default_factory=ParamsConfig)
    luns: list[LunConfig] = Field(default_factory=list)

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or len(value.encode("utf-8")) > MAX_ALIAS_BYTES or any(ord(ch) < 0x20 for ch in value):
            raise ConfigValueError(
                f"{value!r}: alias must be 1..{MAX_ALIAS_BYTES} bytes without control characters"
            )
        return value

    @field_validator("portals")
    @classmethod
    def _portals(cls, value: list[Portal]) -> list[Portal]:
        if not value:
            raise ConfigValueError("a target needs at least one portal")
        _no_duplicates([str(p) for p in value], "portal")
        return value

    @field_validator("tls_clients")
    @classmethod
    def _tls_clients(cls, value: list[str]) -> list[str]:
        for index, name in enumerate(value):
            if not name or len(name) > 1024 or any(ord(ch) < 0x20 for ch in name):
                raise ConfigValueError(f"{name!r} is not a certificate name", at=(index,))
        _no_duplicates(value, "certificate name")
        return value

    @field_validator("acl")
    @classmethod
    def _acl(cls, value: list[str]) -> list[str]:
        _no_duplicates(value, "initiator")
        return value

    @model_validator(mode="after")
    def _access_and_luns(self) -> TargetConfig:
        if self.open and self.acl:
            raise ConfigValueError(
                "open = true admits every initiator; remove acl or set open = false", at=("open",)
            )
        if not self.open and not self.acl:
            raise ConfigValueError(
                "no initiator may log in: list initiator names in acl, or set open = true", at=("acl",)
            )
        seen: dict[int, int] = {}
        for index, lun in enumerate(self.luns):
            if lun.lun in seen:
                raise ConfigValueError(
                    f"LUN {lun.lun} is already used by luns[{seen[lun.lun]}]", at=("luns", index, "lun")
                )
            seen[lun.lun] = index
        check_target_tape(self.luns)
        return self

    @model_validator(mode="after")
    def _portal_groups(self) -> TargetConfig:
        if self.portal_groups is None:
            return self
        both = [name for name in ("portals", "tpgt", "tls") if name in self.model_fields_set]
        if both:
            raise ConfigValueError(
                f"{' and '.join(both)} cannot be given with portal_groups: list the portals in their groups",
                at=(both[0],),
            )
        try:
            check_portal_groups(self.portal_groups)
        except ConfigValueError as exc:
            raise ConfigValueError(exc.message, at=("portal_groups", *exc.at)) from None
        # the flat view for readers of ``portals``/``tpgt`` (listings, connect hints); not dumped
        self.portals = [p for group in self.portal_groups for p in group.portals]
        self.tpgt = self.portal_groups[0].tag
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if not self.tls:  # plaintext is the default: keep configs without TLS as they were
            data.pop("tls", None)
        if self.portal_groups is not None:  # the groups say it all; portals/tpgt would contradict on reload
            data.pop("portals", None)
            data.pop("tpgt", None)
        return data

    def effective_portal_groups(self) -> list[PortalGroupConfig]:
        """The portal groups this target serves: ``portal_groups``, or one group made of ``portals``/``tpgt``."""
        if self.portal_groups is not None:
            return list(self.portal_groups)
        return [PortalGroupConfig(tag=self.tpgt, portals=list(self.portals), tls=self.tls)]

    @property
    def alua_mode(self) -> AluaMode:
        return self.alua or "implicit"

    @property
    def chap(self) -> bool:
        return self.auth is not None and self.auth.chap is not None


def _no_duplicates(values: list[str], what: str) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise ConfigValueError(f"{what} {value!r} is listed twice (also at [{seen[value]}])", at=(index,))
        seen[value] = index
