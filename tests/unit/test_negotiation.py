"""RFC 7143 6.2 / 13 operational negotiation, both roles."""

from __future__ import annotations

import pytest

from cistern.wire.keys import KEYS, Kind, Scope, Stage, Use
from cistern.wire.negotiation import (
    Negotiated,
    NegotiationError,
    NegotiationPolicy,
    Negotiator,
    Role,
)

OP = Stage.OPERATIONAL


def target(**kw: object) -> Negotiator:
    return Negotiator(Role.TARGET, NegotiationPolicy(**kw))  # type: ignore[arg-type]


def test_key_table_facts() -> None:
    assert KEYS["MaxRecvDataSegmentLength"].kind is Kind.DECLARATIVE
    assert KEYS["MaxRecvDataSegmentLength"].scope is Scope.CO
    assert KEYS["MaxBurstLength"].use is Use.LO and KEYS["MaxBurstLength"].maximum == 2**24 - 1
    assert KEYS["DefaultTime2Wait"].kind is Kind.MAX
    assert KEYS["InitialR2T"].kind is Kind.OR and KEYS["ImmediateData"].kind is Kind.AND
    assert KEYS["ErrorRecoveryLevel"].maximum == 2


def test_target_answers_each_function() -> None:
    n = target(max_burst_length=65536, header_digest=("CRC32C", "None"), initial_r2t=False)
    answers = n.receive(
        [
            ("HeaderDigest", "None,CRC32C"),
            ("DataDigest", "CRC32C"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "8192"),
            ("DefaultTime2Wait", "0"),
            ("DefaultTime2Retain", "0"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("ErrorRecoveryLevel", "2"),
            ("MaxRecvDataSegmentLength", "16384"),
        ],
        OP,
    )
    assert answers == [
        ("HeaderDigest", "None"),
        ("DataDigest", "Reject"),
        ("MaxBurstLength", "65536"),
        ("FirstBurstLength", "8192"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("ErrorRecoveryLevel", "0"),
    ]
    p = n.negotiated()
    assert p.max_xmit_data_segment_length == 16384
    assert p.max_burst_length == 65536 and p.first_burst_length == 8192
    assert p.initial_r2t is False and p.header_digest is False and p.data_digest is False
    assert p.error_recovery_level == 0 and p.default_time2wait == 2 and p.default_time2retain == 0


def test_crc32c_chosen_when_first() -> None:
    n = target(header_digest=("CRC32C", "None"), data_digest=("CRC32C", "None"))
    assert n.receive([("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")], OP) == [
        ("HeaderDigest", "CRC32C"),
        ("DataDigest", "CRC32C"),
    ]
    assert n.negotiated().header_digest and n.negotiated().data_digest


def test_unknown_vendor_and_obsolete_keys() -> None:
    n = target()
    assert n.receive(
        [("X-com.example.Foo", "1"), ("FooBar", "x"), ("IFMarker", "Yes"), ("OFMarkInt", "1~65535")], OP
    ) == [("X-com.example.Foo", "NotUnderstood"), ("FooBar", "NotUnderstood"), ("IFMarker", "No"),
          ("OFMarkInt", "Reject")]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MaxBurstLength", "511"),
        ("MaxBurstLength", "16777216"),
        ("MaxBurstLength", "lots"),
        ("ErrorRecoveryLevel", "3"),
        ("InitialR2T", "Maybe"),
        ("HeaderDigest", "MD5"),
        ("MaxConnections", "0"),
        ("DefaultTime2Wait", "3601"),
    ],
)
def test_bad_values_rejected_default_holds(key: str, value: str) -> None:
    n = target()
    assert n.receive([(key, value)], OP) == [(key, "Reject")]
    assert n.negotiated() == Negotiated(max_recv_data_segment_length=8192)


def test_repeated_key_is_protocol_error() -> None:
    n = target()
    with pytest.raises(NegotiationError):
        n.receive([("MaxBurstLength", "65536"), ("MaxBurstLength", "65536")], OP)
    n = target()
    n.receive([("MaxRecvDataSegmentLength", "8192")], OP)
    with pytest.raises(NegotiationError):
        n.receive([("MaxRecvDataSegmentLength", "8192")], OP)


def test_out_of_stage_key() -> None:
    with pytest.raises(NegotiationError):
        target().receive([("MaxBurstLength", "65536")], Stage.SECURITY)
    with pytest.raises(NegotiationError):
        target().receive([("AuthMethod", "None")], OP)
    assert target().receive([("MaxBurstLength", "65536")], Stage.FULL_FEATURE) == [
        ("MaxBurstLength", "Reject")
    ]


def test_discovery_irrelevant_keys() -> None:
    n = Negotiator(Role.TARGET, NegotiationPolicy(), discovery=True)
    assert n.receive([("MaxBurstLength", "65536"), ("DefaultTime2Wait", "2")], OP) == [
        ("MaxBurstLength", "Irrelevant"),
        ("DefaultTime2Wait", "2"),
    ]
    assert all(k != "MaxBurstLength" for k, _ in n.offers())


def test_non_leading_connection_lo_key_irrelevant() -> None:
    n = Negotiator(Role.TARGET, NegotiationPolicy(), leading=False)
    assert n.receive([("MaxBurstLength", "65536"), ("HeaderDigest", "None")], OP) == [
        ("MaxBurstLength", "Irrelevant"),
        ("HeaderDigest", "None"),
    ]


def test_initiator_only_key_from_target_side() -> None:
    # TargetAlias sent by an initiator is answered Reject.
    assert target().receive([("TargetAlias", "x")], OP) == [("TargetAlias", "Reject")]


def test_first_burst_clamped_to_max_burst() -> None:
    n = target(max_burst_length=16384)
    answers = n.receive([("FirstBurstLength", "65536"), ("MaxBurstLength", "262144")], OP)
    assert dict(answers) == {"FirstBurstLength": "16384", "MaxBurstLength": "16384"}
    assert n.negotiated().first_burst_length == 16384
    with pytest.raises(ValueError):
        Negotiated(max_burst_length=512, first_burst_length=1024)


def test_target_offers_only_needed_keys() -> None:
    n = target(max_burst_length=65536, immediate_data=False, first_burst_length=65536)
    assert n.needs_offers()
    offers = n.offers()
    assert offers == [
        ("ImmediateData", "No"),
        ("MaxBurstLength", "65536"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]
    assert n.has_pending
    # the initiator answers
    n.receive([("ImmediateData", "No"), ("MaxBurstLength", "65536")], OP)
    assert not n.has_pending
    assert n.negotiated().immediate_data is False and n.negotiated().max_burst_length == 65536
    assert not target().needs_offers()


def test_initiator_checks_answers() -> None:
    i = Negotiator(Role.INITIATOR, NegotiationPolicy(header_digest=("CRC32C", "None")))
    offers = dict(i.offers())
    assert offers["HeaderDigest"] == "CRC32C,None" and offers["MaxRecvDataSegmentLength"] == "262144"
    with pytest.raises(NegotiationError):  # answer larger than our offer for a Minimum key
        i.receive([("MaxBurstLength", "2097152")], OP)


@pytest.mark.parametrize(
    ("key", "answer"),
    [
        ("HeaderDigest", "MD5"),
        ("HeaderDigest", "CRC32C,None"),
        ("InitialR2T", "No"),  # OR with our Yes must stay Yes
        ("DefaultTime2Wait", "1"),  # Maximum below our offer
        ("MaxOutstandingR2T", "x"),
    ],
)
def test_initiator_refuses_impossible_answers(key: str, answer: str) -> None:
    i = Negotiator(Role.INITIATOR, NegotiationPolicy())
    i.offers()
    with pytest.raises(NegotiationError):
        i.receive([(key, answer)], OP)


def test_initiator_tolerates_odd_target() -> None:
    i = Negotiator(Role.INITIATOR, NegotiationPolicy(max_burst_length=65536))
    i.offers()
    assert (
        i.receive(
            [
                ("MaxBurstLength", "NotUnderstood"),
                ("ErrorRecoveryLevel", "Irrelevant"),
                ("InitialR2T", "Reject"),
            ],
            OP,
        )
        == []
    )
    p = i.negotiated()
    assert p.max_burst_length == 262144 and p.error_recovery_level == 0 and p.initial_r2t is True


def test_initiator_answers_target_offer() -> None:
    i = Negotiator(Role.INITIATOR, NegotiationPolicy(max_burst_length=1048576))
    i.offers()
    i.receive([("MaxBurstLength", "1048576")], OP)
    assert i.receive([("MaxRecvDataSegmentLength", "65536"), ("TaskReporting", "FastAbort,RFC3720")], OP) == [
        ("TaskReporting", "RFC3720")
    ]
    assert i.negotiated().max_xmit_data_segment_length == 65536


def test_two_negotiators_agree() -> None:
    i = Negotiator(Role.INITIATOR, NegotiationPolicy(max_burst_length=65536, data_digest=("CRC32C", "None")))
    t = Negotiator(
        Role.TARGET, NegotiationPolicy(max_recv_data_segment_length=65536, data_digest=("CRC32C", "None"))
    )
    answers = t.receive(i.offers(), OP) + t.offers()
    assert i.receive(answers, OP) == []
    pi, pt = i.negotiated(), t.negotiated()
    assert pi.max_xmit_data_segment_length == pt.max_recv_data_segment_length == 65536
    assert pt.max_xmit_data_segment_length == pi.max_recv_data_segment_length == 262144
    assert pi.max_burst_length == pt.max_burst_length == 65536
    assert pi.data_digest and pt.data_digest


def test_text_negotiation_redeclare_mrdsl_in_ffp() -> None:
    t = target()
    t.receive([("MaxRecvDataSegmentLength", "8192")], OP)
    t.begin_text_negotiation()
    assert t.receive([("MaxRecvDataSegmentLength", "65536")], Stage.FULL_FEATURE) == []
    assert t.negotiated().max_xmit_data_segment_length == 65536


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        NegotiationPolicy(max_burst_length=2**24)
    with pytest.raises(ValueError):
        NegotiationPolicy(header_digest=("MD5",))
