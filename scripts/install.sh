#!/usr/bin/env bash
# Install cistern's runtime into the chosen Python (see _python.sh): `pip install .`, or `-e .`
# with --editable. Needs nothing from apt beyond python3 (and python3-venv on a Debian system python).
# With a C compiler and the Python headers the build also compiles the optional accelerator (mypyc,
# cistern/accel.py); without them it prints one warning and installs pure Python. CISTERN_NO_ACCEL=1 skips it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"

editable=()
if [[ "${1:-}" == "--editable" || "${1:-}" == "-e" ]]; then
    editable=(-e)
fi

ensure_installable_python
cd "$REPO_ROOT"
"$PYTHON" -m pip install "${editable[@]}" .
echo "cistern installed for $PYTHON"
