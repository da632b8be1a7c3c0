"""CHAP for iSCSI (RFC 1994, RFC 7143 12.1.3): both roles, all algorithms, one-way and mutual, hostile input."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from cistern.wire.chap import (
    ChapAlgorithm,
    ChapCredentials,
    ChapError,
    ChapInitiator,
    ChapTarget,
    chap_response,
)
from cistern.wire.text import decode_binary, encode_base64

SECRETS = {"alice": b"alice-secret-123"}
TARGET_CREDS = ChapCredentials("tgt", b"target-secret-456")


def counter_rng() -> object:
    counter = itertools.count(1)

    def rng(n: int) -> bytes:
        return bytes((next(counter) + i) & 0xFF for i in range(n))

    return rng


def test_response_is_hash_of_id_secret_challenge() -> None:
    assert (
        chap_response(ChapAlgorithm.MD5, 1, b"secret", b"\x02\x03")
        == hashlib.md5(b"\x01secret\x02\x03").digest()
    )
    assert chap_response(ChapAlgorithm.MD5, 0x41, b"abc", b"def").hex() == hashlib.md5(b"Aabcdef").hexdigest()
    assert len(chap_response(ChapAlgorithm.SHA3_256, 0, b"s", b"c")) == 32
    assert chap_response(ChapAlgorithm.SHA1, 7, b"s", b"c") == hashlib.sha1(b"\x07sc").digest()


@pytest.mark.parametrize("alg", list(ChapAlgorithm))
@pytest.mark.parametrize("mutual", [False, True])
def test_roundtrip(alg: ChapAlgorithm, mutual: bool) -> None:
    t = ChapTarget(SECRETS.get, mutual=TARGET_CREDS if mutual else None)
    i = ChapInitiator(
        ChapCredentials("alice", SECRETS["alice"]), mutual=TARGET_CREDS if mutual else None, algorithms=[alg]
    )
    challenge = dict(t.select_algorithm(i.offer()[0][1]))
    assert challenge["CHAP_A"] == str(int(alg))
    assert len(decode_binary(challenge["CHAP_C"])) >= max(16, alg.digest_size)
    reply = t.verify(dict(i.respond(challenge)))
    assert t.user == "alice"
    if mutual:
        i.verify_target(dict(reply))
        assert i.target_verified
    else:
        assert reply == []


def test_target_picks_first_of_initiators_list_it_allows() -> None:
    t = ChapTarget(SECRETS.get, algorithms=[5, 7])
    assert dict(t.select_algorithm("8,6,7,5"))["CHAP_A"] == "7"
    with pytest.raises(ChapError) as e:
        ChapTarget(SECRETS.get, algorithms=[7]).select_algorithm("5,99999,x")
    assert e.value.status == 0x0201


def test_wrong_secret_and_unknown_user_fail() -> None:
    for creds in (
        ChapCredentials("alice", b"wrong-secret-000"),
        ChapCredentials("mallory", b"alice-secret-123"),
    ):
        t = ChapTarget(SECRETS.get)
        i = ChapInitiator(creds)
        with pytest.raises(ChapError) as e:
            t.verify(dict(i.respond(dict(t.select_algorithm("5")))))
        assert e.value.status == 0x0201
        assert t.user is None


def test_base64_response_accepted() -> None:
    t = ChapTarget(SECRETS.get, random_bytes=counter_rng())  # type: ignore[arg-type]
    ch = dict(t.select_algorithm("5"))
    r = chap_response(ChapAlgorithm.MD5, int(ch["CHAP_I"]), SECRETS["alice"], decode_binary(ch["CHAP_C"]))
    assert t.verify({"CHAP_N": "alice", "CHAP_R": encode_base64(r)}) == []


def test_reflected_challenge_refused() -> None:
    t = ChapTarget(SECRETS.get, mutual=TARGET_CREDS)
    ch = dict(t.select_algorithm("5"))
    r = chap_response(ChapAlgorithm.MD5, int(ch["CHAP_I"]), SECRETS["alice"], decode_binary(ch["CHAP_C"]))
    with pytest.raises(ChapError, match="reflect"):
        t.verify(
            {"CHAP_N": "alice", "CHAP_R": "0x" + r.hex(), "CHAP_I": ch["CHAP_I"], "CHAP_C": ch["CHAP_C"]}
        )


def test_mutual_without_target_credentials_fails_and_required_mutual_enforced() -> None:
    i = ChapInitiator(ChapCredentials("alice", SECRETS["alice"]), mutual=TARGET_CREDS)
    t = ChapTarget(SECRETS.get)
    with pytest.raises(ChapError):
        t.verify(dict(i.respond(dict(t.select_algorithm("5")))))
    i = ChapInitiator(ChapCredentials("alice", SECRETS["alice"]))
    t = ChapTarget(SECRETS.get, mutual=TARGET_CREDS, require_mutual=True)
    with pytest.raises(ChapError, match="mutual"):
        t.verify(dict(i.respond(dict(t.select_algorithm("5")))))


def test_target_mutual_secret_must_differ() -> None:
    same = ChapCredentials("tgt", SECRETS["alice"])
    t = ChapTarget(SECRETS.get, mutual=same)
    i = ChapInitiator(ChapCredentials("alice", SECRETS["alice"]), mutual=same)
    with pytest.raises(ChapError):
        t.verify(dict(i.respond(dict(t.select_algorithm("5")))))


def test_initiator_detects_bad_target_response() -> None:
    t = ChapTarget(SECRETS.get, mutual=ChapCredentials("tgt", b"some-other-secret"))
    i = ChapInitiator(ChapCredentials("alice", SECRETS["alice"]), mutual=TARGET_CREDS)
    reply = t.verify(dict(i.respond(dict(t.select_algorithm("5")))))
    with pytest.raises(ChapError):
        i.verify_target(dict(reply))
    assert not i.target_verified


def test_initiator_refuses_algorithm_it_did_not_offer() -> None:
    i = ChapInitiator(ChapCredentials("alice", SECRETS["alice"]), algorithms=[7])
    with pytest.raises(ChapError):
        i.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 16})


@pytest.mark.parametrize(
    "pairs",
    [
        {"CHAP_N": "alice"},
        {"CHAP_N": "alice", "CHAP_R": "nothex"},
        {"CHAP_N": "alice", "CHAP_R": "0x"},
        {"CHAP_N": "alice", "CHAP_R": "0x" + "00" * 1025},
        {"CHAP_R": "0x00"},
        {"CHAP_N": "a" * 256, "CHAP_R": "0x00"},
    ],
)
def test_malformed_response_is_chap_error(pairs: dict[str, str]) -> None:
    t = ChapTarget(SECRETS.get)
    t.select_algorithm("5")
    with pytest.raises(ChapError):
        t.verify(pairs)


def test_one_attempt_per_challenge() -> None:
    t = ChapTarget(SECRETS.get)
    i = ChapInitiator(ChapCredentials("alice", b"wrong-secret-000"))
    resp = dict(i.respond(dict(t.select_algorithm("5"))))
    with pytest.raises(ChapError):
        t.verify(resp)
    with pytest.raises(ChapError):
        t.verify(resp)


def test_secret_not_in_repr() -> None:
    assert "target-secret" not in repr(TARGET_CREDS)
