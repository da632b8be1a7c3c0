#!/usr/bin/env python3
"""A/B cistern source trees or settings against each other (and tgt), interleaved, on one machine.

``bench/compare.py`` answers "cistern against tgt"; this answers "did a change help", which on a noisy VM
needs both sides measured in the same minutes.  tgt, the cistern of ``--base`` (the ``src`` directory of
another checkout, e.g. ``git worktree add /tmp/base <commit>`` built in place with ``python3 setup.py
build_ext --inplace``) and the cistern of this tree each serve a file of their own on ``--dir``; every
workload runs on all of them in turn, the order rotated each round; the table gives medians of IOPS and
of the server CPU per I/O (user + system of the server process, as in compare.py).  Instead of (or with)
``--base``, ``--variant NAME:KEY=VALUE[;KEY=VALUE...]`` adds this tree with root keys of its config set
(repeatable; each variant serves its own files too).  Usage (root, from the repository root):

    python3 bench/abtrees.py --base /tmp/base/src --filter 'qd1' --filter 4k --rounds 4
    python3 bench/abtrees.py --variant 'always:busy_poll_mode="always"' --variant never:busy_poll_us=0 \
        --filter '4k qd1' --rounds 3

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


def _parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME:KEY=VALUE[;KEY=VALUE...]`` -> (NAME, root TOML lines), checked against cistern's config
    model; ValueError when malformed."""
    name, colon, settings = text.partition(":")
    if not colon or not name.strip() or not settings.strip():
        raise ValueError(f"{text!r}: expected NAME:KEY=VALUE[;KEY=VALUE...]")
    return name.strip(), targets.root_settings(settings.split(";"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, help="src directory of the other cistern tree")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:KEY=VALUE[;KEY=VALUE...]: this tree with these root keys (TOML values), repeatable",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="LUN size, MiB")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--filter", action="append", default=[], help="keep workloads containing this")
    parser.add_argument("--log-dir", type=Path, default=Path("artifacts/bench-ab"))
    args = parser.parse_args(argv)
    if args.base is not None and not (args.base / "cistern" / "__init__.py").is_file():
        print(f"--base: {args.base} is not a cistern src directory", file=sys.stderr)
        return 2
    try:
        variants = [_parse_variant(text) for text in args.variant]
    except ValueError as exc:
        print(f"--variant: {exc}", file=sys.stderr)
        return 2
    if args.base is None and not variants:
        print("give --base, --variant or both", file=sys.stderr)
        return 2
    names = [name for name, _ in variants]
    if len(set(names)) != len(names) or {"tgt", "base", "this"} & set(names):
        print("--variant names must be unique and not tgt, base or this", file=sys.stderr)
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
    # (name, PYTHONPATH, root keys) of every cistern
    cisterns: list[tuple[str, str, tuple[str, ...]]] = [("this", this_src, ())]
    if args.base is not None:
        cisterns.insert(0, ("base", str(args.base), ()))
    cisterns += [(name, this_src, root) for name, root in variants]
    with contextlib.ExitStack() as stack:
        # a set of files each: a backing file is exported by one target at a time (store lock), and the
        # cisterns must be placed alike (with "this" sharing tgt's files, the same tree measured 10 % more
        # CPU per 1 MiB read in the "this" slot than in the "base" slot)
        disks = stack.enter_context(targets.prepared_disks(args.dir, args.size << 20))
        runs = [("tgt", stack.enter_context(targets.tgt_target(disks, args.log_dir)))]
        for name, src, root in cisterns:
            own_dir = args.dir / f"cistern-ab-{name}"
            stack.callback(_remove_if_empty, own_dir)
            own = stack.enter_context(targets.prepared_disks(own_dir, args.size << 20))
            env = {"PYTHONPATH": src}
            runs.append(
                (name, stack.enter_context(targets.cistern_target(own, args.log_dir, env=env, root=root)))
            )
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
                        f"round {round_index + 1} {name:8s} {workload.name:26s} {got.iops:9.0f} IOPS "
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
    described = [f"base = {args.base}"] if args.base is not None else []
    described += [f"{name} = {'; '.join(root)}" for name, root in variants]
    print(
        f"\n{args.rounds} round(s), medians; {', '.join(described)}; {time.monotonic() - started:.0f}s total"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
