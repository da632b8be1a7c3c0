"""The negotiated-parameter split (wire/params.py) and the wire/ error vocabulary (wire/errors.py)."""

from __future__ import annotations

import pytest

from cistern.wire.constants import RejectReason
from cistern.wire.errors import DROP, Drop, Rejection, RemoteProtocolError
from cistern.wire.framing import FramingError
from cistern.wire.keys import KEYS, Scope, Stage
from cistern.wire.negotiation import NegotiationPolicy, Negotiator, Role
from cistern.wire.params import PARAM_BY_NAME, PARAM_KEYS, PARAMS, ConnectionParams, Negotiated, SessionParams
from cistern.wire.pdu import PduError


def test_every_field_has_the_scope_of_its_rfc_key() -> None:
    for name in SessionParams.__dataclass_fields__:
        assert KEYS[PARAM_KEYS[name]].scope is Scope.SW
    for name in ConnectionParams.__dataclass_fields__:
        assert KEYS[PARAM_KEYS[name]].scope is Scope.CO


def test_one_parameter_table_feeds_policy_config_and_results() -> None:
    from dataclasses import fields

    from pydantic import ValidationError

    from cistern.config.params import RFC_KEY_NAMES, ParamsConfig

    assert len({p.key for p in PARAMS}) == len(PARAMS)
    results = {f.name: f for f in (*fields(SessionParams), *fields(ConnectionParams))}
    for p in PARAMS:
        assert p.name in results and PARAM_KEYS[p.name] == p.key
        assert p.scope is KEYS[p.key].scope and p.result is KEYS[p.key].kind
    # the policy's fields and the config's fields are parameter names; ranges come from the RFC table
    assert {f.name for f in fields(NegotiationPolicy)} - set(PARAM_BY_NAME) == {"offer_rfc7143_keys"}
    assert all(RFC_KEY_NAMES[name] == PARAM_BY_NAME[name].key for name in ParamsConfig.model_fields)
    for name in ("max_outstanding_r2t", "default_time2wait", "max_burst_length", "error_recovery_level"):
        p = PARAM_BY_NAME[name]
        with pytest.raises(ValidationError):
            ParamsConfig(**{name: p.maximum + 1})
        with pytest.raises(ValueError):
            NegotiationPolicy(**{name: p.minimum - 1})


def test_flat_and_split_construction_agree() -> None:
    flat = Negotiated(max_burst_length=4096, first_burst_length=512, header_digest=True)
    split = Negotiated(SessionParams(max_burst_length=4096, first_burst_length=512), ConnectionParams(True))
    assert flat == split
    assert flat.max_burst_length == 4096 and flat.session.first_burst_length == 512
    assert flat.header_digest and flat.connection.header_digest
    smaller = flat.replace(max_xmit_data_segment_length=4096)
    assert smaller.max_xmit_data_segment_length == 4096 and smaller.session is flat.session
    with pytest.raises(AttributeError):
        flat.session = SessionParams()
    with pytest.raises(TypeError):
        Negotiated(no_such_key=1)
    with pytest.raises(ValueError):
        Negotiated(max_burst_length=512, first_burst_length=1024)


def test_negotiator_result_is_split_by_scope() -> None:
    n = Negotiator(Role.TARGET, NegotiationPolicy(max_connections=8, error_recovery_level=2))
    n.receive(
        [("MaxConnections", "4"), ("ErrorRecoveryLevel", "2"), ("MaxRecvDataSegmentLength", "4096")],
        Stage.OPERATIONAL,
    )
    result = n.negotiated()
    assert result.session.max_connections == 4 and result.session.error_recovery_level == 2
    assert result.connection.max_xmit_data_segment_length == 4096


def test_error_vocabulary_carries_the_rfc_answer() -> None:
    e = PduError("bad field", RejectReason.INVALID_PDU_FIELD)
    assert isinstance(e, RemoteProtocolError)
    assert (
        e.answer == Rejection(RejectReason.INVALID_PDU_FIELD)
        and e.reject_reason is RejectReason.INVALID_PDU_FIELD
    )
    f = FramingError("lost framing")
    assert isinstance(f, RemoteProtocolError) and f.answer == DROP and isinstance(f.answer, Drop)
    assert f.reject_reason is None
