"""Target portal groups with ALUA states (RFC 7143 4.4.4.1, SPC-4 5.15): ``[[targets.portal_groups]]``.

Each portal group of a target is one iSCSI target portal group (its ``tag`` is the TPGT that SendTargets
and the login answer) and, to SCSI, one target port in a target port group of its own: the RELATIVE
TARGET PORT IDENTIFIER and the TARGET PORT GROUP reported in VPD page 0x83 and by REPORT TARGET PORT
GROUPS both equal the tag.  ``alua_state`` is that group's asymmetric access state at start-up.

    [[targets.portal_groups]]
    tag = 1
    portals = ["127.0.0.1:3260"]
    alua_state = "active/optimized"   # default; also "active/non-optimized", "standby", "unavailable"
    preferred = true                  # the PREF bit of REPORT TARGET PORT GROUPS (default false)
    tls = true                        # iSCSI inside TLS on these portals (see cistern.config.tls)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from cistern.config.errors import ConfigValueError
from cistern.config.fields import PortalField
from cistern.config.portals import Portal

AluaMode = Literal["implicit", "explicit", "both"]
"""Which ALUA the target supports (the TPGS field of INQUIRY): state changes made by cistern itself
(``implicit``), requested by initiators with SET TARGET PORT GROUPS (``explicit``), or ``both``."""

ALUA_STATES = ("active/optimized", "active/non-optimized", "standby", "unavailable")
"""The states a portal group may start in ("transitioning" is only ever passed through)."""


class PortalGroupConfig(BaseModel):
    """One target portal group: its tag (TPGT), its portals, its ALUA state."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tag: Annotated[int, Field(ge=1, le=65535)]
    portals: list[PortalField]
    alua_state: str = "active/optimized"
    preferred: bool = False
    #: the portals of this group speak iSCSI inside TLS (certificates in the root ``[tls]`` table)
    tls: bool = False

    @field_validator("portals")
    @classmethod
    def _portals(cls, value: list[Portal]) -> list[Portal]:
        if not value:
            raise ConfigValueError("a portal group needs at least one portal")
        seen: dict[str, int] = {}
        for index, portal in enumerate(value):
            text = str(portal)
            if text in seen:
                raise ConfigValueError(
                    f"portal {text!r} is listed twice (also at [{seen[text]}])", at=(index,)
                )
            seen[text] = index
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if not self.tls:  # plaintext is the default: keep configs without TLS as they were
            data.pop("tls", None)
        return data

    @field_validator("alua_state", mode="before")
    @classmethod
    def _state(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in ALUA_STATES:
                hint = (
                    " (transitioning is entered and left by the target itself)"
                    if value == "transitioning"
                    else ""
                )
                raise ConfigValueError(
                    f"{value!r} is not an ALUA state; use one of: {', '.join(ALUA_STATES)}{hint}"
                )
        return value


def check_portal_groups(groups: list[PortalGroupConfig]) -> None:
    """Across one target's groups: tags unique, no portal in two groups (error paths below ``portal_groups``)."""
    if not groups:
        raise ConfigValueError("leave portal_groups out, or list at least one group")
    tags: dict[int, int] = {}
    owner: dict[str, int] = {}
    for g_index, group in enumerate(groups):
        if group.tag in tags:
            raise ConfigValueError(
                f"tag {group.tag} is already used by portal_groups[{tags[group.tag]}]", at=(g_index, "tag")
            )
        tags[group.tag] = g_index
        for p_index, portal in enumerate(group.portals):
            text = str(portal)
            if text in owner:
                raise ConfigValueError(
                    f"portal {text!r} is already in portal_groups[{owner[text]}]; a portal belongs to one group",
                    at=(g_index, "portals", p_index),
                )
            owner[text] = g_index
