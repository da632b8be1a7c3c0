"""cistern's target against libiscsi's command-line tools (issue 2, must show 1).

The demo target (``cistern demo``) answers discovery, INQUIRY and READ CAPACITY(16); a CHAP target admits the
right secret one-way; a target configured for mutual CHAP admits only mutual logins (a one-way login is
refused: configured mutual CHAP is required). Wrong secrets, a missing login, a target failing the
initiator's check and a non-admitted initiator name are refused at login with the RFC 7143 status, without
disturbing other sessions.
"""

from __future__ import annotations

from collections.abc import Iterator

import peers
import pytest
from cistern_proc import CisternTarget, lun_toml, target_toml

pytestmark = pytest.mark.peers

DEMO_IQN = "iqn.2026-11.org.cistern:demo"
CHAP_IQN = "iqn.2026-11.org.cistern:chap"
LS_NAME = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls"
INQ_NAME = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq"
USER, SECRET = "alice", "alice-secret-12"
TUSER, TSECRET = "target1", "target-secret-34"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CisternTarget]:
    work = tmp_path_factory.mktemp("demo")
    with CisternTarget(None, work, work / "cistern.log", port=peers.free_port()) as target:
        yield target


def _chap_target(tmp_path_factory: pytest.TempPathFactory, mutual: bool) -> Iterator[CisternTarget]:
    work = tmp_path_factory.mktemp("mutual" if mutual else "chap")
    port = peers.free_port()
    cfg = target_toml(
        CHAP_IQN,
        port,
        lun_toml(0, "memory", size="16M"),
        acl=[LS_NAME, INQ_NAME],
        chap=(USER, SECRET),
        mutual=(TUSER, TSECRET) if mutual else None,
    )
    with CisternTarget(cfg, work, work / "cistern.log", port=port) as target:
        yield target


@pytest.fixture(scope="module")
def chap_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CisternTarget]:
    """One-way CHAP (the initiator proves itself)."""
    yield from _chap_target(tmp_path_factory, mutual=False)


@pytest.fixture(scope="module")
def mutual_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CisternTarget]:
    """Mutual CHAP configured: the target proves itself too, and a one-way login is refused."""
    yield from _chap_target(tmp_path_factory, mutual=True)


MUTUAL_ENV = {"LIBISCSI_CHAP_TARGET_USERNAME": TUSER, "LIBISCSI_CHAP_TARGET_PASSWORD": TSECRET}


def test_demo_discovery_lists_target_and_lun(demo: CisternTarget) -> None:
    out = peers.run(["iscsi-ls", "-s", f"iscsi://{demo.portal}"], timeout=30).stdout
    assert f"Target:{DEMO_IQN} Portal:{demo.portal},1" in out
    assert "Lun:0" in out and "DIRECT_ACCESS" in out


def test_demo_inquiry(demo: CisternTarget) -> None:
    out = peers.run(["iscsi-inq", demo.url(DEMO_IQN)], timeout=30).stdout
    assert "Peripheral Device Type:DIRECT_ACCESS" in out
    assert "Vendor:CISTERN" in out


def test_demo_inquiry_vpd_device_identification(demo: CisternTarget) -> None:
    out = peers.run(["iscsi-inq", "-e", "1", "-c", "131", demo.url(DEMO_IQN)], timeout=30).stdout
    assert "NAA" in out or "naa" in out.lower(), out


def test_demo_read_capacity16(demo: CisternTarget) -> None:
    out = peers.run(["iscsi-readcapacity16", demo.url(DEMO_IQN)], timeout=30).stdout
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in out
    assert "Total size:67108864" in out


def test_chap_one_way(chap_target: CisternTarget) -> None:
    out = peers.run(["iscsi-inq", chap_target.url(CHAP_IQN, user=USER, secret=SECRET)], timeout=30).stdout
    assert "DIRECT_ACCESS" in out


def test_chap_one_way_by_environment(chap_target: CisternTarget) -> None:
    env = {"LIBISCSI_CHAP_USERNAME": USER, "LIBISCSI_CHAP_PASSWORD": SECRET}
    out = peers.run(
        ["iscsi-readcapacity16", "-i", INQ_NAME, chap_target.url(CHAP_IQN)], timeout=30, env=env
    ).stdout
    assert "Total size:16777216" in out


def test_chap_mutual(mutual_target: CisternTarget) -> None:
    out = peers.run(
        ["iscsi-inq", mutual_target.url(CHAP_IQN, user=USER, secret=SECRET)], timeout=30, env=MUTUAL_ENV
    ).stdout
    assert "DIRECT_ACCESS" in out


def test_mutual_chap_target_refuses_one_way_login(mutual_target: CisternTarget) -> None:
    with pytest.raises(peers.PeerCommandError) as err:
        peers.run(["iscsi-inq", mutual_target.url(CHAP_IQN, user=USER, secret=SECRET)], timeout=30)
    assert "Authentication failure" in err.value.stdout + err.value.stderr
    ok = peers.run(
        ["iscsi-inq", mutual_target.url(CHAP_IQN, user=USER, secret=SECRET)], timeout=30, env=MUTUAL_ENV
    ).stdout
    assert "DIRECT_ACCESS" in ok


def test_chap_discovery_lists_target_for_admitted_initiator(chap_target: CisternTarget) -> None:
    out = peers.run(["iscsi-ls", f"iscsi://{chap_target.portal}"], timeout=30).stdout
    assert CHAP_IQN in out


@pytest.mark.parametrize(
    ("what", "cmd", "env", "message"),
    [
        ("wrong secret", ["iscsi-inq", "URL:alice%wrong-secret-99"], {}, "Authentication failure"),
        ("no credentials", ["iscsi-inq", "URL"], {}, "Authentication failure"),
        (
            "target fails mutual check",
            ["iscsi-inq", "URL:alice%alice-secret-12"],
            {"LIBISCSI_CHAP_TARGET_USERNAME": TUSER, "LIBISCSI_CHAP_TARGET_PASSWORD": "not-the-secret1"},
            "CHAP_R",
        ),
        (
            "initiator not in ACL",
            ["iscsi-readcapacity16", "URL:alice%alice-secret-12"],
            MUTUAL_ENV,
            "Authorization failure",
        ),
    ],
)
def test_login_refused_cleanly(
    mutual_target: CisternTarget, what: str, cmd: list[str], env: dict[str, str], message: str
) -> None:
    tool, url = cmd
    cred = url.partition(":")[2]
    user, _, secret = cred.partition("%")
    full = mutual_target.url(CHAP_IQN, user=user or None, secret=secret or None)
    with pytest.raises(peers.PeerCommandError) as err:
        peers.run([tool, full], timeout=30, env=env)
    assert message in err.value.stdout + err.value.stderr, what
    # the server keeps serving: an admitted, authenticated login still works afterwards
    ok = peers.run(
        ["iscsi-inq", mutual_target.url(CHAP_IQN, user=USER, secret=SECRET)], timeout=30, env=MUTUAL_ENV
    ).stdout
    assert "DIRECT_ACCESS" in ok
