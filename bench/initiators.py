#!/usr/bin/env python3
"""Compare cistern's initiator (``cistern bench``) with libiscsi's (``iscsi-perf``) and QEMU's (``qemu-img
bench``) against one target (tgt by default), interleaved in one run (issue 4).

    python3 bench/initiators.py                    # tgt, 3 rounds: 1 MiB reads at depth 16, 4 KiB at 32
    python3 bench/initiators.py --target cistern   # the same against cistern's own target

Each round runs every initiator on every row, rotating which goes first; the table shows medians and the
ratio of cistern's initiator to each of the others.  cistern bench and iscsi-perf run for --duration
seconds; qemu-img bench runs a fixed request count (--scale), its time taken from its own report.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests" / "integration")]

import targets  # noqa: E402
from workloads import KIB, MIB, Workload, run_workload  # noqa: E402

TOOLS = ("cistern-bench", "iscsi-perf", "qemu-img")
ROWS = ((MIB, 16), (4 * KIB, 32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=("tgt", "cistern"), default="tgt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds per cistern bench / iscsi-perf run"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply qemu-img request counts")
    parser.add_argument("--log-dir", type=Path, default=Path("artifacts/bench"))
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    start = targets.tgt_target if args.target == "tgt" else targets.cistern_target
    results: dict[tuple[int, int, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        disks = stack.enter_context(targets.prepared_disks(Path("/dev/shm"), 1 << 30))
        url = stack.enter_context(start(disks, args.log_dir)).urls["file"]
        for rnd in range(args.rounds):
            for size, depth in ROWS:
                order = TOOLS[rnd % 3 :] + TOOLS[: rnd % 3]
                for tool in order:
                    m = run_workload(Workload(tool, False, size, depth), url, args.scale, args.duration)
                    results.setdefault((size, depth, tool), []).append(m.mib_per_s)
                    print(
                        f"round {rnd + 1} {tool:14} {size // KIB:5}k qd{depth:<3} {m.mib_per_s:9.1f} MiB/s",
                        file=sys.stderr,
                    )
    print(f"target: {args.target}; medians of {args.rounds} round(s), MiB/s (IOPS)")
    print(
        f"{'reads':<12} {'cistern bench':>18} {'iscsi-perf':>18} {'qemu-img bench':>18} {'vs iscsi-perf':>14} "
        f"{'vs qemu-img':>12}"
    )
    for size, depth in ROWS:
        med = {tool: statistics.median(results[(size, depth, tool)]) for tool in TOOLS}

        def cell(tool: str, size: int = size, med: dict[str, float] = med) -> str:
            return f"{med[tool]:8.1f} ({med[tool] * MIB / size:7.0f})"

        label = f"{size // MIB}M qd{depth}" if size >= MIB else f"{size // KIB}k qd{depth}"
        print(
            f"{label:<12} {cell('cistern-bench'):>18} {cell('iscsi-perf'):>18} {cell('qemu-img'):>18} "
            f"{med['cistern-bench'] / med['iscsi-perf']:14.2f} {med['cistern-bench'] / med['qemu-img']:12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
