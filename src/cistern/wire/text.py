"""iSCSI text data segment: ``key=value\\0`` pairs and value encodings (RFC 7143 section 6.1).

Owns the byte-level syntax only: splitting a Login/Text data segment into ordered (key, value) pairs,
encoding pairs back, the hard size limits that protect us from a hostile peer, the accumulation of a
text spread over several PDUs with the C (continue) bit, and the value encodings of section 6.1
(decimal, hex ``0x``, base64 ``0b``, Boolean ``Yes``/``No``, comma-separated lists). What a key *means*
belongs to :mod:`cistern.wire.keys` and :mod:`cistern.wire.negotiation`.

Every parse failure raises :class:`TextError`, and nothing else, whatever the input bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PAIRS",
    "MAX_TEXT_LENGTH",
    "MAX_VALUE_LENGTH",
    "NO_VALUE",
    "TextAccumulator",
    "TextError",
    "decode_binary",
    "decode_boolean",
    "decode_number",
    "encode_base64",
    "encode_boolean",
    "encode_hex",
    "encode_number",
    "encode_send_targets",
    "encode_text",
    "join_list",
    "parse_send_targets",
    "parse_target_address",
    "parse_text",
    "split_list",
    "split_text",
]

#: RFC 7143 6.1: "Key names MUST NOT exceed 63 bytes."
MAX_KEY_LENGTH = 63
#: Encoded value bound (bytes). Simple values are at most 255 bytes; a large-binary-value such as
#: CHAP_C/CHAP_R (up to 1024 bytes, RFC 7143 12.1.3) is 2050 bytes in hex; 8192 covers every key.
MAX_VALUE_LENGTH = 8192
#: Total key=value bytes in one negotiation sequence (RFC 7143 6.1 requires accepting >= 8192 bytes,
#: and >= 64 KiB when long authentication items are in use).
MAX_TEXT_LENGTH = 65536
#: Number of pairs accepted in one negotiation sequence.
MAX_PAIRS = 1024
#: RFC 7143 6.1 numerical values are at most 64 bits.
MAX_NUMBER = 2**64 - 1
#: The value :func:`parse_text` gives a well-formed key name sent without ``=``.  RFC 7143 6.1 knows only
#: ``key=value`` items, so the key has no value at all; no value on the wire can contain NUL (the
#: delimiter), so NO_VALUE never equals a value a peer sent, matches no admissible value of any key, and
#: :func:`encode_text` refuses to send it.  The negotiation answers such a key like any inadmissible
#: value: ``Reject`` for a key we know (RFC 7143 6.2.1, 6.2.2), ``NotUnderstood`` for one we do not (6.2).
NO_VALUE = "\0"

# RFC 7143 6.1: a key-name is letters, digits, '.', '-', '+', '@', '_' and begins with a capital letter.
# Vendor keys registered with IANA take the form "X#name" (RFC 7143 13.5), hence the one '#' allowed there.
_KEY_RE = re.compile(r"[A-Z][A-Za-z0-9.\-+@_]*|X#[A-Za-z0-9.\-+@_]+")
_DECIMAL_RE = re.compile(r"[0-9]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class TextError(ValueError):
    """Malformed or oversized text from the peer (RFC 7143 6.1). Always a peer protocol error."""


def _check_key(key: str) -> None:
    if not key:
        raise TextError("empty key name")
    if len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise TextError(f"key name longer than {MAX_KEY_LENGTH} bytes")
    if _KEY_RE.fullmatch(key) is None:
        raise TextError(f"invalid key name {key!r}")


def parse_text(data: bytes | bytearray | memoryview, *, max_pairs: int = MAX_PAIRS) -> list[tuple[str, str]]:
    """Parse a complete text data segment into ordered ``(key, value)`` pairs.

    Each pair is ``key=value`` terminated by one NUL. A missing final NUL and empty items (stray NULs,
    e.g. padding) are tolerated; a well-formed key name without ``=`` gives ``(key, NO_VALUE)`` so that
    it is answered for that key alone; everything else malformed raises :class:`TextError`.
    Duplicate keys are kept: whether a repeat is legal is the negotiation's decision.
    """
    raw = bytes(data)
    if len(raw) > MAX_TEXT_LENGTH:
        raise TextError(f"text longer than {MAX_TEXT_LENGTH} bytes")
    pairs: list[tuple[str, str]] = []
    for item in raw.split(b"\0"):
        if not item:
            continue
        key_raw, sep, value_raw = item.partition(b"=")
        try:
            key = key_raw.decode("ascii")
        except UnicodeDecodeError:
            raise TextError("non-ASCII key name") from None
        _check_key(key)
        if not sep:
            pairs.append((key, NO_VALUE))
            if len(pairs) > max_pairs:
                raise TextError(f"more than {max_pairs} key=value pairs")
            continue
        if len(value_raw) > MAX_VALUE_LENGTH:
            raise TextError(f"value of {key} longer than {MAX_VALUE_LENGTH} bytes")
        try:
            value = value_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TextError(f"value of {key} is not UTF-8") from None
        pairs.append((key, value))
        if len(pairs) > max_pairs:
            raise TextError(f"more than {max_pairs} key=value pairs")
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encode pairs as ``key=value\\0...``. Raises :class:`TextError` for a pair we must not send."""
    out = bytearray()
    for key, value in pairs:
        _check_key(key)
        encoded = value.encode("utf-8")
        if b"\0" in encoded:
            raise TextError(f"value of {key} contains NUL")
        if len(encoded) > MAX_VALUE_LENGTH:
            raise TextError(f"value of {key} longer than {MAX_VALUE_LENGTH} bytes")
        out += key.encode("ascii") + b"=" + encoded + b"\0"
    return bytes(out)


def split_text(data: bytes, max_segment: int) -> list[bytes]:
    """Cut an encoded text into data segments of at most ``max_segment`` bytes (the peer's
    MaxRecvDataSegmentLength); all but the last go in PDUs with the C bit set (RFC 7143 6.1).
    A key=value may be split anywhere. Empty text gives one empty segment."""
    if max_segment <= 0:
        raise ValueError("max_segment must be positive")
    if not data:
        return [b""]
    return [data[i : i + max_segment] for i in range(0, len(data), max_segment)]


class TextAccumulator:
    """Collects the data segments of a text spread over PDUs with the C bit (RFC 7143 6.1, 11.10.2).

    ``feed(segment, final=False)`` returns ``None`` while more is expected; with ``final=True`` it
    parses everything collected and resets. The total across one negotiation sequence is bounded
    (``max_total``), so a peer cannot make us buffer without limit.
    """

    def __init__(self, max_total: int = MAX_TEXT_LENGTH) -> None:
        self._max_total = max_total
        self._buf = bytearray()
        self._total = 0

    @property
    def pending(self) -> bool:
        """True while a continued text is being collected."""
        return bool(self._buf)

    def reset(self) -> None:
        """Drop partial data and the running total (start of a new negotiation sequence)."""
        self._buf.clear()
        self._total = 0

    def feed(self, segment: bytes | bytearray | memoryview, final: bool) -> list[tuple[str, str]] | None:
        self._total += len(segment)
        if self._total > self._max_total:
            self._buf.clear()
            raise TextError(f"text exchange exceeds {self._max_total} bytes")
        self._buf += segment
        if not final:
            return None
        data = bytes(self._buf)
        self._buf.clear()
        return parse_text(data)


# ---- value encodings (RFC 7143 6.1) ----


def encode_number(n: int) -> str:
    """Decimal encoding of a numerical value."""
    if n < 0 or n > MAX_NUMBER:
        raise ValueError(f"number out of range: {n}")
    return str(n)


def encode_hex(data: bytes) -> str:
    """``0x`` hex-constant encoding of binary data."""
    return "0x" + data.hex()


def encode_base64(data: bytes) -> str:
    """``0b`` base64-constant encoding of binary data."""
    return "0b" + base64.b64encode(data).decode("ascii")


def encode_boolean(flag: bool) -> str:
    return "Yes" if flag else "No"


def decode_binary(value: str, *, max_bytes: int = 1024) -> bytes:
    """Decode a ``0x``/``0X`` hex or ``0b``/``0B`` base64 constant into bytes.

    An odd number of hex digits is read as if a leading zero were present (RFC 7143 6.1).
    """
    if len(value) < 3 or value[0] != "0" or value[1] not in "xXbB":
        raise TextError("binary value must start with 0x or 0b")
    body = value[2:]
    if value[1] in "xX":
        if _HEX_RE.fullmatch(body) is None:
            raise TextError("bad hex constant")
        if len(body) % 2:
            body = "0" + body
        result = bytes.fromhex(body)
    else:
        if _BASE64_RE.fullmatch(body) is None or len(body) % 4:
            raise TextError("bad base64 constant")
        try:
            result = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise TextError("bad base64 constant") from None
    if len(result) > max_bytes:
        raise TextError(f"binary value longer than {max_bytes} bytes")
    return result


def decode_number(value: str, *, maximum: int = MAX_NUMBER) -> int:
    """Decode a numerical value: decimal, ``0x`` hex or ``0b`` base64 (RFC 7143 6.1)."""
    if len(value) > 2 and value[0] == "0" and value[1] in "xXbB":
        n = int.from_bytes(decode_binary(value, max_bytes=8), "big")
    elif _DECIMAL_RE.fullmatch(value) is not None and len(value) <= 20:
        n = int(value)
    else:
        raise TextError(f"bad number {value[:32]!r}")
    if n > maximum:
        raise TextError(f"number {n} exceeds {maximum}")
    return n


def decode_boolean(value: str) -> bool:
    if value == "Yes":
        return True
    if value == "No":
        return False
    raise TextError(f"bad Boolean {value[:32]!r}")


def split_list(value: str) -> list[str]:
    """Split a list-of-values; empty items are an error."""
    items = value.split(",")
    if any(not item for item in items):
        raise TextError("empty item in list of values")
    return items


def join_list(values: Sequence[str]) -> str:
    return ",".join(values)


# ---- SendTargets (RFC 7143 13.3, 13.8; Appendix C) ----

SendTargetsEntry = tuple[str, list[tuple[str, int, int]]]


def _format_address(address: str, port: int, tpgt: int) -> str:
    if not 0 < port < 65536 or not 0 <= tpgt < 65536:
        raise ValueError(f"bad portal {address}:{port},{tpgt}")
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{host}:{port},{tpgt}"


def encode_send_targets(targets: Sequence[SendTargetsEntry]) -> bytes:
    """A SendTargets answer: for each target ``TargetName=<name>`` followed by one
    ``TargetAddress=<host>:<port>,<tpgt>`` per portal (IPv6 hosts in brackets, RFC 7143 13.8)."""
    pairs: list[tuple[str, str]] = []
    for name, portals in targets:
        pairs.append(("TargetName", name))
        pairs.extend(("TargetAddress", _format_address(a, p, t)) for a, p, t in portals)
    return encode_text(pairs)


def parse_target_address(value: str) -> tuple[str, int, int]:
    """Parse ``host[:port][,tpgt]`` (port defaults to 3260, tpgt to 1); IPv6 hosts in brackets."""
    addr, _, tag = value.partition(",")
    try:
        tpgt = int(tag) if tag else 1
        if addr.startswith("["):
            host, _, rest = addr[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 3260
            if rest and not rest.startswith(":"):
                raise ValueError(rest)
        else:
            host, _, port_text = addr.rpartition(":") if ":" in addr else (addr, "", "")
            port = int(port_text) if port_text else 3260
    except ValueError:
        raise TextError(f"bad TargetAddress {value[:64]!r}") from None
    if not host or not 0 < port < 65536 or not 0 <= tpgt < 65536:
        raise TextError(f"bad TargetAddress {value[:64]!r}")
    return host, port, tpgt


def parse_send_targets(pairs: Iterable[tuple[str, str]]) -> list[SendTargetsEntry]:
    """Group a SendTargets answer into ``[(target name, [(host, port, tpgt), ...]), ...]``."""
    result: list[SendTargetsEntry] = []
    for key, value in pairs:
        if key == "TargetName":
            result.append((value, []))
        elif key == "TargetAddress":
            if not result:
                raise TextError("TargetAddress before any TargetName")
            result[-1][1].append(parse_target_address(value))
    return result
