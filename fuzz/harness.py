"""Coverage-guided fuzzing of cistern's parsers with atheris (libFuzzer for Python).

    python fuzz/harness.py TARGET [libFuzzer options]      e.g.  -runs=1000000  or  -max_total_time=3

TARGET is one of: framer (PduReader over a byte stream, digests on or off), text (login/text key=value
decoding and accumulation), login (the target login state machine fed request sequences, with CHAP and
an ACL), negotiation (operational keys, target and initiator roles), chap (CHAP_A/CHAP_N/CHAP_R/CHAP_I/
CHAP_C on both sides), cdb (every CDB through the device server of a disk LU, with and without data-out).

The oracle is the module's contract: each entry point either returns or raises the error type of its layer
(FramingError, TextError, NegotiationError, ChapError); the login machine never raises for peer input; the
device server never raises and answers GOOD or CHECK CONDITION (never a HARDWARE ERROR sense key).  Any
other exception is a crash that libFuzzer reports with the input that caused it.  ``scripts/fuzz.sh`` runs
10^6 inputs per target; the suite runs each for a few seconds (tests/unit/test_fuzz_smoke.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["cistern"]):
    from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiTask
    from cistern.scsi.task import DataDirection, Status
    from cistern.storage import MemoryStore
    from cistern.wire.chap import ChapCredentials, ChapError, ChapInitiator, ChapTarget
    from cistern.wire.framing import FramingError, PduReader
    from cistern.wire.keys import Stage
    from cistern.wire.login import ChapAuth, TargetInfo, TargetLogin, TargetPolicy
    from cistern.wire.negotiation import NegotiationError, NegotiationPolicy, Negotiator, Role
    from cistern.wire.text import (
        TextAccumulator,
        TextError,
        decode_binary,
        decode_number,
        parse_target_address,
        parse_text,
        split_list,
    )

TARGET = "iqn.2026-11.org.cistern:fuzz"
SECRET = b"fuzz-secret-123"


def framer(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    reader = PduReader(
        max_data_segment_length=fdp.ConsumeIntInRange(0, 1 << 18),
        header_digest=fdp.ConsumeBool(),
        data_digest=fdp.ConsumeBool(),
    )
    try:
        for frame in reader.feed(fdp.ConsumeBytes(fdp.remaining_bytes())):
            assert frame.pdu is not None or frame.error is not None
    except FramingError:
        pass


def text(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    acc = TextAccumulator(max_total=fdp.ConsumeIntInRange(1, 1 << 16))
    try:
        while fdp.remaining_bytes():
            piece = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
            pairs = acc.feed(piece, final=fdp.ConsumeBool())
            if pairs is not None:
                acc.reset()
        for key, value in parse_text(data):
            with contextlib.suppress(TextError):
                parse_target_address(value) if key == "TargetAddress" else decode_number(value)
            with contextlib.suppress(TextError):
                split_list(value)
                decode_binary(value)
    except TextError:
        pass


def _policy() -> TargetPolicy:
    info = TargetInfo(
        name=TARGET,
        allowed_initiators=frozenset({"iqn.2026-11.org.cistern:ok"}),
        auth=ChapAuth(lookup_secret=lambda user: SECRET if user == "user" else None),
    )
    return TargetPolicy(lookup_target=lambda name: info if name == TARGET else None, random_bytes=lambda n: b"\x01" * n)


def login(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    machine = TargetLogin(_policy())
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        step = machine.receive(
            fdp.ConsumeIntInRange(0, 3),
            fdp.ConsumeIntInRange(0, 3),
            fdp.ConsumeBool(),
            fdp.ConsumeBool(),
            fdp.ConsumeIntInRange(0, (1 << 48) - 1),
            fdp.ConsumeIntInRange(0, 3),
            fdp.ConsumeIntInRange(0, 3),
            fdp.ConsumeInt(4) & 0xFFFFFFFF,
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1024)),
            version_max=fdp.ConsumeIntInRange(0, 255),
            version_min=fdp.ConsumeIntInRange(0, 255),
        )
        if step.failed or step.done is not None:
            return


def negotiation(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    role = Role.TARGET if fdp.ConsumeBool() else Role.INITIATOR
    negotiator = Negotiator(role, NegotiationPolicy(), discovery=fdp.ConsumeBool(), leading=fdp.ConsumeBool())
    try:
        pairs = parse_text(fdp.ConsumeBytes(fdp.remaining_bytes()))
    except TextError:
        return
    try:
        negotiator.receive(pairs, Stage.OPERATIONAL)
        negotiator.offers(Stage.OPERATIONAL)
        if not negotiator.has_pending:
            negotiator.negotiated()
    except NegotiationError:
        pass


def chap(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = ChapTarget(
        lambda user: SECRET if user == "user" else None,
        mutual=ChapCredentials("tgt", b"target-secret-12") if fdp.ConsumeBool() else None,
        require_mutual=fdp.ConsumeBool(),
        random_bytes=lambda n: b"\x02" * n,
    )
    initiator = ChapInitiator(ChapCredentials("user", SECRET), mutual=ChapCredentials("tgt", b"target-secret-12"))
    try:
        target.select_algorithm(fdp.ConsumeUnicodeNoSurrogates(32))
        keys = {
            k: fdp.ConsumeUnicodeNoSurrogates(300)
            for k in ("CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C")
            if fdp.ConsumeBool()
        }
        target.verify(keys)
    except ChapError:
        pass
    try:
        initiator.offer()
        reply = {k: fdp.ConsumeUnicodeNoSurrogates(300) for k in ("CHAP_A", "CHAP_I", "CHAP_C") if fdp.ConsumeBool()}
        initiator.respond(reply)
        initiator.verify_target({k: fdp.ConsumeUnicodeNoSurrogates(300) for k in ("CHAP_N", "CHAP_R")})
    except ChapError:
        pass


_NEXUS = ITNexus("iqn.2026-11.org.cistern:fuzz-init", b"\x80" + bytes(5), TARGET, tpgt=1, relative_port=1)
_LOOP = asyncio.new_event_loop()
_SERVER: DeviceServer | None = None


def cdb(data: bytes) -> None:
    global _SERVER
    if _SERVER is None:
        _SERVER = DeviceServer({0: LogicalUnit(MemoryStore(1 << 20), lun=0, thin=True)}, target_name=TARGET)
    fdp = atheris.FuzzedDataProvider(data)
    command = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 32))
    data_out = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8192)) if fdp.ConsumeBool() else None
    task = ScsiTask(
        nexus=_NEXUS,
        lun=fdp.ConsumeIntInRange(0, 1),
        cdb=command,
        direction=DataDirection.WRITE if data_out is not None else DataDirection.READ,
        expected_length=len(data_out) if data_out is not None else fdp.ConsumeIntInRange(0, 1 << 16),
        data_out=data_out,
    )
    result = _LOOP.run_until_complete(_SERVER.execute(task))
    assert result.status in (Status.GOOD, Status.CHECK_CONDITION, Status.RESERVATION_CONFLICT, Status.CONDITION_MET), (
        command.hex(),
        result.status,
    )
    if result.status == Status.CHECK_CONDITION and result.sense:
        sense = bytes(result.sense)
        key = (sense[2] if sense[0] & 0x7F in (0x70, 0x71) else sense[1]) & 0x0F
        assert key != 0x04, f"HARDWARE ERROR for CDB {command.hex()}"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framer": framer,
    "text": text,
    "login": login,
    "negotiation": negotiation,
    "chap": chap,
    "cdb": cdb,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
