"""ERL 1 bookkeeping without I/O: the bounded status log (wire/recovery.py) and the kept read data
(wire/recovery.py) — pruning by ExpStatSN (serial arithmetic), SNACK ranges, the bounds."""

from __future__ import annotations

from cistern.wire import recovery
from cistern.wire.constants import FLAG_FINAL
from cistern.wire.recovery import Retained, RetainedSet, StatusLog, snack_range
from cistern.wire.serial import sn_lt


def test_status_log_keeps_until_acknowledged_and_is_bounded() -> None:
    log = StatusLog(limit=4)
    for statsn in (0xFFFFFFFE, 0xFFFFFFFF, 0, 1):
        log.add(statsn, [statsn.to_bytes(4, "big")])
    assert log.get(0xFFFFFFFF, 2, 2) == [[b"\xff\xff\xff\xff"], [b"\x00\x00\x00\x00"]]
    assert log.get(0xFFFFFFFE, 0, 2) is not None  # RunLength 0: to the last one sent
    log.acknowledge(0)  # the initiator has everything before StatSN 0 (across the wrap)
    assert len(log) == 2 and log.get(0xFFFFFFFF, 1, 2) is None
    for statsn in range(2, 8):
        log.add(statsn, [b""])
    assert len(log) == 4 and log.get(1, 1, 8) is None  # the oldest were forgotten
    assert log.get(4, 10**6, 8) is None  # an absurd RunLength is refused, not iterated


def test_snack_range() -> None:
    assert snack_range(1, 2, 4) == range(1, 3)
    assert snack_range(2, 0, 4) == range(2, 4)
    assert snack_range(3, 5, 4) is None and snack_range(4, 0, 4) is None


def test_retained_segments_follow_max_recv_and_burst() -> None:
    kept = Retained(0, memoryview(bytes(10000)), 4096, 6000, 7)
    segs = list(kept.segments())
    assert [(a, b) for a, b, _ in segs] == [(0, 4096), (4096, 6000), (6000, 10000)]
    assert [f & FLAG_FINAL for _, _, f in segs] == [0, FLAG_FINAL, FLAG_FINAL]
    assert kept.count() == 3


def test_retained_set_bounds() -> None:
    rs = RetainedSet()
    for itt in range(recovery.RETAINED_LIMIT + 5):
        kept = Retained(0, memoryview(bytes(10)), 8192, 8192, itt)
        kept.statsn = itt
        rs.add(itt, kept)
    assert (
        len(rs) == recovery.RETAINED_LIMIT and rs.get(0) is None and rs.bytes == 10 * recovery.RETAINED_LIMIT
    )
    rs.acknowledge(lambda statsn: sn_lt(statsn, 30))
    assert rs.get(29) is None and rs.get(30) is not None
    assert rs.by_ack_ttt(40) is not None and rs.by_ack_ttt(10**6) is None
    big = Retained(0, memoryview(bytearray(recovery.RETAINED_BYTES)), 8192, 8192, 1)
    rs.add(999, big)
    assert len(rs) == 1 and rs.bytes == recovery.RETAINED_BYTES  # the byte bound evicts the others
