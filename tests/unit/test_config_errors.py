"""Bad configs: each must fail with a ConfigError whose line names the exact path and the bad value."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cistern.config import ConfigError, load_config, parse_config

T = "iqn.2026-11.org.example:t"


def base() -> dict[str, Any]:
    return {
        "targets": [
            {
                "name": T,
                "open": True,
                "luns": [{"lun": 0, "backend": "memory", "size": "1M"}],
            }
        ]
    }


def lun0(d: dict[str, Any]) -> dict[str, Any]:
    return d["targets"][0]["luns"][0]


def tgt0(d: dict[str, Any]) -> dict[str, Any]:
    return d["targets"][0]


def chap(**kw: Any) -> dict[str, Any]:
    return {"chap": {"username": "u", "secret": "twelve-chars", **kw}}


def add_lun(d: dict[str, Any], **kw: Any) -> None:
    tgt0(d)["luns"].append({"lun": 1, "backend": "memory", "size": "1M", **kw})


def add_target(d: dict[str, Any], **kw: Any) -> None:
    d["targets"].append({"name": "iqn.2026-11.org.example:u", "open": True, **kw})


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "size suffix",
        lambda d: add_lun(d, size="12X"),
        "targets[0].luns[1].size: '12X' is not a size (use bytes or K/M/G/T suffixes)",
    ),
    (
        "negative size",
        lambda d: lun0(d).update(size=-1),
        "targets[0].luns[0].size: -1 is not a size (use bytes or K/M/G/T suffixes)",
    ),
    (
        "fractional bytes",
        lambda d: lun0(d).update(size="1.3K"),
        "targets[0].luns[0].size: '1.3K' is not a whole number of bytes",
    ),
    (
        "month 13",
        lambda d: tgt0(d).update(name="iqn.2026-13.org.x:a"),
        "targets[0].name: 'iqn.2026-13.org.x:a' is not an iSCSI name: month 13 in the date is not 01..12",
    ),
    (
        "no type prefix",
        lambda d: tgt0(d).update(name="disk1"),
        "targets[0].name: 'disk1' is not an iSCSI name: it must start with 'iqn.', 'eui.' or 'naa.' "
        "(RFC 7143 section 4.2.7)",
    ),
    (
        "underscore",
        lambda d: tgt0(d).update(name="iqn.2026-11.org.x:my_disk"),
        "targets[0].name: 'iqn.2026-11.org.x:my_disk' is not an iSCSI name: character '_' is not allowed "
        "(use a-z 0-9 - . :)",
    ),
    (
        "no date",
        lambda d: tgt0(d).update(name="iqn.org.example:x"),
        "targets[0].name: 'iqn.org.example:x' is not an iSCSI name: expected iqn.YYYY-MM.reversed.domain[:identifier]",
    ),
    (
        "bad domain label",
        lambda d: tgt0(d).update(name="iqn.2026-11.org.-x:a"),
        "targets[0].name: 'iqn.2026-11.org.-x:a' is not an iSCSI name: 'org.-x' is not a reversed domain name",
    ),
    (
        "too long",
        lambda d: tgt0(d).update(name="iqn.2026-11.org.x:" + "a" * 210),
        f"targets[0].name: {'iqn.2026-11.org.x:' + 'a' * 210!r} is not an iSCSI name: longer than 223 bytes",
    ),
    (
        "eui length",
        lambda d: tgt0(d).update(name="eui.0123"),
        "targets[0].name: 'eui.0123' is not an iSCSI name: 'eui.' must be followed by 16 hex digits",
    ),
    (
        "naa not hex",
        lambda d: tgt0(d).update(name="naa.52004567BA64678Z"),
        "targets[0].name: 'naa.52004567BA64678Z' is not an iSCSI name: 'naa.' must be followed by 16 or 32 hex digits",
    ),
    (
        "duplicate target",
        lambda d: add_target(d, name=T.upper().replace("IQN.", "iqn.")),
        f"targets[1].name: {T!r} is already the name of targets[0]",
    ),
    (
        "duplicate lun",
        lambda d: add_lun(d, lun=0),
        "targets[0].luns[1].lun: LUN 0 is already used by luns[0]",
    ),
    (
        "lun range",
        lambda d: lun0(d).update(lun=16384),
        "targets[0].luns[0].lun: input should be less than or equal to 16383 (got 16384)",
    ),
    (
        "lun as string",
        lambda d: lun0(d).update(lun="0"),
        "targets[0].luns[0].lun: input should be a valid integer (got '0')",
    ),
    (
        "backend",
        lambda d: lun0(d).update(backend="optical"),
        "targets[0].luns[0].backend: input should be 'file', 'memory', 'block', 'tape', 'changer', 'raid' or 'ses' (got 'optical')",
    ),
    (
        "memory without size",
        lambda d: lun0(d).pop("size"),
        "targets[0].luns[0].size: a memory LUN needs a size",
    ),
    (
        "memory with path",
        lambda d: lun0(d).update(path="/tmp/x"),
        "targets[0].luns[0].path: a memory LUN has no path",
    ),
    (
        "file without path",
        lambda d: lun0(d).update(backend="file"),
        "targets[0].luns[0].path: a file LUN needs a path",
    ),
    (
        "size not multiple",
        lambda d: lun0(d).update(size="1000"),
        "targets[0].luns[0].size: 1000 bytes (1000 B) is not a multiple of block_size 512",
    ),
    (
        "size below a block",
        lambda d: lun0(d).update(size=2048, block_size=4096),
        "targets[0].luns[0].size: 2048 bytes is smaller than one 4096-byte block",
    ),
    (
        "block size",
        lambda d: lun0(d).update(block_size=1024),
        "targets[0].luns[0].block_size: input should be 512 or 4096 (got 1024)",
    ),
    (
        "read_only string",
        lambda d: lun0(d).update(read_only="yes"),
        "targets[0].luns[0].read_only: input should be a valid boolean (got 'yes')",
    ),
    (
        "vendor too long",
        lambda d: lun0(d).update(vendor="VENDORNAME"),
        "targets[0].luns[0].vendor: 'VENDORNAME': vendor must be 1..8 characters of printable ASCII",
    ),
    (
        "serial with space",
        lambda d: lun0(d).update(serial="A B"),
        "targets[0].luns[0].serial: 'A B': serial must be 1..64 characters of printable ASCII without spaces",
    ),
    (
        "port range",
        lambda d: tgt0(d).update(portals=["127.0.0.1:99999"]),
        "targets[0].portals[0]: '127.0.0.1:99999': port '99999' is not a number in 0..65535",
    ),
    (
        "ipv6 without brackets and port",
        lambda d: tgt0(d).update(portals=["127.0.0.1:3260", "::1:3260:x"]),
        "targets[0].portals[1]: '::1:3260:x' is not a portal (use HOST:PORT, IPv6 as [ADDR]:PORT)",
    ),
    (
        "duplicate portal",
        lambda d: tgt0(d).update(portals=["127.0.0.1:3260", "127.0.0.1"]),
        "targets[0].portals[1]: portal '127.0.0.1:3260' is listed twice (also at [0])",
    ),
    (
        "empty portals",
        lambda d: tgt0(d).update(portals=[]),
        "targets[0].portals: a target needs at least one portal",
    ),
    (
        "tpgt zero",
        lambda d: tgt0(d).update(tpgt=0),
        "targets[0].tpgt: input should be greater than or equal to 1 (got 0)",
    ),
    (
        "open and acl",
        lambda d: tgt0(d).update(acl=["iqn.1993-08.org.debian:01:a"]),
        "targets[0].open: open = true admits every initiator; remove acl or set open = false",
    ),
    (
        "neither open nor acl",
        lambda d: tgt0(d).pop("open"),
        "targets[0].acl: no initiator may log in: list initiator names in acl, or set open = true",
    ),
    (
        "acl bad name",
        lambda d: tgt0(d).update(open=False, acl=["iqn.1993-08.org.debian:01:a", "host1"]),
        "targets[0].acl[1]: 'host1' is not an iSCSI name: it must start with 'iqn.', 'eui.' or 'naa.' "
        "(RFC 7143 section 4.2.7)",
    ),
    (
        "acl duplicate after normalization",
        lambda d: tgt0(d).update(
            open=False, acl=["iqn.1993-08.org.debian:01:a", "iqn.1993-08.org.debian:01:A"]
        ),
        "targets[0].acl[1]: initiator 'iqn.1993-08.org.debian:01:a' is listed twice (also at [0])",
    ),
    (
        "short secret",
        lambda d: tgt0(d).update(auth={"chap": {"username": "u", "secret": "short"}}),
        "targets[0].auth.chap.secret: secret is 5 characters; at least 12 are required (96 bits, RFC 7143 "
        "section 12.1.3)",
    ),
    (
        "mutual half",
        lambda d: tgt0(d).update(auth=chap(mutual_username="t")),
        "targets[0].auth.chap.mutual_secret: mutual CHAP needs both mutual_username and mutual_secret",
    ),
    (
        "mutual same secret",
        lambda d: tgt0(d).update(auth=chap(mutual_username="t", mutual_secret="twelve-chars")),
        "targets[0].auth.chap.mutual_secret: must differ from secret (RFC 7143 section 12.1.3: a secret that "
        "authenticates initiators MUST NOT also authenticate targets)",
    ),
    (
        "empty username",
        lambda d: tgt0(d).update(auth={"chap": {"username": "", "secret": "twelve-chars"}}),
        "targets[0].auth.chap.username: username must be 1..255 characters without NUL",
    ),
    (
        "missing secret",
        lambda d: tgt0(d).update(auth={"chap": {"username": "u"}}),
        "targets[0].auth.chap.secret: is required but missing",
    ),
    (
        "unknown algorithm",
        lambda d: tgt0(d).update(auth={"chap_algorithms": ["SHA-512"]}),
        "targets[0].auth.chap_algorithms[0]: input should be 'SHA3-256', 'SHA-256', 'SHA1' or 'MD5' (got 'SHA-512')",
    ),
    (
        "algorithm twice",
        lambda d: tgt0(d).update(auth={"chap_algorithms": ["MD5", "SHA1", "MD5"]}),
        "targets[0].auth.chap_algorithms[2]: 'MD5' is listed twice",
    ),
    (
        "discovery secret",
        lambda d: d.update(discovery_auth={"chap": {"username": "d", "secret": "x" * 11}}),
        "discovery_auth.chap.secret: secret is 11 characters; at least 12 are required (96 bits, RFC 7143 "
        "section 12.1.3)",
    ),
    (
        "typo key",
        lambda d: lun0(d).update(blocksize=4096),
        "targets[0].luns[0].blocksize: unknown key 'blocksize' (did you mean 'block_size'?)",
    ),
    (
        "top-level typo",
        lambda d: d.update(target=[]),
        "target: unknown key 'target' (did you mean 'targets'?)",
    ),
    (
        "unknown param lists allowed",
        lambda d: tgt0(d).update(params={"zzz": 1}),
        "targets[0].params.zzz: unknown key 'zzz' (allowed: data_digest, data_pdu_in_order, "
        "data_sequence_in_order, default_time2retain, default_time2wait, error_recovery_level, first_burst_length, "
        "header_digest, immediate_data, initial_r2t, max_burst_length, max_connections, max_outstanding_r2t, "
        "max_recv_data_segment_length)",
    ),
    (
        "first burst over max burst",
        lambda d: tgt0(d).update(params={"first_burst_length": 262144, "max_burst_length": 65536}),
        "targets[0].params.first_burst_length: 262144 exceeds max_burst_length 65536 (RFC 7143 section 13.14)",
    ),
    (
        "segment length too small",
        lambda d: tgt0(d).update(params={"max_recv_data_segment_length": 256}),
        "targets[0].params.max_recv_data_segment_length: input should be greater than or equal to 512 (got 256)",
    ),
    (
        "digest name",
        lambda d: tgt0(d).update(params={"header_digest": ["CRC64"]}),
        "targets[0].params.header_digest[0]: input should be 'CRC32C' or 'None' (got 'CRC64')",
    ),
    (
        "missing name",
        lambda d: tgt0(d).pop("name"),
        "targets[0].name: is required but missing",
    ),
    (
        "log level",
        lambda d: d.update(log_level="loud"),
        "log_level: input should be 'debug', 'info', 'warning', 'error' or 'critical' (got 'loud')",
    ),
    (
        "same file for two LUNs",
        lambda d: (
            lun0(d).update(backend="file", path="/srv/a.img"),
            add_target(d, luns=[{"lun": 3, "backend": "file", "path": "/srv/../srv/a.img"}]),
        ),
        "targets[1].luns[0].path: '/srv/../srv/a.img' already backs targets[0].luns[0]",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_names_path_and_value(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert expected in [str(issue) for issue in info.value.issues], str(info.value)


def test_base_is_valid() -> None:
    assert parse_config(base()).targets[0].name == T


def test_all_field_errors_reported_at_once() -> None:
    data = base()
    lun0(data).update(size="12X", block_size=3)
    tgt0(data).update(tpgt=-1)
    with pytest.raises(ConfigError) as info:
        parse_config(copy.deepcopy(data))
    paths = [issue.path for issue in info.value.issues]
    assert paths == ["targets[0].tpgt", "targets[0].luns[0].size", "targets[0].luns[0].block_size"]
    assert str(info.value).splitlines()[1].startswith("targets[0].luns[0].size: '12X'")


# --- from files: TOML syntax, reading, host path checks ------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cistern.toml"
    path.write_text(text)
    return path


FILE_TARGET = """
[[targets]]
name = "iqn.2026-11.org.example:t"
open = true
[[targets.luns]]
lun = 0
"""


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[[targets]\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("not valid TOML: ")
    assert "line 1" in str(info.value)
    assert info.value.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read '.*nope\.toml': No such file or directory"):
        load_config(tmp_path / "nope.toml")


def test_toml_error_path_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, FILE_TARGET + 'backend = "memory"\nsize = "12X"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "targets[0].luns[0].size: '12X' is not a size (use bytes or K/M/G/T suffixes)"


def test_file_parent_missing(tmp_path: Path) -> None:
    path = write(tmp_path, FILE_TARGET + 'backend = "file"\npath = "nodir/lun.img"\nsize = "1M"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"targets[0].luns[0].path: directory {str(tmp_path / 'nodir')!r} does not exist "
        f"(create it: mkdir -p {tmp_path / 'nodir'})"
    )
    # the same file is fine when host checks are off (a config for another machine)
    assert load_config(path, check_paths=False).targets[0].luns[0].path == tmp_path / "nodir" / "lun.img"


def test_file_missing_needs_size(tmp_path: Path) -> None:
    path = write(tmp_path, FILE_TARGET + 'backend = "file"\npath = "lun.img"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"targets[0].luns[0].size: {str(tmp_path / 'lun.img')!r} does not exist; a size is needed to create it"
    )
    (tmp_path / "lun.img").write_bytes(b"\0" * 4096)
    assert load_config(path).targets[0].luns[0].size is None


def test_file_path_is_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    path = write(tmp_path, FILE_TARGET + 'backend = "file"\npath = "d"\n')
    with pytest.raises(
        ConfigError, match=r"^targets\[0\]\.luns\[0\]\.path: '.*/d' exists but is not a regular file$"
    ):
        load_config(path)


def test_read_only_file_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, FILE_TARGET + 'backend = "file"\npath = "ro.img"\nsize = "1M"\nread_only = true\n')
    with pytest.raises(ConfigError, match="a read-only LUN cannot create it"):
        load_config(path)


def test_block_path_must_be_block_device(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"")
    path = write(tmp_path, FILE_TARGET + 'backend = "block"\npath = "plain"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"targets[0].luns[0].path: {str(tmp_path / 'plain')!r} is not a block device"
    path = write(tmp_path, FILE_TARGET + 'backend = "block"\npath = "/nonexistent/sdz"\n')
    with pytest.raises(ConfigError, match=r"'/nonexistent/sdz' does not exist"):
        load_config(path)
