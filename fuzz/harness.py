"""Coverage-guided fuzzing of cistern's parsers with atheris (libFuzzer for Python).

    python fuzz/harness.py TARGET [libFuzzer options]      e.g.  -runs=1000000  or  -max_total_time=3
    python fuzz/harness.py --seeds login|cdb DIR            seed corpus: complete logins / every disk opcode

TARGET is one of: framer (PduReader over a byte stream, digests on or off), text (login/text key=value
decoding and accumulation), login (the target login state machine fed request sequences, with CHAP, mutual CHAP and
an ACL), negotiation (operational keys, target and initiator roles), chap (CHAP_A/CHAP_N/CHAP_R/CHAP_I/
CHAP_C on both sides), cdb (every CDB through the device server of a disk LU, with and without data-out),
tape (every CDB through a medium changer and its tape drives).

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
from collections.abc import Callable, Iterable

import atheris

with atheris.instrument_imports(include=["cistern"]):
    from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiTask
    from cistern.scsi.table import CommandSpec
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


OPEN_TARGET = "iqn.2026-11.org.cistern:fuzz-open"
MUTUAL_TARGET = "iqn.2026-11.org.cistern:fuzz-mutual"
INITIATOR = "iqn.2026-11.org.cistern:ok"
MUTUAL = ChapCredentials("tgt", b"target-secret-12")
#: separates the Login Requests of one input (see :func:`login`)
REQUEST_SEPARATOR = b"\xfe\xfe"


def _policy() -> TargetPolicy:
    chap = ChapAuth(lookup_secret=lambda user: SECRET if user == "user" else None)
    targets = {
        TARGET: TargetInfo(name=TARGET, allowed_initiators=frozenset({INITIATOR}), auth=chap),
        OPEN_TARGET: TargetInfo(name=OPEN_TARGET),
        MUTUAL_TARGET: TargetInfo(
            name=MUTUAL_TARGET,
            auth=ChapAuth(
                lookup_secret=lambda user: SECRET if user == "user" else None,
                mutual=MUTUAL,
                require_mutual=True,
            ),
        ),
    }
    return TargetPolicy(lookup_target=targets.get, random_bytes=lambda n: b"\x01" * n)


def _request_header(csg: int, nsg: int, transit: bool, cont: bool = False) -> bytes:
    """The two header bytes :func:`login` decodes (CSG, NSG, T, C; CID 1, CmdSN 0)."""
    return bytes([csg | nsg << 2 | transit << 4 | cont << 5, 1])


def login(data: bytes) -> None:
    """Up to 8 Login Requests separated by REQUEST_SEPARATOR, each two header bytes then the text:
    byte 0 = CSG (bits 0-1), NSG (2-3), T (4), C (5), TSIH 1 instead of 0 (6), VersionMin 1 (7);
    byte 1 = CID (bits 0-3), CmdSN (4-7).  Seeds (``--seeds``) are real logins, so mutations start deep."""
    machine = TargetLogin(_policy())
    for request in data.split(REQUEST_SEPARATOR)[:8]:
        if len(request) < 2:
            return
        flags, ids = request[0], request[1]
        step = machine.receive(
            flags & 3,
            flags >> 2 & 3,
            bool(flags & 0x10),
            bool(flags & 0x20),
            0x80_0000_1234,
            flags >> 6 & 1,
            ids & 0x0F,
            ids >> 4,
            request[2:],
            version_max=0,
            version_min=flags >> 7,
        )
        if step.failed or step.done is not None:
            return


def login_seeds() -> list[bytes]:
    """Complete logins as :func:`login` inputs: recorded from our initiator against the same policy."""
    from cistern.wire.login import InitiatorLogin
    from cistern.wire.negotiation import NegotiationPolicy as Policy

    cases = [
        InitiatorLogin(INITIATOR, None),  # discovery
        InitiatorLogin(INITIATOR, OPEN_TARGET),
        InitiatorLogin(
            INITIATOR,
            OPEN_TARGET,
            policy=Policy(header_digest=("CRC32C", "None"), error_recovery_level=2, initial_r2t=False),
        ),
        InitiatorLogin(INITIATOR, TARGET, chap=ChapCredentials("user", SECRET)),
        InitiatorLogin(INITIATOR, MUTUAL_TARGET, chap=ChapCredentials("user", SECRET), mutual=MUTUAL),
    ]
    seeds = []
    for initiator in cases:
        target = TargetLogin(_policy())
        requests = []
        req = initiator.start()
        for _ in range(12):
            requests.append(_request_header(req.csg, req.nsg, req.transit) + req.text)
            step = target.receive(req.csg, req.nsg, req.transit, False, 0x80_0000_1234, 0, 1, 0, req.text)
            if step.failed:
                break
            nxt = initiator.receive(
                step.csg, step.nsg, step.transit, False, step.status_class, step.status_detail, step.text, 1
            )
            if nxt is None:
                break
            req = nxt
        seeds.append(REQUEST_SEPARATOR.join(requests))
    return seeds


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
    initiator = ChapInitiator(
        ChapCredentials("user", SECRET), mutual=ChapCredentials("tgt", b"target-secret-12")
    )
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
        reply = {
            k: fdp.ConsumeUnicodeNoSurrogates(300)
            for k in ("CHAP_A", "CHAP_I", "CHAP_C")
            if fdp.ConsumeBool()
        }
        initiator.respond(reply)
        initiator.verify_target({k: fdp.ConsumeUnicodeNoSurrogates(300) for k in ("CHAP_N", "CHAP_R")})
    except ChapError:
        pass


_NEXUS = ITNexus("iqn.2026-11.org.cistern:fuzz-init", b"\x80" + bytes(5), TARGET, tpgt=1, relative_port=1)
_LOOP = asyncio.new_event_loop()
_SERVER: DeviceServer | None = None


def _execute(server: DeviceServer, data: bytes, luns: int) -> None:
    """Byte 0: bit 0 a data-out buffer follows, bits 1-2 the LUN (modulo ``luns`` + 1: one absent LUN);
    byte 1: CDB length - 1 (1..32 bytes); then the CDB; then the data-out (up to 8 KiB) or the expected read
    length (2 bytes).  The device server must answer GOOD, CHECK CONDITION (never HARDWARE ERROR),
    RESERVATION CONFLICT or CONDITION MET, and never raise."""
    if len(data) < 3:
        return
    flags, length = data[0], 1 + data[1] % 32
    command, rest = data[2 : 2 + length], data[2 + length :]
    data_out = rest[:8192] if flags & 1 else None
    task = ScsiTask(
        nexus=_NEXUS,
        lun=(flags >> 1 & 3) % (luns + 1),
        cdb=command,
        direction=DataDirection.WRITE if data_out is not None else DataDirection.READ,
        expected_length=len(data_out) if data_out is not None else int.from_bytes(rest[:2], "big"),
        data_out=data_out,
    )
    result = _LOOP.run_until_complete(server.execute(task))
    assert result.status in (
        Status.GOOD,
        Status.CHECK_CONDITION,
        Status.RESERVATION_CONFLICT,
        Status.CONDITION_MET,
    ), (
        command.hex(),
        result.status,
    )
    if result.status == Status.CHECK_CONDITION and result.sense:
        sense = bytes(result.sense)
        key = (sense[2] if sense[0] & 0x7F in (0x70, 0x71) else sense[1]) & 0x0F
        assert key != 0x04, f"HARDWARE ERROR for CDB {command.hex()}"


def cdb(data: bytes) -> None:
    """Every CDB through the device server of a thin disk LU (LUN 0; LUN 1 is absent)."""
    global _SERVER
    if _SERVER is None:
        _SERVER = DeviceServer({0: LogicalUnit(MemoryStore(1 << 20), lun=0, thin=True)}, target_name=TARGET)
    _execute(_SERVER, data, 1)


_TAPE: DeviceServer | None = None


def tape(data: bytes) -> None:
    """Every CDB through a medium changer (LUN 0) and its two tape drives (LUNs 1, 2; one loaded) over a
    library of 4 MiB cartridges in artifacts/fuzz/tape-library under the working directory (made afresh)."""
    global _TAPE
    if _TAPE is None:
        import os
        import shutil

        from cistern.scsi.changer import DRIVE_BASE, SLOT_BASE, ChangerUnit
        from cistern.scsi.tape import TapeUnit
        from cistern.storage.tape import Library, default_barcodes, ensure_cartridges

        folder = os.path.join("artifacts", "fuzz", "tape-library")  # under the working directory
        shutil.rmtree(folder, ignore_errors=True)
        ensure_cartridges(folder, default_barcodes("FZ", 3), 4 << 20)
        drives = [TapeUnit(lun=1, serial="drive-1"), TapeUnit(lun=2, serial="drive-2")]
        changer = ChangerUnit(Library(folder, slots=4, ie=1, drives=2), drives, lun=0, serial="changer-0")
        _TAPE = DeviceServer({0: changer, 1: drives[0], 2: drives[1]}, target_name=TARGET)
        # MOVE MEDIUM (SMC-3 6.6): the first slot's cartridge into the first drive
        move = (
            bytes([0xA5, 0, 0, 0]) + SLOT_BASE.to_bytes(2, "big") + DRIVE_BASE.to_bytes(2, "big") + bytes(4)
        )
        for lun in (0, 0, 1):  # past the power-on unit attention, then load drive 1
            _execute(_TAPE, bytes([lun << 1, 5]) + bytes(6), 2)
        _execute(_TAPE, bytes([0, len(move) - 1]) + move, 2)
    _execute(_TAPE, data, 2)


def _opcode_seeds(specs: Iterable[CommandSpec], lun: int) -> list[bytes]:
    """Per command: a zero CDB with its opcode (and service action), without and with 512 bytes out."""
    seeds = []
    for spec in specs:
        command = bytearray(len(spec.usage))
        command[0] = spec.opcode
        if spec.service_action is not None:
            if spec.opcode == 0x7F:  # variable-length CDB: service action in bytes 8-9
                command[7], command[8:10] = len(command) - 8, spec.service_action.to_bytes(2, "big")
            else:
                command[1] = spec.service_action
        head = bytes([len(command) - 1]) + bytes(command)
        seeds += [bytes([lun << 1]) + head + b"\x02\x00", bytes([lun << 1 | 1]) + head + bytes(512)]
    return seeds


def cdb_seeds() -> list[bytes]:
    from cistern.scsi.commands import COMMANDS

    return _opcode_seeds(COMMANDS, 0)


def tape_seeds() -> list[bytes]:
    from cistern.scsi.changer import CHANGER_COMMANDS
    from cistern.scsi.ssc import TAPE_COMMANDS

    return _opcode_seeds(CHANGER_COMMANDS.specs, 0) + _opcode_seeds(TAPE_COMMANDS.specs, 1)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framer": framer,
    "text": text,
    "login": login,
    "negotiation": negotiation,
    "chap": chap,
    "cdb": cdb,
    "tape": tape,
}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--seeds":  # write the seed corpus of TARGET into DIR
        seeds = {"login": login_seeds, "cdb": cdb_seeds, "tape": tape_seeds}[sys.argv[2]]()
        for i, seed in enumerate(seeds):
            with open(f"{sys.argv[3]}/seed-{sys.argv[2]}-{i}", "wb") as handle:
                handle.write(seed)
        return
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
