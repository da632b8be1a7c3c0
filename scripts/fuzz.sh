#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser target in fuzz/harness.py (atheris), RUNS inputs each (default
# 10^6), corpora kept in artifacts/fuzz/corpus-TARGET, crashes written to artifacts/fuzz/; the key=value
# targets get the dictionary fuzz/iscsi.dict (RFC 7143 key names and values).  Prints one
# summary line per target: executions, coverage (edges), features, crashes.
#   bash scripts/fuzz.sh [RUNS] [TARGET...]
# FUZZ_OPTS adds libFuzzer options to every target (e.g. FUZZ_OPTS=-max_total_time=3600 bounds each run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-1000000}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(framer text login negotiation chap cdb tape)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p artifacts/fuzz
status=0
for target in "${TARGETS[@]}"; do
    corpus="artifacts/fuzz/corpus-$target"
    mkdir -p "$corpus"
    log="artifacts/fuzz/$target.log"
    case "$target" in login | cdb | tape) python fuzz/harness.py --seeds "$target" "$corpus" 2>/dev/null ;; esac
    dict=()
    case "$target" in text | login | negotiation | chap) dict=("-dict=fuzz/iscsi.dict") ;; esac
    if python fuzz/harness.py "$target" "-runs=$RUNS" "-artifact_prefix=artifacts/fuzz/$target-" "${dict[@]}" ${FUZZ_OPTS:-} "$corpus" >"$log" 2>&1; then
        result="ok"
    else
        result="CRASH (see $log)"
        status=1
    fi
    done_line=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -1 || true)
    echo "$target: ${done_line:-no DONE line} -> $result"
done
exit $status
