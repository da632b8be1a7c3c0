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
timeout --kill-after=30 "${CISTERN_TEST_BUDGET:-2700}" \
    "$PYTHON" -m pytest tests -q -p no:cacheprovider --durations=30 --junitxml=artifacts/junit.xml "$@"
