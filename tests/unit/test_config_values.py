"""The value parsers behind the model: sizes, portals, iSCSI names, and the TOML writer."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cistern.config.names import normalize_iscsi_name
from cistern.config.portals import Portal, format_address
from cistern.config.sizes import format_size, human_size, parse_size
from cistern.config.toml_writer import dumps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        (4096, 4096),
        ("1K", 1024),
        ("1k", 1024),
        ("512M", 512 << 20),
        ("512MB", 512 << 20),
        ("256MiB", 256 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("1 G", 1 << 30),
        ("1T", 1 << 40),
        ("1.5G", 3 << 29),
        ("100B", 100),
        ("0", 0),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12X", "", "G", "1iB", "-1", "1 GG", "0x10", True, 1.5, None, -5])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(bad)  # type: ignore[arg-type]


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1000, 1024, 3 << 29, 1 << 30, 5 << 40)] == [
        "0",
        "1000",
        "1K",
        "1536M",
        "1G",
        "5T",
    ]
    assert [human_size(n) for n in (512, 1536, 1 << 30)] == ["512 B", "1.5 KiB", "1.0 GiB"]


@given(st.integers(min_value=0, max_value=1 << 62))
def test_format_then_parse_size(n: int) -> None:
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:3260", "127.0.0.1", 3260),
        ("127.0.0.1", "127.0.0.1", 3260),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:3261", "::1", 3261),
        ("[::]", "::", 3260),
        ("::1", "::1", 3260),
        ("[fe80::1%eth0]:3260", "fe80::1%eth0", 3260),
        ("storage.example.com:860", "storage.example.com", 860),
        ("localhost", "localhost", 3260),
    ],
)
def test_portal_parse(text: str, host: str, port: int) -> None:
    portal = Portal.parse(text)
    assert (portal.host, portal.port) == (host, port)
    assert Portal.parse(str(portal)) == portal


@pytest.mark.parametrize(
    "bad",
    ["", ":3260", "[::1", "[::1]x", "[1.2.3.4]:1", "host:-1", "host:65536", "a b:1", "999.1.1.1", "-x-:1"],
)
def test_portal_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        Portal.parse(bad)


def test_format_address() -> None:
    assert format_address("::1", 3260) == "[::1]:3260"
    assert format_address("10.0.0.1", 1) == "10.0.0.1:1"


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("iqn.2026-11.org.cistern:demo", "iqn.2026-11.org.cistern:demo"),
        ("iqn.2001-04.com.example", "iqn.2001-04.com.example"),
        ("iqn.1991-05.com.microsoft:HOST.Domain", "iqn.1991-05.com.microsoft:host.domain"),
        (
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
        ),
        ("iqn.2026-01.de.bücher:platte", "iqn.2026-01.de.bücher:platte"),
        ("eui.02004567a425678d", "eui.02004567A425678D"),
        ("naa.52004567BA64678D", "naa.52004567BA64678D"),
    ],
)
def test_names_accepted(name: str, normalized: str) -> None:
    assert normalize_iscsi_name(name) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "iqn.",
        "iqn.2026-11",
        "iqn.26-11.org.x",
        "iqn.2026-00.org.x",
        "iqn.2026-11.org.x:a b",
        "iqn.2026-11.org..x",
        "iqn.2026-11.org.x:a/b",
        "eui.0123456789abcdeg",
        "naa.0123",
        "fqn.2026-11.org.x",
        "iqn.2026-11.org.x:\u200b",
    ],
)
def test_names_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an iSCSI name"):
        normalize_iscsi_name(bad)


def test_toml_writer_layout() -> None:
    text = dumps(
        {"a": 1, "t": {"x": True, "sub": {"y": [1, 2]}}, "arr": [{"k": "v", "n": [{"z": 1.5}]}], "b": "s"}
    )
    assert tomllib.loads(text) == {
        "a": 1,
        "b": "s",
        "t": {"x": True, "sub": {"y": [1, 2]}},
        "arr": [{"k": "v", "n": [{"z": 1.5}]}],
    }
    assert text.splitlines()[:2] == ["a = 1", 'b = "s"']
    assert "[[arr.n]]" in text and "[t.sub]" in text


def test_toml_writer_quotes_keys_and_rejects_unknown_types() -> None:
    assert tomllib.loads(dumps({"odd key.": 1})) == {"odd key.": 1}
    with pytest.raises(TypeError):
        dumps({"x": object()})


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.text() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.booleans(),
        max_size=5,
    )
)
def test_toml_writer_round_trips_scalars(data: dict[str, object]) -> None:
    assert tomllib.loads(dumps(data)) == data
