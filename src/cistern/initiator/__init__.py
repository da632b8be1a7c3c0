"""cistern.initiator: a pure-Python asyncio iSCSI initiator (RFC 7143) on the sans-I/O ``wire`` core.

    async with await connect("iscsi://127.0.0.1:3260/iqn.2024-01.org.example:disk/1") as s:
        data = await s.read(1, lba=0, blocks=8)

See :mod:`cistern.initiator.client` for :func:`connect` / :func:`discover`, and
:mod:`cistern.initiator.sync` for the synchronous facade.
"""

from cistern.initiator.client import DiscoveredTarget, IscsiSession, connect, discover
from cistern.initiator.errors import (
    AuthenticationError,
    CommandAborted,
    CommandTimeout,
    ConnectionLost,
    IscsiError,
    LoginError,
    Miscompare,
    ProtocolError,
    ReservationConflict,
    ScsiCheckCondition,
    ScsiError,
    SessionFailed,
    TaskManagementError,
    UnitAttention,
)
from cistern.initiator.params import ChapSecret, ReconnectPolicy, SessionConfig, TlsConfig
from cistern.initiator.scsi_data import Capacity, InquiryData, VpdPage
from cistern.initiator.sense import Sense
from cistern.initiator.task import Command, ScsiResult
from cistern.initiator.url import IscsiUrl, parse_url

__all__ = [
    "AuthenticationError",
    "Capacity",
    "ChapSecret",
    "Command",
    "CommandAborted",
    "CommandTimeout",
    "ConnectionLost",
    "DiscoveredTarget",
    "InquiryData",
    "IscsiError",
    "IscsiSession",
    "IscsiUrl",
    "LoginError",
    "Miscompare",
    "ProtocolError",
    "ReconnectPolicy",
    "ReservationConflict",
    "ScsiCheckCondition",
    "ScsiError",
    "ScsiResult",
    "Sense",
    "SessionConfig",
    "SessionFailed",
    "TaskManagementError",
    "TlsConfig",
    "UnitAttention",
    "VpdPage",
    "connect",
    "discover",
    "parse_url",
]
