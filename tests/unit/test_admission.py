"""The sans-I/O admission rules (cistern.security.admission): time is passed in."""

from __future__ import annotations

from cistern.security.admission import Admission, AdmissionLimits


def test_pending_cap_per_address_and_done_frees_a_slot() -> None:
    adm = Admission(AdmissionLimits(max_pending_per_address=2, login_rate=0))
    assert adm.connection_opened("a", "10.0.0.1", 0.0) == (None, [])
    assert adm.connection_opened("b", "10.0.0.1", 0.0) == (None, [])
    refusal, _ = adm.connection_opened("c", "10.0.0.1", 0.0)
    assert refusal is not None and "2 connections from this address" in refusal
    assert adm.connection_opened("d", "10.0.0.2", 0.0) == (None, [])  # another address is not affected
    adm.connection_done("a")
    adm.connection_done("a")  # idempotent
    assert adm.connection_opened("e", "10.0.0.1", 0.0) == (None, [])
    assert adm.pending == 3 and adm.pending_from("10.0.0.1") == 2


def test_total_cap_evicts_the_oldest_of_the_heaviest_address() -> None:
    adm = Admission(AdmissionLimits(max_pending_connections=4, max_pending_per_address=10, login_rate=0))
    for name in ("h1", "h2", "h3"):
        assert adm.connection_opened(name, "10.0.0.9", 0.0) == (None, [])
    assert adm.connection_opened("x", "10.0.0.1", 0.0) == (None, [])
    assert adm.connection_opened("y", "10.0.0.2", 0.0) == (None, ["h1"])  # a newcomer gets in
    # the heaviest address cannot evict its own connections to add more
    refusal, evict = adm.connection_opened("h4", "10.0.0.9", 0.0)
    assert refusal is not None and evict == []


def test_login_rate_is_a_token_bucket() -> None:
    adm = Admission(AdmissionLimits(login_rate=10, login_burst=5, max_pending_per_address=100))
    results = [adm.connection_opened(i, "10.0.0.1", 0.0)[0] for i in range(8)]
    assert results[:5] == [None] * 5 and all(r is not None for r in results[5:])
    assert adm.connection_opened("later", "10.0.0.1", 0.2)[0] is None  # 0.2 s x 10/s = 2 tokens back


def test_lockout_after_failures_expires() -> None:
    adm = Admission(AdmissionLimits(auth_failures=3, lockout_seconds=60))
    assert adm.auth_failed(0.0, "10.0.0.1", "alice") == []
    assert adm.auth_failed(1.0, "10.0.0.2", "alice") == []
    assert adm.auth_failed(2.0, "10.0.0.3", "alice") == ["user"]  # three addresses, one user
    assert adm.locked("user", "alice", 30.0) and not adm.locked("address", "10.0.0.1", 30.0)
    assert adm.connection_opened("c", "10.0.0.3", 30.0)[0] is None  # the address itself is not locked
    assert not adm.locked("user", "alice", 62.5)  # expired
    # failures older than the window do not add up
    adm2 = Admission(AdmissionLimits(auth_failures=2, lockout_seconds=10))
    adm2.auth_failed(0.0, "10.0.0.1", None)
    assert adm2.auth_failed(20.0, "10.0.0.1", None) == []


def test_session_caps() -> None:
    adm = Admission(AdmissionLimits(max_sessions=3, max_sessions_per_target=2, max_sessions_per_initiator=1))
    assert adm.session_refusal("i1", "t", []) is None
    assert "max_sessions_per_initiator" in (adm.session_refusal("i1", "t", [("i1", "u")]) or "")
    assert "max_sessions_per_target" in (adm.session_refusal("i3", "t", [("i1", "t"), ("i2", "t")]) or "")
    assert "max_sessions)" in (
        adm.session_refusal("i4", None, [("i1", "t"), ("i2", "u"), ("i3", None)]) or ""
    )
    assert AdmissionLimits(max_sessions=0).max_sessions == 0
    assert Admission(AdmissionLimits(max_sessions=0)).session_refusal("i", "t", [("j", "x")] * 10) is None
