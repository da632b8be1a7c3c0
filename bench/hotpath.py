#!/usr/bin/env python3
"""Python CPU per SCSI command on the target, without the network: repeatable numbers on a noisy machine.

A real :class:`~cistern.target.server.TargetServer` (uvloop) serves a memory LUN and a file LUN on /dev/shm;
one raw client logs in over a socket, then its connection's transport is swapped for a sink that only
counts bytes, and pre-encoded SCSI Command PDUs are handed to ``buffer_updated`` in chunks of ``depth``
commands, as a pipelining initiator's would arrive.  Each command completes inline (memory copy, page-cache
``preadv``), so ``time.process_time`` over many commands is the Python cost per I/O, free of system calls,
scheduling and the other processes on the machine.  Usage:

    python3 bench/hotpath.py                  # read/write 4k, depth 1 and 32, memory and file LUN; write 64k
                                              # depth 32 (one PDU with 64 KiB immediate data per command)
    python3 bench/hotpath.py --profile read   # cProfile of 4k reads at depth 32 (memory LUN)
    valgrind --tool=callgrind --collect-atstart=no python3 bench/hotpath.py --callgrind --count 4000
        # instructions per command: collection is switched on only while commands are fed, one dump
        # per case (callgrind.out.PID.N, "case" in its header); needs gcc and valgrind's callgrind.h
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import ctypes
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent / "tests" / "unit")]

import uvloop  # noqa: E402
from test_target_harness import INITIATOR, IQN, Client, read10, write10  # noqa: E402

from cistern.scsi.lu import LogicalUnit  # noqa: E402
from cistern.scsi.server import DeviceServer  # noqa: E402
from cistern.storage.file import FileStore  # noqa: E402
from cistern.storage.memory import MemoryStore  # noqa: E402
from cistern.target.model import TargetLimits, TargetSpec  # noqa: E402
from cistern.target.server import TargetServer  # noqa: E402
from cistern.wire import pdu as P  # noqa: E402
from cistern.wire.framing import frame_pdu  # noqa: E402

SIZE = 64 << 20
BLOCK = 4096  # request size
BIG = 65536  # the large-write case: 64 KiB of immediate data per SCSI Command


class _CountingTransport:
    """Stands in for the socket after login: takes writes, counts bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.bytes += len(part)

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _commands(client: Client, lun: int, write: bool, count: int, size: int = BLOCK) -> list[bytes]:
    out = []
    blocks = size // 512
    for i in range(count):
        lba = (i * blocks) % (SIZE // 512 - blocks)
        client.itt += 1
        cdb = (write10 if write else read10)(lba, blocks)
        pdu = P.ScsiCommand(
            flags=0x80 | (0x20 if write else 0x40) | 1,
            lun=P.encode_lun(lun),
            itt=client.itt,
            expected_data_transfer_length=size,
            cmdsn=client.cmdsn,
            expstatsn=client.expstatsn,
            cdb16=cdb.ljust(16, b"\0"),
            data=bytes(size) if write else b"",
        )
        client.cmdsn = (client.cmdsn + 1) & 0xFFFFFFFF
        out.append(b"".join(bytes(p) for p in frame_pdu(pdu)))
    return out


def _callgrind_control() -> ctypes.CDLL:
    """A tiny C helper issuing callgrind's client requests (toggle collection, dump with a name)."""
    tmp = Path(tempfile.mkdtemp(prefix="cistern-cg-"))
    atexit.register(shutil.rmtree, tmp, True)
    (tmp / "cg.c").write_text(
        "#include <valgrind/callgrind.h>\n"
        "void cg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n"
        "void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }\n"
    )
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp / "cg.so"), str(tmp / "cg.c")], check=True
    )
    return ctypes.CDLL(str(tmp / "cg.so"))


def _feed(conn: object, chunks: list[bytes]) -> None:
    for chunk in chunks:
        mv = memoryview(chunk)
        while mv:
            buf = conn.get_buffer(len(mv))  # type: ignore[attr-defined]
            n = min(len(buf), len(mv))
            buf[:n] = mv[:n]
            conn.buffer_updated(n)  # type: ignore[attr-defined]
            mv = mv[n:]


async def _measure(args: argparse.Namespace) -> None:
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    path = shm / f"cistern-hotpath-{os.getpid()}.img"
    file_store = FileStore(path, SIZE)
    await file_store.write(0, bytes(range(256)) * (SIZE // 256))
    mem = MemoryStore(SIZE)
    await mem.write(0, bytes(range(256)) * (SIZE // 256))
    device = DeviceServer(
        {0: LogicalUnit(mem, lun=0, serial="m"), 1: LogicalUnit(file_store, lun=1, serial="f")},
        target_name=IQN,
    )
    spec = TargetSpec(
        IQN, device, portals=[("127.0.0.1", 0)], acl=frozenset({INITIATOR}), limits=TargetLimits()
    )
    server = TargetServer([spec], login_timeout=5, nop_interval=0, nop_timeout=5)
    await server.start()
    try:
        client = await Client.open(server.bound[0][1])
        await client.login(operational=(("MaxRecvDataSegmentLength", "262144"),))
        await client.ready()
        (conn,) = list(server.connections)
        transport = _CountingTransport()
        real = conn.transport
        conn.transport = conn.pump.transport = transport  # type: ignore[assignment]
        rows = []
        cg = _callgrind_control() if args.callgrind else None
        cases = [(lun, write, depth, BLOCK) for lun in (0, 1) for write in (False, True) for depth in (1, 32)]
        cases += [(lun, True, 32, BIG) for lun in (0, 1)]  # 64 KiB immediate data: one PDU per command
        if args.profile:
            cases = [(args.lun, args.profile != "read", 32, BIG if args.profile == "write64k" else BLOCK)]
        for lun, write, depth, size in cases:
            count = args.count if size == BLOCK else max(args.count // 10, 40 * depth)
            pdus = _commands(client, lun, write, count, size)
            chunks = [b"".join(pdus[i : i + depth]) for i in range(0, count, depth)]
            _feed(conn, chunks[:20])  # warm up
            chunks = chunks[20:]
            done = count - 20 * depth
            profiler = cProfile.Profile() if args.profile else None
            kind = f"{'write' if write else 'read'} {size // 1024}k"
            name = f"{kind} qd{depth} {'memory' if lun == 0 else 'file'}"
            if cg is not None:
                cg.cg_dump(b"setup")
                cg.cg_toggle()
            t0 = time.process_time()
            if profiler:
                profiler.enable()
            _feed(conn, chunks)
            if profiler:
                profiler.disable()
            t1 = time.process_time()
            if cg is not None:
                cg.cg_toggle()
                cg.cg_dump(f"{name} x{done}".encode())
            await asyncio.sleep(0)  # anything deferred to the end of the iteration
            rows.append((name, (t1 - t0) / done * 1e6))
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        conn.transport = conn.pump.transport = real
        for name, us in rows:
            print(f"{name:24s} {us:6.2f} µs Python CPU per command")
        await client.close()
    finally:
        await server.stop(logout_grace=0.05)
        await file_store.close()
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=40000, help="commands per case")
    parser.add_argument(
        "--profile", choices=("read", "write", "write64k"), help="cProfile one case (depth 32) instead"
    )
    parser.add_argument(
        "--callgrind", action="store_true", help="under callgrind: count only the fed commands"
    )
    parser.add_argument("--lun", type=int, default=0, choices=(0, 1), help="with --profile: 0 memory, 1 file")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_measure(args))


if __name__ == "__main__":
    main()
