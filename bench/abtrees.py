#!/usr/bin/env python3
"""A/B two cistern source trees against each other (and tgt), interleaved, on one machine.

``bench/compare.py`` answers "cistern against tgt"; this answers "did a change help", which on a noisy VM
needs both trees measured in the same minutes.  tgt, the cistern of ``--base`` (the ``src`` directory of
another checkout, e.g. ``git worktree add /tmp/base <commit>`` built in place with ``python3 setup.py
build_ext --inplace``) and the cistern of this tree each serve a file of their own on ``--dir``; every
workload runs on the three in turn, the order rotated each round; the table gives medians of IOPS and of
the server CPU per I/O (user + system of the server process, as in compare.py).  Usage (root, from the
repository root):

    python3 bench/abtrees.py --base /tmp/base/src --filter 'qd1' --filter 4k --rounds 4

``--filter`` keeps workloads whose name contains every given string (compare.py's names, e.g.
``qemu-img write 64k qd32``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests" / "integration")]

import peers  # noqa: E402
import targets  # noqa: E402
from workloads import default_workloads, run_workload  # noqa: E402


def _remove_if_empty(directory: Path) -> None:
    if directory.exists() and not any(directory.iterdir()):
        directory.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="src directory of the other cistern tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="LUN size, MiB")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--filter", action="append", default=[], help="keep workloads containing this")
    parser.add_argument("--log-dir", type=Path, default=Path("artifacts/bench-ab"))
    args = parser.parse_args(argv)
    if not (args.base / "cistern" / "__init__.py").is_file():
        print(f"--base: {args.base} is not a cistern src directory", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.size < 1:
        print("--rounds and --size must be positive", file=sys.stderr)
        return 2
    workloads = [w for w in default_workloads() if all(f in w.name for f in args.filter)]
    if not workloads:
        print("no workload matches --filter", file=sys.stderr)
        return 2
    args.log_dir.mkdir(parents=True, exist_ok=True)
    this_src = str(_HERE.parent / "src")
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    started = time.monotonic()
    base_dir, this_dir = args.dir / "cistern-ab-base", args.dir / "cistern-ab-this"
    with contextlib.ExitStack() as stack:
        # a set of files each: a backing file is exported by one target at a time (store lock), and the two
        # cistern trees must be placed alike (with "this" sharing tgt's files, the same tree measured 10 %
        # more CPU per 1 MiB read in the "this" slot than in the "base" slot)
        for made in (base_dir, this_dir):
            stack.callback(_remove_if_empty, made)
        disks = stack.enter_context(targets.prepared_disks(args.dir, args.size << 20))
        disks_base = stack.enter_context(targets.prepared_disks(base_dir, args.size << 20))
        disks_this = stack.enter_context(targets.prepared_disks(this_dir, args.size << 20))
        runs = [
            ("tgt", stack.enter_context(targets.tgt_target(disks, args.log_dir))),
            ("base", stack.enter_context(
                targets.cistern_target(disks_base, args.log_dir, env={"PYTHONPATH": str(args.base)})
            )),
            ("this", stack.enter_context(
                targets.cistern_target(disks_this, args.log_dir, env={"PYTHONPATH": this_src})
            )),
        ]  # fmt: skip
        for round_index in range(args.rounds):
            for index, workload in enumerate(workloads):
                shift = (round_index + index) % len(runs)
                for name, run in runs[shift:] + runs[:shift]:
                    cpu0 = targets.cpu_seconds(run.pid)
                    try:
                        got = run_workload(workload, run.urls["file"])
                    except peers.PeerError as exc:
                        print(f"FAILED {name} {workload.name}: {str(exc).splitlines()[0]}", file=sys.stderr)
                        return 1
                    per_io = (targets.cpu_seconds(run.pid) - cpu0) / got.ios * 1e6 if got.ios else 0.0
                    samples.setdefault((workload.name, name), []).append((got.iops, per_io))
                    print(
                        f"round {round_index + 1} {name:4s} {workload.name:26s} {got.iops:9.0f} IOPS "
                        f"{per_io:7.1f} µs CPU/IO",
                        file=sys.stderr,
                    )
    print(f"{'workload':26s}" + "".join(f" | {n + ' IOPS':>10s} {'µs/IO':>6s}" for n, _ in runs))
    for workload in workloads:
        cells = []
        for name, _ in runs:
            taken = samples[(workload.name, name)]
            cells.append(
                f" | {statistics.median(s[0] for s in taken):10,.0f} {statistics.median(s[1] for s in taken):6.1f}"
            )
        print(f"{workload.name:26s}" + "".join(cells))
    print(f"\n{args.rounds} round(s), medians; base = {args.base}; {time.monotonic() - started:.0f}s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
