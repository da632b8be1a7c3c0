#!/usr/bin/env bash
# Install the test dependencies (idempotent) and run the whole suite once.
# Results: artifacts/junit.xml plus per-test artifacts (peer logs, iscsi-test-cu lists) in artifacts/.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not peers"`.
# CISTERN_TEST_BUDGET (seconds, default 2700) caps the whole pytest run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"

bash "$REPO_ROOT/scripts/install-test-deps.sh"
choose_python

cd "$REPO_ROOT"
mkdir -p artifacts
# The optional compiled accelerator (cistern/accel.py): the whole suite runs on the path installed (compiled
# when a C compiler was there, and then it must be active), then the unit tests, libiscsi's tools and QEMU's
# 256 MiB round trip (the read/write hot path) once more on the pure-Python path (CISTERN_PURE_PYTHON=1,
# about 3 more minutes; CISTERN_PURE_TESTS replaces that list, e.g. to add test_target_conformance.py).
"$PYTHON" -m cistern --version
if [[ -z "${CISTERN_NO_ACCEL:-}" ]] && { command -v cc || command -v gcc; } >/dev/null 2>&1; then
    export CISTERN_EXPECT_COMPILED=1
fi
status=0
timeout --kill-after=30 "${CISTERN_TEST_BUDGET:-2700}" \
    "$PYTHON" -m pytest tests -q -p no:cacheprovider --durations=30 --junitxml=artifacts/junit.xml "$@" || status=$?
if [[ "$("$PYTHON" -m cistern --version)" == *"hot path: compiled"* ]]; then
    read -r -a pure_tests <<<"${CISTERN_PURE_TESTS:-tests/unit tests/integration/test_target_libiscsi.py tests/integration/test_target_qemu.py}"
    echo "test.sh: the pure-Python path (CISTERN_PURE_PYTHON=1): ${pure_tests[*]}"
    CISTERN_PURE_PYTHON=1 timeout --kill-after=30 "${CISTERN_PURE_TEST_BUDGET:-900}" \
        "$PYTHON" -m pytest "${pure_tests[@]}" -q -p no:cacheprovider \
        --junitxml=artifacts/junit-pure.xml "$@" || status=$?
else
    echo "test.sh: the accelerator is not built; the run above was the pure-Python path"
fi
exit "$status"
