"""CHAP authentication for iSCSI login, both roles (RFC 1994; RFC 7143 12.1.3; IANA iSCSI CHAP_A registry).

The response is ``H(CHAP_I || secret || CHAP_C)`` with CHAP_I a single octet. Algorithms (CHAP_A):
5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256. The target picks the first algorithm of the initiator's CHAP_A
list that it allows, sends CHAP_A, CHAP_I and a random CHAP_C at least as long as the digest; the
initiator returns CHAP_N and CHAP_R, and for mutual authentication also CHAP_I and CHAP_C, to which the
target answers CHAP_N and CHAP_R. A target refuses a mutual challenge equal to the one it sent
(reflection). Responses are compared in constant time. Binary values are accepted hex (0x) or base64
(0b) and sent hex.

:class:`ChapError` carries the login status the target should answer with (0x0201 authentication
failure, or 0x0200 initiator error for malformed CHAP keys).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cistern.wire.text import TextError, decode_binary, decode_number, encode_hex, split_list

__all__ = [
    "DEFAULT_ALGORITHMS",
    "ChapAlgorithm",
    "ChapCredentials",
    "ChapError",
    "ChapInitiator",
    "ChapTarget",
    "chap_response",
]

#: RFC 7143 12.1.3: CHAP_C and CHAP_R are at most 1024 bytes.
MAX_CHAP_BINARY = 1024
#: CHAP_N is a text value; bounded like any simple value.
MAX_CHAP_NAME = 255

STATUS_INITIATOR_ERROR = 0x0200
STATUS_AUTH_FAILURE = 0x0201


class ChapAlgorithm(enum.IntEnum):
    MD5 = 5
    SHA1 = 6
    SHA256 = 7
    SHA3_256 = 8

    @property
    def digest_size(self) -> int:
        return _HASHES[self]().digest_size


_HASHES: dict[ChapAlgorithm, Callable[[], hashlib._Hash]] = {
    ChapAlgorithm.MD5: hashlib.md5,
    ChapAlgorithm.SHA1: hashlib.sha1,
    ChapAlgorithm.SHA256: hashlib.sha256,
    ChapAlgorithm.SHA3_256: hashlib.sha3_256,
}

#: Strongest first: what an initiator offers, and every algorithm a target allows by default
#: (MD5 stays allowed because libiscsi and older open-iscsi offer only CHAP_A=5).
DEFAULT_ALGORITHMS: tuple[ChapAlgorithm, ...] = (
    ChapAlgorithm.SHA3_256,
    ChapAlgorithm.SHA256,
    ChapAlgorithm.SHA1,
    ChapAlgorithm.MD5,
)


class ChapError(Exception):
    """CHAP failed; ``status`` is the login status (class << 8 | detail) the target answers with."""

    def __init__(self, message: str, status: int = STATUS_AUTH_FAILURE) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """A CHAP name and secret (one direction)."""

    user: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.user or len(self.user.encode()) > MAX_CHAP_NAME or "\0" in self.user:
            raise ValueError("CHAP user name must be 1..255 bytes without NUL")
        if not self.secret:
            raise ValueError("CHAP secret must not be empty")


def chap_response(algorithm: ChapAlgorithm, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 4.1: H(Identifier || secret || Challenge)."""
    h = _HASHES[algorithm]()
    h.update(bytes((identifier & 0xFF,)))
    h.update(secret)
    h.update(challenge)
    return h.digest()


def _binary(pairs: Mapping[str, str], key: str) -> bytes:
    value = pairs.get(key)
    if value is None:
        raise ChapError(f"{key} missing", STATUS_INITIATOR_ERROR)
    try:
        data = decode_binary(value, max_bytes=MAX_CHAP_BINARY)
    except TextError as exc:
        raise ChapError(f"bad {key}: {exc}", STATUS_INITIATOR_ERROR) from None
    if not data:
        raise ChapError(f"empty {key}", STATUS_INITIATOR_ERROR)
    return data


def _identifier(pairs: Mapping[str, str]) -> int:
    value = pairs.get("CHAP_I")
    if value is None:
        raise ChapError("CHAP_I missing", STATUS_INITIATOR_ERROR)
    try:
        return decode_number(value, maximum=255)
    except TextError as exc:
        raise ChapError(f"bad CHAP_I: {exc}", STATUS_INITIATOR_ERROR) from None


def _challenge_length(algorithm: ChapAlgorithm, requested: int | None) -> int:
    length = requested if requested is not None else max(16, algorithm.digest_size)
    return min(max(length, algorithm.digest_size, 16), MAX_CHAP_BINARY)


class ChapTarget:
    """Target side of CHAP. Drive it with :meth:`select_algorithm` (the initiator's CHAP_A) and then
    :meth:`verify` (the initiator's CHAP_N/CHAP_R[/CHAP_I/CHAP_C])."""

    def __init__(
        self,
        lookup_secret: Callable[[str], bytes | None],
        *,
        algorithms: Sequence[int] = DEFAULT_ALGORITHMS,
        mutual: ChapCredentials | None = None,
        require_mutual: bool = False,
        challenge_length: int | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._lookup = lookup_secret
        self._allowed = tuple(ChapAlgorithm(a) for a in algorithms)
        self._mutual = mutual
        self._require_mutual = require_mutual
        self._challenge_length = challenge_length
        self._random = random_bytes
        self._algorithm: ChapAlgorithm | None = None
        self._identifier = 0
        self._challenge = b""
        self.user: str | None = None

    @property
    def algorithm(self) -> ChapAlgorithm | None:
        return self._algorithm

    def select_algorithm(self, chap_a: str) -> list[tuple[str, str]]:
        """Answer the initiator's CHAP_A list: CHAP_A, CHAP_I, CHAP_C. Raises ChapError (0x0201) when
        no offered algorithm is allowed."""
        if self._algorithm is not None:
            raise ChapError("CHAP_A sent twice", STATUS_INITIATOR_ERROR)
        try:
            offered = split_list(chap_a)
        except TextError as exc:
            raise ChapError(f"bad CHAP_A: {exc}", STATUS_INITIATOR_ERROR) from None
        for item in offered:
            if item.isascii() and item.isdigit() and len(item) <= 3 and int(item) in self._allowed:
                self._algorithm = ChapAlgorithm(int(item))
                break
        else:
            raise ChapError(f"no acceptable CHAP algorithm in {chap_a[:64]!r}")
        self._identifier = self._random(1)[0]
        self._challenge = self._random(_challenge_length(self._algorithm, self._challenge_length))
        return [
            ("CHAP_A", str(int(self._algorithm))),
            ("CHAP_I", str(self._identifier)),
            ("CHAP_C", encode_hex(self._challenge)),
        ]

    def verify(self, pairs: Mapping[str, str]) -> list[tuple[str, str]]:
        """Check CHAP_N/CHAP_R; for a mutual request also answer CHAP_N/CHAP_R for the initiator's
        CHAP_I/CHAP_C. Returns the pairs to send (empty for one-way). Raises ChapError."""
        algorithm = self._algorithm
        if algorithm is None:
            raise ChapError("CHAP response before CHAP_A", STATUS_INITIATOR_ERROR)
        self._algorithm = None  # one attempt per challenge: never verify twice against it
        name = pairs.get("CHAP_N")
        if not name or len(name.encode()) > MAX_CHAP_NAME:
            raise ChapError("CHAP_N missing or too long", STATUS_INITIATOR_ERROR)
        received = _binary(pairs, "CHAP_R")
        secret = self._lookup(name)
        if secret is None:
            # Spend the same work as a real check so a user's existence does not show in timing.
            hmac.compare_digest(received, chap_response(algorithm, 0, b"\0" * 16, self._challenge))
            raise ChapError("authentication failed")
        expected = chap_response(algorithm, self._identifier, secret, self._challenge)
        if not hmac.compare_digest(received, expected):
            raise ChapError("authentication failed")
        wants_mutual = "CHAP_I" in pairs or "CHAP_C" in pairs
        if not wants_mutual:
            if self._require_mutual:
                raise ChapError("mutual CHAP required")
            self.user = name
            return []
        identifier = _identifier(pairs)
        challenge = _binary(pairs, "CHAP_C")
        if hmac.compare_digest(challenge, self._challenge):
            raise ChapError("mutual challenge reflects our own challenge")
        if len(challenge) < 16:
            raise ChapError("mutual challenge shorter than 16 bytes")
        if self._mutual is None:
            raise ChapError("mutual CHAP requested but no target credentials configured")
        if hmac.compare_digest(self._mutual.secret, secret):
            raise ChapError("mutual CHAP secret equals the initiator's secret")
        self.user = name
        response = chap_response(algorithm, identifier, self._mutual.secret, challenge)
        return [("CHAP_N", self._mutual.user), ("CHAP_R", encode_hex(response))]


class ChapInitiator:
    """Initiator side of CHAP: :meth:`offer` (CHAP_A), :meth:`respond` (to CHAP_A/I/C), and for mutual
    authentication :meth:`verify_target` (the target's CHAP_N/CHAP_R)."""

    def __init__(
        self,
        credentials: ChapCredentials,
        *,
        mutual: ChapCredentials | None = None,
        algorithms: Sequence[int] = DEFAULT_ALGORITHMS,
        challenge_length: int | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._credentials = credentials
        self._mutual = mutual
        self._algorithms = tuple(ChapAlgorithm(a) for a in algorithms)
        self._challenge_length = challenge_length
        self._random = random_bytes
        self._algorithm: ChapAlgorithm | None = None
        self._identifier = 0
        self._challenge = b""
        self.target_verified = False

    def offer(self) -> list[tuple[str, str]]:
        return [("CHAP_A", ",".join(str(int(a)) for a in self._algorithms))]

    def respond(self, pairs: Mapping[str, str]) -> list[tuple[str, str]]:
        """Answer the target's CHAP_A/CHAP_I/CHAP_C with CHAP_N/CHAP_R (+CHAP_I/CHAP_C if mutual)."""
        try:
            algorithm = ChapAlgorithm(decode_number(pairs.get("CHAP_A", ""), maximum=255))
        except (TextError, ValueError):
            raise ChapError("target chose no valid CHAP_A") from None
        if algorithm not in self._algorithms:
            raise ChapError(f"target chose CHAP_A={int(algorithm)} which we did not offer")
        identifier = _identifier(pairs)
        challenge = _binary(pairs, "CHAP_C")
        self._algorithm = algorithm
        out = [
            ("CHAP_N", self._credentials.user),
            ("CHAP_R", encode_hex(chap_response(algorithm, identifier, self._credentials.secret, challenge))),
        ]
        if self._mutual is not None:
            self._identifier = self._random(1)[0]
            length = _challenge_length(algorithm, self._challenge_length)
            own = self._random(length)
            while hmac.compare_digest(own, challenge):
                own = self._random(length)
            self._challenge = own
            out += [("CHAP_I", str(self._identifier)), ("CHAP_C", encode_hex(own))]
        return out

    @property
    def mutual(self) -> bool:
        return self._mutual is not None

    def verify_target(self, pairs: Mapping[str, str]) -> None:
        """Check the target's CHAP_N/CHAP_R against our mutual challenge; raises ChapError."""
        if self._mutual is None or self._algorithm is None:
            raise ChapError("unexpected target CHAP response")
        if pairs.get("CHAP_N") != self._mutual.user:
            raise ChapError("target CHAP_N does not match the expected target user")
        received = _binary(pairs, "CHAP_R")
        expected = chap_response(self._algorithm, self._identifier, self._mutual.secret, self._challenge)
        if not hmac.compare_digest(received, expected):
            raise ChapError("target failed mutual authentication")
        self.target_verified = True
