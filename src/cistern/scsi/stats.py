"""Per-logical-unit I/O counters: plain integers in one slotted object, bumped once per command.

:meth:`DeviceServer.submit <cistern.scsi.server.DeviceServer.submit>` has :meth:`LuStats.record` called once
per command; the metrics exporter (:mod:`cistern.control.metrics`) and the dashboard read the integers at
scrape time.  Nothing here allocates per command.
"""

from __future__ import annotations

from typing import Final

from .task import ScsiResult, ScsiTask, Status

#: upper bounds (seconds) of the command latency histogram buckets; the last bucket is +Inf
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

# READ(6/10/12/16) and the WRITE family whose data-out is the data written (SBC-3 5.x)
READ_OPCODES: Final = frozenset({0x08, 0x28, 0xA8, 0x88})
WRITE_OPCODES: Final = frozenset({0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0x8E, 0x93, 0x41, 0x89, 0x8B, 0x9C})
_GOOD: Final = int(Status.GOOD)  # compiled, an enum member would be an attribute lookup per use

#: sense keys by number (SPC-4 table 48), the label of the errors metric
SENSE_KEY_NAMES = (
    "no_sense",
    "recovered_error",
    "not_ready",
    "medium_error",
    "hardware_error",
    "illegal_request",
    "unit_attention",
    "data_protect",
    "blank_check",
    "vendor_specific",
    "copy_aborted",
    "aborted_command",
    "reserved_0c",
    "volume_overflow",
    "miscompare",
    "reserved_0f",
)


class LuStats:
    """Counters of one LU since it was created.  Bytes count data moved (read data-in, write data-out)."""

    __slots__ = (
        "errors",
        "in_flight",
        "latency_buckets",
        "latency_sum",
        "other_commands",
        "read_bytes",
        "read_commands",
        "write_bytes",
        "write_commands",
    )

    def __init__(self) -> None:
        self.read_commands = 0
        self.write_commands = 0
        self.other_commands = 0
        self.read_bytes = 0
        self.write_bytes = 0
        self.in_flight = 0  # commands being executed now (the LU's queue depth)
        self.latency_sum = 0.0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative
        self.errors = [0] * 16  # CHECK CONDITION by sense key

    def record(self, task: ScsiTask, result: ScsiResult, seconds: float, io: list[int] | None = None) -> None:
        """Count one finished command (status, bytes moved, latency in seconds); ``io`` is the I_T nexus'
        ``[bytes read, bytes written]``, bumped by the same amounts."""
        cdb = task.cdb
        op = cdb[0] if len(cdb) else -1  # an empty CDB was answered with CHECK CONDITION
        if op in READ_OPCODES:
            self.read_commands += 1
            data = result.data_in
            if data is not None and result.status == _GOOD:
                n = len(data)
                if n > task.expected_length:
                    n = task.expected_length
                self.read_bytes += n
                if io is not None:
                    io[0] += n
        elif op in WRITE_OPCODES:
            self.write_commands += 1
            data = task.data_out
            if data is not None and result.status == _GOOD:
                n = len(data)
                self.write_bytes += n
                if io is not None:
                    io[1] += n
        else:
            self.other_commands += 1
        self.latency_sum += seconds
        bucket = 0  # the first bound >= seconds (bisect_left), found without boxing the bounds per call
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                break
            bucket += 1
        self.latency_buckets[bucket] += 1
        sense = result.sense
        if sense is not None and len(sense) > 2:
            key = sense[1] & 0x0F if sense[0] & 0x7F in (0x72, 0x73) else sense[2] & 0x0F
            self.errors[key] += 1

    @property
    def commands(self) -> int:
        return self.read_commands + self.write_commands + self.other_commands
