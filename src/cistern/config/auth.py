"""Authentication settings: CHAP (RFC 7143 section 12.1.3, RFC 1994), one-way or mutual.

``username``/``secret`` are what the initiator must answer with (CHAP_N/CHAP_R); ``mutual_username``/
``mutual_secret`` are what the target answers with when the initiator challenges it back. The secrets must be
at least 12 characters (96 bits, the RFC's floor without IPsec) and, per the RFC, a secret that
authenticates initiators MUST NOT also authenticate targets, so the two must differ.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cistern.config.errors import ConfigValueError

#: CHAP_A identifiers (IANA PPP authentication algorithms) by the names used in configs.
CHAP_ALGORITHM_IDS: dict[str, int] = {"MD5": 5, "SHA1": 6, "SHA-256": 7, "SHA3-256": 8}
ChapAlgorithm = Literal["SHA3-256", "SHA-256", "SHA1", "MD5"]
DEFAULT_CHAP_ALGORITHMS: tuple[ChapAlgorithm, ...] = ("SHA3-256", "SHA-256", "SHA1", "MD5")
MIN_SECRET_CHARS = 12
MAX_SECRET_CHARS = 255
MAX_CHAP_NAME_CHARS = 255


def _check_name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_CHAP_NAME_CHARS or "\x00" in value:
        raise ConfigValueError(f"{what} must be 1..{MAX_CHAP_NAME_CHARS} characters without NUL")
    return value


def _check_secret(value: str | None) -> str | None:
    if value is None:
        return None
    if "\x00" in value:
        raise ConfigValueError("secret must not contain NUL")
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigValueError(
            f"secret is {len(value)} characters; at least {MIN_SECRET_CHARS} are required "
            "(96 bits, RFC 7143 section 12.1.3)"
        )
    if len(value) > MAX_SECRET_CHARS:
        raise ConfigValueError(f"secret is {len(value)} characters; at most {MAX_SECRET_CHARS} are allowed")
    return value


class ChapConfig(BaseModel):
    """CHAP credentials. Mutual CHAP when both ``mutual_username`` and ``mutual_secret`` are set."""

    model_config = ConfigDict(extra="forbid", strict=True)

    username: str
    secret: str = Field(repr=False)
    mutual_username: str | None = None
    mutual_secret: str | None = Field(default=None, repr=False)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        _check_name(value, "username")
        return value

    @field_validator("mutual_username")
    @classmethod
    def _mutual_username(cls, value: str | None) -> str | None:
        return _check_name(value, "mutual_username")

    @field_validator("secret", "mutual_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return _check_secret(value)

    @model_validator(mode="after")
    def _mutual_pair(self) -> ChapConfig:
        if (self.mutual_username is None) != (self.mutual_secret is None):
            missing = "mutual_secret" if self.mutual_secret is None else "mutual_username"
            raise ConfigValueError("mutual CHAP needs both mutual_username and mutual_secret", at=(missing,))
        if self.mutual_secret is not None and self.mutual_secret == self.secret:
            raise ConfigValueError(
                "must differ from secret (RFC 7143 section 12.1.3: a secret that authenticates "
                "initiators MUST NOT also authenticate targets)",
                at=("mutual_secret",),
            )
        return self

    @property
    def mutual(self) -> bool:
        return self.mutual_secret is not None


class AuthConfig(BaseModel):
    """How initiators authenticate. With ``chap`` set, CHAP is required (AuthMethod=CHAP only)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    chap: ChapConfig | None = None
    chap_algorithms: list[ChapAlgorithm] = Field(default_factory=lambda: list(DEFAULT_CHAP_ALGORITHMS))

    @field_validator("chap_algorithms")
    @classmethod
    def _algorithms(cls, value: list[ChapAlgorithm]) -> list[ChapAlgorithm]:
        if not value:
            raise ConfigValueError("must list at least one of " + ", ".join(DEFAULT_CHAP_ALGORITHMS))
        seen: set[str] = set()
        for index, name in enumerate(value):
            if name in seen:
                raise ConfigValueError(f"{name!r} is listed twice", at=(index,))
            seen.add(name)
        return value

    @property
    def chap_algorithm_ids(self) -> list[int]:
        """The CHAP_A values to offer, in preference order."""
        return [CHAP_ALGORITHM_IDS[name] for name in self.chap_algorithms]
