"""Login state machines (RFC 7143 6.3, 11.12, 11.13, 12): target driven by initiator in memory, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cistern.wire.chap import ChapAlgorithm, ChapCredentials, chap_response
from cistern.wire.login import (
    ChapAuth,
    InitiatorLogin,
    LoginProtocolError,
    LoginRejected,
    LoginStatus,
    LoginStep,
    TargetInfo,
    TargetLogin,
    TargetPolicy,
)
from cistern.wire.negotiation import NegotiationPolicy
from cistern.wire.text import decode_binary, encode_text, parse_text, split_text

IQN_T = "iqn.2024-01.org.cistern:disk1"
IQN_I = "iqn.2024-01.org.example:host"
USER = ChapCredentials("host", b"host-secret-123")
TGT = ChapCredentials("disk1", b"target-secret-456")
ISID = 0x023D00000001


def policy(**target_kw: object) -> TargetPolicy:
    info = TargetInfo(IQN_T, **target_kw)  # type: ignore[arg-type]
    return TargetPolicy(lambda name: info if name == IQN_T else None, portal_group_tag=7)


def chap_auth(**kw: object) -> ChapAuth:
    return ChapAuth({USER.user: USER.secret}.get, mutual=TGT, **kw)  # type: ignore[arg-type]


def drive(t: TargetLogin, i: InitiatorLogin) -> LoginStep:
    req = i.start()
    for _ in range(20):
        step = t.receive(req.csg, req.nsg, req.transit, False, ISID, 0, 1, 5, req.text)
        if step.failed:
            return step
        nxt = i.receive(
            step.csg, step.nsg, step.transit, False, step.status_class, step.status_detail, step.text, 9
        )
        if nxt is None:
            return step
        req = nxt
    raise AssertionError("login did not finish")


def send(t: TargetLogin, text: bytes, csg: int = 0, nsg: int = 1, transit: bool = True, cont: bool = False,
         isid: int = ISID) -> LoginStep:  # fmt: skip
    return t.receive(csg, nsg, transit, cont, isid, 0, 1, 5, text)


FIRST = [("InitiatorName", IQN_I), ("SessionType", "Normal"), ("TargetName", IQN_T)]


# ---------------------------------------------------------------- happy paths


def test_login_without_auth_exact_bytes() -> None:
    t = TargetLogin(policy())
    step = send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    assert step.text == b"TargetPortalGroupTag=7\x00AuthMethod=None\x00"
    assert (step.csg, step.nsg, step.transit, step.status) == (0, 1, True, LoginStatus.SUCCESS)
    step = send(t, b"MaxRecvDataSegmentLength=65536\x00MaxBurstLength=4194304\x00", 1, 3)
    assert step.text == b"MaxBurstLength=1048576\x00MaxRecvDataSegmentLength=262144\x00"
    assert step.done is not None and (step.csg, step.nsg, step.transit) == (1, 3, True)
    assert step.done.initiator_name == IQN_I and step.done.target_name == IQN_T
    assert step.done.params.max_xmit_data_segment_length == 65536
    assert step.done.params.max_burst_length == 1048576 and step.done.auth_user is None
    assert step.done.isid == ISID


def test_initiator_and_target_agree_without_auth() -> None:
    t = TargetLogin(policy(limits=NegotiationPolicy(max_recv_data_segment_length=65536)))
    i = InitiatorLogin(IQN_I, IQN_T, policy=NegotiationPolicy(max_burst_length=262144))
    step = drive(t, i)
    assert step.done is not None and i.result is not None
    assert (
        i.result.params.max_xmit_data_segment_length == 65536 == step.done.params.max_recv_data_segment_length
    )
    assert i.result.params.max_burst_length == step.done.params.max_burst_length == 262144
    assert i.result.target_portal_group_tag == 7 and i.result.tsih == 9


@pytest.mark.parametrize("alg", list(ChapAlgorithm))
@pytest.mark.parametrize("mutual", [False, True])
def test_chap_login_each_algorithm(alg: ChapAlgorithm, mutual: bool) -> None:
    t = TargetLogin(policy(auth=chap_auth(algorithms=(int(alg),))))
    i = InitiatorLogin(IQN_I, IQN_T, chap=USER, mutual=TGT if mutual else None)
    step = drive(t, i)
    assert step.done is not None, step.reason
    assert step.done.auth_user == "host"
    assert i.result is not None


def test_discovery_session() -> None:
    t = TargetLogin(policy())
    i = InitiatorLogin(IQN_I, None)
    step = drive(t, i)
    assert step.done is not None and step.done.session_type == "Discovery" and step.done.target_name is None
    assert i.result is not None and i.result.target_portal_group_tag is None


def test_discovery_with_auth() -> None:
    info = TargetInfo(IQN_T)
    pol = TargetPolicy(lambda n: info, discovery_auth=chap_auth())
    assert drive(TargetLogin(pol), InitiatorLogin(IQN_I, None)).status == LoginStatus.AUTHENTICATION_FAILURE
    assert drive(TargetLogin(pol), InitiatorLogin(IQN_I, None, chap=USER)).done is not None


def test_target_offers_keys_it_needs_and_waits_for_answer() -> None:
    limits = NegotiationPolicy(max_burst_length=65536, immediate_data=False)
    t = TargetLogin(policy(limits=limits))
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    step = send(t, b"MaxRecvDataSegmentLength=8192\x00", 1, 3)
    assert step.done is None and not step.transit
    assert parse_text(step.text) == [
        ("ImmediateData", "No"),
        ("MaxBurstLength", "65536"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]
    step = send(t, b"ImmediateData=No\x00MaxBurstLength=65536\x00", 1, 3)
    assert step.done is not None
    assert step.done.params.immediate_data is False and step.done.params.max_burst_length == 65536


def test_target_offers_answered_by_initiator_login() -> None:
    limits = NegotiationPolicy(max_burst_length=65536, immediate_data=False, first_burst_length=16384)
    t = TargetLogin(policy(limits=limits))
    i = InitiatorLogin(IQN_I, IQN_T)
    step = drive(t, i)
    assert step.done is not None and i.result is not None
    for name in ("max_burst_length", "first_burst_length", "immediate_data", "initial_r2t"):
        assert getattr(i.result.params, name) == getattr(step.done.params, name)
    assert i.result.params.immediate_data is False


def test_security_straight_to_ffp_forced_through_operational_when_target_needs_offers() -> None:
    t = TargetLogin(policy(limits=NegotiationPolicy(max_burst_length=65536)))
    step = send(t, encode_text([*FIRST, ("AuthMethod", "None")]), 0, 3)
    assert (step.transit, step.nsg) == (True, 1)
    step = send(t, b"", 1, 3)
    assert parse_text(step.text)[0] == ("MaxBurstLength", "65536") and not step.transit


def test_security_straight_to_ffp() -> None:
    t = TargetLogin(policy())
    step = send(t, encode_text([*FIRST, ("AuthMethod", "None")]), 0, 3)
    assert step.done is not None and step.nsg == 3


def test_operational_stage_first_without_auth() -> None:
    t = TargetLogin(policy())
    step = send(t, encode_text([*FIRST, ("MaxRecvDataSegmentLength", "8192")]), 1, 3)
    assert step.done is not None


def test_text_continuation_across_pdus() -> None:
    t = TargetLogin(policy())
    text = encode_text([*FIRST, ("AuthMethod", "None")])
    pieces = split_text(text, 10)
    for piece in pieces[:-1]:
        step = send(t, piece, transit=False, cont=True)
        assert step.text == b"" and not step.transit and not step.failed
    step = send(t, pieces[-1])
    assert step.transit and b"AuthMethod=None" in step.text


def test_initiator_handles_continued_response() -> None:
    i = InitiatorLogin(IQN_I, IQN_T)
    i.start()
    text = b"TargetPortalGroupTag=1\x00AuthMethod=None\x00"
    req = i.receive(0, 0, False, True, 0, 0, text[:5])
    assert req is not None and req.text == b"" and not req.transit
    req = i.receive(0, 1, True, False, 0, 0, text[5:])
    assert req is not None and req.csg == 1 and req.nsg == 3 and b"MaxBurstLength" in req.text


def test_libiscsi_style_repeat_of_same_initiator_name_tolerated() -> None:
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    step = send(t, encode_text([("InitiatorName", IQN_I), ("TargetName", IQN_T)]), 1, 3)
    assert step.done is not None


def test_redirect() -> None:
    t = TargetLogin(policy(redirect="10.0.0.2:3260,1"))
    step = send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    assert step.failed and step.status == LoginStatus.TARGET_MOVED_TEMPORARILY
    assert step.text == b"TargetAddress=10.0.0.2:3260,1\x00"
    i = InitiatorLogin(IQN_I, IQN_T)
    i.start()
    with pytest.raises(LoginRejected) as e:
        i.receive(0, 0, False, False, 1, 1, step.text)
    assert e.value.target_address == "10.0.0.2:3260,1" and e.value.status == 0x0101


# ---------------------------------------------------------------- hostile input


def fail_status(step: LoginStep) -> LoginStatus:
    assert step.failed and step.done is None
    return step.status


@pytest.mark.parametrize(
    ("pairs", "status"),
    [
        ([("SessionType", "Normal"), ("TargetName", IQN_T)], LoginStatus.MISSING_PARAMETER),
        ([("InitiatorName", IQN_I)], LoginStatus.MISSING_PARAMETER),
        ([("InitiatorName", IQN_I), ("TargetName", "iqn.nope")], LoginStatus.NOT_FOUND),
        ([("InitiatorName", IQN_I), ("SessionType", "Weird")], LoginStatus.SESSION_TYPE_NOT_SUPPORTED),
        ([*FIRST, ("InitiatorName", IQN_I)], LoginStatus.INITIATOR_ERROR),
        ([*FIRST, ("AuthMethod", "None"), ("AuthMethod", "None")], LoginStatus.INITIATOR_ERROR),
        ([*FIRST, ("MaxBurstLength", "65536")], LoginStatus.INITIATOR_ERROR),
        ([*FIRST, ("AuthMethod", "CHAP")], LoginStatus.AUTHENTICATION_FAILURE),
        ([("InitiatorName", "a b"), ("TargetName", IQN_T)], LoginStatus.INITIATOR_ERROR),
        ([("InitiatorName", "i" * 224), ("TargetName", IQN_T)], LoginStatus.INITIATOR_ERROR),
    ],
)
def test_bad_first_request(pairs: list[tuple[str, str]], status: LoginStatus) -> None:
    assert fail_status(send(TargetLogin(policy()), encode_text(pairs))) == status


@pytest.mark.parametrize(
    "raw",
    [
        b"InitiatorName=\xff\xfe\x00",
        b"initiatorname=x\x00",
        b"InitiatorName=" + b"x" * 9000 + b"\x00",
    ],
)
def test_malformed_text_fails_with_initiator_error(raw: bytes) -> None:
    assert fail_status(send(TargetLogin(policy()), raw)) == LoginStatus.INITIATOR_ERROR


@pytest.mark.parametrize(
    "raw", [b"InitiatorName\x00", b"InitiatorName=\x00", b"InitiatorName\x00TargetName=x\x00"]
)
def test_initiator_name_without_a_value_is_missing(raw: bytes) -> None:
    assert fail_status(send(TargetLogin(policy()), raw)) == LoginStatus.MISSING_PARAMETER


def test_oversized_continued_text() -> None:
    t = TargetLogin(policy())
    chunk = b"X-a=" + b"x" * 8000 + b"\x00"
    statuses = [send(t, chunk, transit=False, cont=True) for _ in range(9)]
    assert statuses[-1].failed and statuses[-1].status == LoginStatus.INITIATOR_ERROR


@pytest.mark.parametrize(
    ("csg", "nsg", "transit", "cont", "status"),
    [
        (0, 1, True, True, LoginStatus.INVALID_DURING_LOGIN),  # T and C
        (0, 2, True, False, LoginStatus.INVALID_DURING_LOGIN),  # NSG 2 reserved
        (1, 1, True, False, LoginStatus.INVALID_DURING_LOGIN),  # no backwards/same-stage transit
        (1, 0, True, False, LoginStatus.INVALID_DURING_LOGIN),
        (2, 3, True, False, LoginStatus.INVALID_DURING_LOGIN),
        (3, 3, True, False, LoginStatus.INVALID_DURING_LOGIN),
    ],
)
def test_bad_stage_fields(csg: int, nsg: int, transit: bool, cont: bool, status: LoginStatus) -> None:
    text = encode_text([*FIRST, ("AuthMethod", "None")])
    assert fail_status(send(TargetLogin(policy()), text, csg, nsg, transit, cont)) == status


def test_wrong_csg_after_transit() -> None:
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    assert fail_status(send(t, b"", 0, 1)) == LoginStatus.INVALID_DURING_LOGIN


def test_isid_changed_during_login() -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    send(t, encode_text([*FIRST, ("AuthMethod", "CHAP")]))
    assert fail_status(send(t, b"CHAP_A=5\x00", isid=ISID + 1)) == LoginStatus.INVALID_DURING_LOGIN


def test_unsupported_version() -> None:
    step = TargetLogin(policy()).receive(0, 1, True, False, ISID, 0, 1, 5, b"", version_min=1)
    assert fail_status(step) == LoginStatus.UNSUPPORTED_VERSION


def test_not_admitted_initiator() -> None:
    t = TargetLogin(policy(allowed_initiators=frozenset({"iqn.other"})))
    assert (
        fail_status(send(t, encode_text([*FIRST, ("AuthMethod", "None")])))
        == LoginStatus.AUTHORIZATION_FAILURE
    )
    t = TargetLogin(policy(allowed_initiators=frozenset({IQN_I})))
    assert not send(t, encode_text([*FIRST, ("AuthMethod", "None")])).failed


def test_removed_target_and_disabled_discovery() -> None:
    assert (
        fail_status(send(TargetLogin(policy(removed=True)), encode_text(FIRST))) == LoginStatus.TARGET_REMOVED
    )
    pol = TargetPolicy(lambda n: None, discovery_enabled=False)
    step = send(TargetLogin(pol), encode_text([("InitiatorName", IQN_I), ("SessionType", "Discovery")]))
    assert fail_status(step) == LoginStatus.SESSION_TYPE_NOT_SUPPORTED


def test_chap_required_but_initiator_offers_none() -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    step = send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    assert fail_status(step) == LoginStatus.AUTHENTICATION_FAILURE
    assert step.text == b"AuthMethod=Reject\x00"
    # the initiator's view
    step = drive(TargetLogin(policy(auth=chap_auth())), InitiatorLogin(IQN_I, IQN_T))
    assert step.status == LoginStatus.AUTHENTICATION_FAILURE


def test_chap_required_but_initiator_skips_security() -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    assert fail_status(send(t, encode_text(FIRST), 1, 3)) == LoginStatus.AUTHENTICATION_FAILURE


def test_no_transit_before_chap_done() -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    step = send(t, encode_text([*FIRST, ("AuthMethod", "CHAP,None")]), 0, 3)
    assert not step.transit and parse_text(step.text)[-1] == ("AuthMethod", "CHAP")
    step = send(t, b"CHAP_A=5\x00", 0, 3)
    assert not step.transit and step.done is None
    assert [k for k, _ in parse_text(step.text)] == ["CHAP_A", "CHAP_I", "CHAP_C"]


def test_wrong_secret() -> None:
    bad = ChapCredentials(USER.user, b"not-the-secret-1")
    step = drive(TargetLogin(policy(auth=chap_auth())), InitiatorLogin(IQN_I, IQN_T, chap=bad))
    assert fail_status(step) == LoginStatus.AUTHENTICATION_FAILURE


def test_reflected_challenge_rejected() -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    send(t, encode_text([*FIRST, ("AuthMethod", "CHAP")]))
    ch = dict(parse_text(send(t, b"CHAP_A=5\x00").text))
    r = chap_response(ChapAlgorithm.MD5, int(ch["CHAP_I"]), USER.secret, decode_binary(ch["CHAP_C"]))
    reply = encode_text(
        [
            ("CHAP_N", USER.user),
            ("CHAP_R", "0x" + r.hex()),
            ("CHAP_I", ch["CHAP_I"]),
            ("CHAP_C", ch["CHAP_C"]),
        ]
    )
    assert fail_status(send(t, reply)) == LoginStatus.AUTHENTICATION_FAILURE


def test_security_keys_after_auth_and_in_operational_stage() -> None:
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]), transit=False)
    assert fail_status(send(t, b"AuthMethod=None\x00")) == LoginStatus.INITIATOR_ERROR
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    assert fail_status(send(t, b"CHAP_A=5\x00", 1, 3)) == LoginStatus.INITIATOR_ERROR


def test_operational_key_repeated_across_requests() -> None:
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    send(t, b"MaxBurstLength=65536\x00", 1, 3, transit=False)
    assert fail_status(send(t, b"MaxBurstLength=65536\x00", 1, 3)) == LoginStatus.INITIATOR_ERROR


def test_bad_numbers_answered_reject_login_continues() -> None:
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    step = send(t, b"MaxBurstLength=-5\x00ErrorRecoveryLevel=0x99\x00X-foo=1\x00", 1, 3)
    assert parse_text(step.text)[:3] == [
        ("MaxBurstLength", "Reject"),
        ("ErrorRecoveryLevel", "Reject"),
        ("X-foo", "NotUnderstood"),
    ]
    assert step.done is not None and step.done.params.max_burst_length == 262144


def test_changed_target_name_fails() -> None:
    t = TargetLogin(policy())
    send(t, encode_text([*FIRST, ("AuthMethod", "None")]))
    assert (
        fail_status(send(t, encode_text([("TargetName", "iqn.other")]), 1, 3)) == LoginStatus.INITIATOR_ERROR
    )


def test_after_finish_everything_fails() -> None:
    t = TargetLogin(policy())
    assert send(t, encode_text([*FIRST, ("AuthMethod", "None")]), 0, 3).done is not None
    assert fail_status(send(t, b"", 1, 3)) == LoginStatus.INVALID_DURING_LOGIN


def test_endless_empty_requests_bounded() -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    send(t, encode_text([*FIRST, ("AuthMethod", "CHAP")]))
    steps = [send(t, b"") for _ in range(70)]
    assert steps[-1].failed


# ---------------------------------------------------------------- initiator against a hostile target


def test_initiator_raises_on_reject_status() -> None:
    i = InitiatorLogin(IQN_I, IQN_T)
    i.start()
    with pytest.raises(LoginRejected) as e:
        i.receive(0, 0, False, False, 2, 3, b"")
    assert e.value.status == LoginStatus.NOT_FOUND and "NOT_FOUND" in str(e.value)


@pytest.mark.parametrize(
    ("csg", "nsg", "transit", "text"),
    [
        (1, 3, True, b"AuthMethod=None\x00"),  # wrong CSG
        (0, 2, True, b"AuthMethod=None\x00"),  # reserved NSG
        (0, 3, True, b"AuthMethod=None\x00"),  # transit beyond what we asked
        (0, 1, True, b"AuthMethod=CHAP\x00"),  # method we did not offer
        (0, 1, True, b"\xff=1\x00"),
        (0, 1, True, b"AuthMethod=None\x00AuthMethod=None\x00"),
        (0, 1, True, b"AuthMethod\x00"),  # no value: not the None we offered
    ],
)
def test_initiator_protocol_errors(csg: int, nsg: int, transit: bool, text: bytes) -> None:
    i = InitiatorLogin(IQN_I, IQN_T)
    i.start()
    with pytest.raises(LoginProtocolError):
        i.receive(csg, nsg, transit, False, 0, 0, text)


def test_initiator_answers_of_a_target_without_values() -> None:
    """A target answering our offer with the key alone (no "=") breaks the negotiation; an alias without a
    value is no alias; an unknown key alone is answered NotUnderstood."""
    i = InitiatorLogin(IQN_I, IQN_T)
    i.start()
    req = i.receive(0, 1, True, False, 0, 0, b"AuthMethod=None\x00TargetAlias\x00X-org.example.k\x00")
    assert req is not None and b"X-org.example.k=NotUnderstood\x00" in req.text
    with pytest.raises(LoginProtocolError, match="MaxBurstLength"):
        i.receive(1, 3, True, False, 0, 0, b"MaxBurstLength\x00")


def test_initiator_refuses_transit_before_mutual_response() -> None:
    i = InitiatorLogin(IQN_I, IQN_T, chap=USER, mutual=TGT)
    i.start()
    i.receive(0, 0, False, False, 0, 0, b"AuthMethod=CHAP\x00")
    req = i.receive(0, 0, False, False, 0, 0, b"CHAP_A=5\x00CHAP_I=1\x00CHAP_C=0x" + b"ab" * 16 + b"\x00")
    assert req is not None and b"CHAP_C=" in req.text
    with pytest.raises(LoginProtocolError):
        i.receive(0, 1, True, False, 0, 0, b"")


def test_initiator_tolerates_not_understood_answers() -> None:
    i = InitiatorLogin(IQN_I, IQN_T)
    i.start()
    i.receive(0, 1, True, False, 0, 0, b"AuthMethod=None\x00")
    assert i.receive(1, 3, True, False, 0, 0, b"MaxBurstLength=NotUnderstood\x00X-odd=1\x00") is None
    assert i.result is not None and i.result.params.max_burst_length == 262144


# ---------------------------------------------------------------- property tests: no exception escapes

_fields = st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans(), st.booleans())
_texts = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "AuthMethod",
                    "CHAP_A",
                    "CHAP_N",
                    "CHAP_R",
                    "CHAP_I",
                    "CHAP_C",
                    "InitiatorName",
                    "TargetName",
                    "SessionType",
                    "MaxBurstLength",
                    "HeaderDigest",
                    "X-a",
                    "IFMarker",
                ]
            ),
            st.sampled_from(
                ["None", "CHAP", "5", "0x00", "0bAA==", IQN_I, IQN_T, "Discovery", "Yes", "", "x,y"]
            ),
        ),
        max_size=8,
    ).map(encode_text),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_fields, _texts), min_size=1, max_size=6))
def test_target_login_never_raises(requests: list[tuple[tuple[int, int, bool, bool], bytes]]) -> None:
    t = TargetLogin(policy(auth=chap_auth()))
    for (csg, nsg, transit, cont), text in requests:
        step = t.receive(csg, nsg, transit, cont, ISID, 0, 1, 5, text)
        assert isinstance(step, LoginStep)
        assert step.failed == (step.status != LoginStatus.SUCCESS)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_fields, _texts), min_size=1, max_size=6))
def test_initiator_login_raises_only_login_errors(
    responses: list[tuple[tuple[int, int, bool, bool], bytes]],
) -> None:
    i = InitiatorLogin(IQN_I, IQN_T, chap=USER, mutual=TGT)
    i.start()
    try:
        for (csg, nsg, transit, cont), text in responses:
            if i.receive(csg, nsg, transit, cont, 0, 0, text) is None:
                break
    except (LoginProtocolError, LoginRejected):
        pass


def test_chap_a_with_a_non_ascii_digit_is_refused_not_a_crash() -> None:
    """Found by fuzz/harness.py chap: '⑧'.isdigit() is True but int('⑧') raises ValueError."""
    from cistern.wire.chap import ChapTarget

    target = ChapTarget(lambda user: None)
    with pytest.raises(Exception) as caught:
        target.select_algorithm("\u2467,\u0665")  # CIRCLED DIGIT EIGHT, ARABIC-INDIC DIGIT FIVE
    assert type(caught.value).__name__ == "ChapError"
