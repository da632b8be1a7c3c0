"""cistern's target under QEMU's iSCSI block driver (issue 2, must show 2).

A random 256 MiB image goes into a LUN with ``qemu-img convert`` and comes back byte-identical, and
``qemu-io`` pattern writes and reads succeed with a CRC32C header digest negotiated (libiscsi, which QEMU
uses, never offers DataDigest; data digests are covered with cistern's own initiator).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget, lun_toml, target_toml

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:qemu"
SIZE = 256 * 1024 * 1024


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CisternTarget]:
    work = tmp_path_factory.mktemp("qemu")
    port = peers.free_port()
    cfg = target_toml(IQN, port, lun_toml(0, "file", path=work / "lun0.img", size="256M"))
    with CisternTarget(cfg, work, work / "cistern.log", port=port) as t:
        yield t


def _digest_opts(target: CisternTarget, digest: str) -> str:
    return f"driver=iscsi,transport=tcp,portal={target.portal},target={IQN},lun=0,header-digest={digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_convert_256mib_round_trip_is_byte_identical(target: CisternTarget, tmp_path: Path) -> None:
    src = tmp_path / "random.img"
    with open(src, "wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
    url = target.url(IQN)
    peers.qemu_img("convert", "-n", "-f", "raw", "-O", "raw", str(src), url, timeout=300)
    back = tmp_path / "back.img"
    peers.qemu_img("convert", "-f", "raw", "-O", "raw", url, str(back), timeout=300)
    assert back.stat().st_size == SIZE
    assert _sha256(back) == _sha256(src)


def test_qemu_img_info_reports_size(target: CisternTarget) -> None:
    out = peers.qemu_img("info", target.url(IQN), timeout=60).stdout
    assert "268435456" in out.replace(",", "").replace(" ", "") or "256 MiB" in out


@pytest.mark.parametrize("digest", ["crc32c", "none"])
def test_qemu_io_patterns_with_header_digest(target: CisternTarget, digest: str) -> None:
    opts = _digest_opts(target, digest)
    out = peers.qemu_io(
        "--image-opts",
        opts,
        "-c",
        "write -P 0xab 0 1M",
        "-c",
        "write -P 0xcd 1M 64k",
        "-c",
        "write -P 0x5a 4194304 4k",
        "-c",
        "read -P 0xab 0 1M",
        "-c",
        "read -P 0xcd 1M 64k",
        "-c",
        "read -P 0x5a 4194304 4k",
        timeout=120,
    ).stdout
    assert "Pattern verification failed" not in out, out
    assert out.count("read ") == 3 and out.count("wrote ") == 3, out
