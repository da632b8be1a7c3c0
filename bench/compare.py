#!/usr/bin/env python3
"""Compare cistern's target with tgt on the same machine, like with like, interleaved, at equal parameters.

Usage (as root, from the repository root; see bench/README.md):

    python3 bench/compare.py                        # file (+ memory, block) rows, 1 round, every workload
    python3 bench/compare.py --stores file --filter '4k' --rounds 3
    python3 bench/compare.py --only tgt --rounds 1  # validate the harness against tgt alone

tgt ``bs rdwr`` on a file is compared with cistern's file store on a file of the same filesystem (``--dir``,
default /dev/shm), both written in full first; cistern's memory store is an extra row against the same tgt
file numbers, and both targets on one loop device an extra ``block`` row.  Each workload runs on every
(target, store) pair back to back, rotating the order each round, so drift on a shared machine hits all of
them; the table shows medians over rounds, the server CPU per I/O (user + system time of the server
process from /proc/PID/stat, divided by the I/Os of the run) and the cistern/tgt ratio of MiB/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests" / "integration")]

import peers  # noqa: E402
import targets  # noqa: E402
from workloads import Measurement, Workload, default_workloads, fill, run_workload  # noqa: E402

TARGET_NAMES = ("tgt", "cistern")


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=TARGET_NAMES, help="benchmark one target alone")
    parser.add_argument("--rounds", type=int, default=1, help="times each workload runs per target")
    parser.add_argument("--size", default="1G", help="LUN size (default 1G)")
    parser.add_argument(
        "--stores",
        default="file,memory,block",
        help="comma-separated store kinds: file (cistern vs tgt), memory (cistern only), block (loop device)",
    )
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"), help="where the backing files go")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply qemu-img request counts")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per iscsi-perf run")
    parser.add_argument("--timeout", type=float, default=120.0, help="cap on any single run, seconds")
    parser.add_argument(
        "--filter", action="append", default=[], help="run workloads whose name contains this"
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--log-dir", type=Path, default=Path("artifacts/bench"), help="target logs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a root key of cistern's config (TOML value), e.g. --set busy_poll_us=0",
    )
    return parser.parse_args(argv)


Sample = tuple[Measurement, float]  # (measurement, server CPU seconds during it)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _median(samples: list[Sample], attr: str) -> float | None:
    return statistics.median(getattr(m, attr) for m, _ in samples) if samples else None


def _cpu_per_io_us(samples: list[Sample]) -> float | None:
    values = [cpu / m.ios * 1e6 for m, cpu in samples if m.ios > 0]
    return statistics.median(values) if values else None


def _baseline(store: str) -> str:
    """The tgt store a cistern store is compared with (tgt has no RAM store: memory rows use its file)."""
    return "file" if store == "memory" else store


def render_table(
    workloads: list[Workload], results: dict[tuple[str, str, str], list[Sample]], stores: list[str]
) -> str:
    header = ["workload", "store", "tgt MiB/s", "tgt IOPS", "tgt µs/IO", "cis MiB/s", "cis IOPS", "cis µs/IO"]
    header.append("cistern/tgt")
    rows = [header]
    for store in stores:
        for workload in workloads:
            tgt = results.get(("tgt", _baseline(store), workload.name), [])
            cis = results.get(("cistern", store, workload.name), [])
            if not tgt and not cis:
                continue
            t_mib, c_mib = _median(tgt, "mib_per_s"), _median(cis, "mib_per_s")
            row = [workload.name, store if store != "memory" else "memory (tgt: file)"]
            row += [_fmt(t_mib, 1), _fmt(_median(tgt, "iops")), _fmt(_cpu_per_io_us(tgt), 1)]
            row += [_fmt(c_mib, 1), _fmt(_median(cis, "iops")), _fmt(_cpu_per_io_us(cis), 1)]
            row.append(f"{c_mib / t_mib:.2f}" if t_mib and c_mib is not None else "-")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(widths[i]) for i, cell in enumerate(row) if i > 1]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    names = [args.only] if args.only else list(TARGET_NAMES)
    stores = [s for s in args.stores.split(",") if s]
    unknown = set(stores) - set(targets.STORE_KINDS)
    if unknown:
        print(f"unknown store kind(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    workloads = [w for w in default_workloads() if not args.filter or any(f in w.name for f in args.filter)]
    if not workloads:
        print("no workload matches --filter", file=sys.stderr)
        return 2
    size = _parse_size(args.size)
    try:
        root = targets.root_settings(args.set)
    except ValueError as exc:
        print(f"--set: {exc}", file=sys.stderr)
        return 2
    args.log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str, str], list[Sample]] = {}
    failures: list[str] = []
    started = time.monotonic()

    with contextlib.ExitStack() as stack:
        disks = stack.enter_context(targets.prepared_disks(args.dir, size, block="block" in stores))
        if disks.block is None and "block" in stores:
            stores.remove("block")
        running = []
        if "tgt" in names:
            running.append(stack.enter_context(targets.tgt_target(disks, args.log_dir)))
        if "cistern" in names:
            running.append(stack.enter_context(targets.cistern_target(disks, args.log_dir, root=root)))
        pairs = []  # (Running, store) in a fixed base order, rotated each round
        for store in stores:
            for server in running:
                if store in server.urls and not (server.name == "tgt" and store == "memory"):
                    pairs.append((server, store))
        for server, store in pairs:
            print(f"{server.name} {store}: {server.urls[store]} (pid {server.pid})", file=sys.stderr)
            if server.name == "cistern" and store == "memory":
                fill(server.urls[store], size, timeout=args.timeout * 5)  # files were written on disk
        for round_index in range(args.rounds):
            for index, workload in enumerate(workloads):
                shift = (round_index + index) % len(pairs)
                for server, store in pairs[shift:] + pairs[:shift]:
                    url = server.urls[store]
                    cpu0 = targets.cpu_seconds(server.pid)
                    try:
                        got = run_workload(workload, url, args.scale, args.duration, args.timeout)
                    except peers.PeerError as exc:
                        failures.append(
                            f"round {round_index + 1} {server.name} {store} {workload.name}: {exc}"
                        )
                        print(
                            f"FAILED {server.name} {store} {workload.name}: {str(exc).splitlines()[0]}",
                            file=sys.stderr,
                        )
                        continue
                    cpu = targets.cpu_seconds(server.pid) - cpu0
                    results.setdefault((server.name, store, workload.name), []).append((got, cpu))
                    per_io = cpu / got.ios * 1e6 if got.ios else 0.0
                    print(
                        f"round {round_index + 1}/{args.rounds} {server.name:8s} {store:7s} {workload.name:28s} "
                        f"{got.mib_per_s:9.1f} MiB/s {got.iops:9.0f} IOPS {per_io:7.1f} µs CPU/IO",
                        file=sys.stderr,
                    )

    print(render_table(workloads, results, stores))
    print(
        f"\n{args.rounds} round(s), LUN {args.size} on {args.dir}, medians; µs/IO = server CPU (user+system) "
        f"per I/O; {time.monotonic() - started:.0f}s total"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "params": targets.PARAMS,
            "rounds": args.rounds,
            "results": [
                {"target": name, "store": store, "workload": wl, **_vars(m), "cpu_seconds": cpu}
                for (name, store, wl), samples in results.items()
                for m, cpu in samples
            ],
            "failures": failures,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    if failures:
        print(f"\n{len(failures)} run(s) failed:", *failures, sep="\n", file=sys.stderr)
        return 1
    return 0


def _vars(measurement: Measurement) -> dict[str, float]:
    return {
        "iops": measurement.iops,
        "mib_per_s": measurement.mib_per_s,
        "seconds": measurement.seconds,
        "ios": measurement.ios,
    }


if __name__ == "__main__":
    sys.exit(main())
