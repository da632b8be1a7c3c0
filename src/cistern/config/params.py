"""Operational parameter overrides (RFC 7143 section 13): what the target offers or accepts in login.

Every field is optional; ``None`` leaves the implementation's default. Field names are the RFC key names
in snake case (MaxRecvDataSegmentLength -> ``max_recv_data_segment_length``). :meth:`ParamsConfig.text_keys`
gives the RFC spelling and text values.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cistern.config.errors import ConfigValueError
from cistern.wire.params import PARAM_BY_NAME

Digest = Literal["CRC32C", "None"]


def _rfc_range(name: str) -> Any:
    """The RFC 7143 range of parameter ``name`` (from wire.params.PARAMS) as a pydantic constraint."""
    p = PARAM_BY_NAME[name]
    return Field(ge=p.minimum, le=p.maximum)


SegmentLength = Annotated[int, _rfc_range("max_recv_data_segment_length")]


class ParamsConfig(BaseModel):
    """Login key overrides for one target. Digest lists are in preference order."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_recv_data_segment_length: SegmentLength | None = None
    max_burst_length: Annotated[int, _rfc_range("max_burst_length")] | None = None
    first_burst_length: Annotated[int, _rfc_range("first_burst_length")] | None = None
    initial_r2t: bool | None = None
    immediate_data: bool | None = None
    max_outstanding_r2t: Annotated[int, _rfc_range("max_outstanding_r2t")] | None = None
    max_connections: Annotated[int, _rfc_range("max_connections")] | None = None
    default_time2wait: Annotated[int, _rfc_range("default_time2wait")] | None = None
    default_time2retain: Annotated[int, _rfc_range("default_time2retain")] | None = None
    data_pdu_in_order: bool | None = None
    data_sequence_in_order: bool | None = None
    error_recovery_level: Annotated[int, _rfc_range("error_recovery_level")] | None = None
    header_digest: list[Digest] | None = None
    data_digest: list[Digest] | None = None

    @field_validator("header_digest", "data_digest")
    @classmethod
    def _digest_list(cls, value: list[Digest] | None) -> list[Digest] | None:
        if value is None:
            return None
        if not value:
            raise ConfigValueError('must list at least one of "CRC32C", "None"')
        if len(set(value)) != len(value):
            raise ConfigValueError(f"{value!r} lists a digest twice")
        return value

    @field_validator("data_pdu_in_order", "data_sequence_in_order")
    @classmethod
    def _in_order_only(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ConfigValueError(
                "out-of-order Data PDUs/sequences are not implemented by the target (RFC 7143 13.18/13.19); "
                "remove the setting or set true"
            )
        return value

    @model_validator(mode="after")
    def _burst_order(self) -> ParamsConfig:
        first, burst = self.first_burst_length, self.max_burst_length
        if first is not None and burst is not None and first > burst:
            raise ConfigValueError(
                f"{first} exceeds max_burst_length {burst} (RFC 7143 section 13.14)",
                at=("first_burst_length",),
            )
        return self

    def text_keys(self) -> dict[str, str]:
        """The overrides as RFC 7143 text keys: ``{"InitialR2T": "No", "HeaderDigest": "CRC32C,None"}``."""
        keys: dict[str, str] = {}
        for field, key in RFC_KEY_NAMES.items():
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, bool):
                keys[key] = "Yes" if value else "No"
            elif isinstance(value, list):
                keys[key] = ",".join(value)
            else:
                keys[key] = str(value)
        return keys


#: snake_case field -> RFC 7143 key name (the wire.params.PARAMS table, restricted to the config's fields)
RFC_KEY_NAMES: dict[str, str] = {name: PARAM_BY_NAME[name].key for name in ParamsConfig.model_fields}
