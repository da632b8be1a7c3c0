#!/usr/bin/env python3
"""Compare cistern's target with tgt on the same machine, interleaved, at equal negotiated parameters.

Usage (as root, from the repository root; see bench/README.md):

    python3 bench/compare.py                       # both targets, 3 rounds, every workload
    python3 bench/compare.py --only tgt --rounds 1 # validate the harness against tgt alone
    python3 bench/compare.py --filter 'read 4k' --json artifacts/bench.json

Each round runs every workload on each target back to back, alternating which target goes first, so
drift on a shared machine hits both; the table shows the median over rounds and cistern/tgt ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests" / "integration")]

import peers  # noqa: E402
import targets  # noqa: E402
from workloads import Measurement, Workload, default_workloads, run_workload  # noqa: E402

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
    parser.add_argument("--rounds", type=int, default=3, help="times each workload runs per target")
    parser.add_argument("--size", default="1G", help="LUN size on both targets (default 1G)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply qemu-img request counts")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per iscsi-perf run")
    parser.add_argument("--timeout", type=float, default=120.0, help="cap on any single run, seconds")
    parser.add_argument(
        "--filter", action="append", default=[], help="run workloads whose name contains this"
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--log-dir", type=Path, default=Path("artifacts/bench"), help="target logs")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _start(name: str, size: int, log_dir: Path) -> Iterator[str]:
    if name == "tgt":
        with targets.tgt_target(size, log_dir) as url:
            yield url
    else:
        with targets.cistern_target(size, log_dir) as url:
            yield url


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _median(samples: list[Measurement], attr: str) -> float | None:
    return statistics.median(getattr(m, attr) for m in samples) if samples else None


def render_table(
    workloads: list[Workload], results: dict[str, dict[str, list[Measurement]]], names: list[str]
) -> str:
    header = ["workload"]
    for name in names:
        header += [f"{name} MiB/s", f"{name} IOPS"]
    if len(names) == 2:
        header.append(f"{names[1]}/{names[0]}")
    rows = [header]
    for workload in workloads:
        row = [workload.name]
        mibs: list[float | None] = []
        for name in names:
            samples = results[name].get(workload.name, [])
            mib = _median(samples, "mib_per_s")
            mibs.append(mib)
            row += [_fmt(mib, 1), _fmt(_median(samples, "iops"))]
        if len(names) == 2:
            base, other = mibs
            row.append(f"{other / base:.2f}" if base and other is not None else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(row) if i]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    names = [args.only] if args.only else list(TARGET_NAMES)
    workloads = [w for w in default_workloads() if not args.filter or any(f in w.name for f in args.filter)]
    if not workloads:
        print("no workload matches --filter", file=sys.stderr)
        return 2
    size = _parse_size(args.size)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[Measurement]]] = {name: {} for name in names}
    failures: list[str] = []
    started = time.monotonic()

    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(_start(name, size, args.log_dir)) for name in names}
        for name, url in urls.items():
            print(f"{name}: {url}", file=sys.stderr)
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for workload in workloads:
                for name in order:
                    try:
                        got = run_workload(workload, urls[name], args.scale, args.duration, args.timeout)
                    except peers.PeerError as exc:
                        failures.append(f"round {round_index + 1} {name} {workload.name}: {exc}")
                        print(f"FAILED {name} {workload.name}: {str(exc).splitlines()[0]}", file=sys.stderr)
                        continue
                    results[name].setdefault(workload.name, []).append(got)
                    print(
                        f"round {round_index + 1}/{args.rounds} {name:8s} {workload.name:28s} "
                        f"{got.mib_per_s:9.1f} MiB/s {got.iops:9.0f} IOPS",
                        file=sys.stderr,
                    )

    print(render_table(workloads, results, names))
    print(f"\n{args.rounds} round(s), LUN {args.size}, medians; {time.monotonic() - started:.0f}s total")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "params": targets.PARAMS,
            "rounds": args.rounds,
            "results": {
                name: {wl: [vars_of(m) for m in samples] for wl, samples in per.items()}
                for name, per in results.items()
            },
            "failures": failures,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    if failures:
        print(f"\n{len(failures)} run(s) failed:", *failures, sep="\n", file=sys.stderr)
        return 1
    return 0


def vars_of(measurement: Measurement) -> dict[str, float]:
    return {"iops": measurement.iops, "mib_per_s": measurement.mib_per_s, "seconds": measurement.seconds}


if __name__ == "__main__":
    sys.exit(main())
