#!/usr/bin/env bash
# Install cistern and start the demo target: iqn.2026-11.org.cistern:demo, a 1 GiB sparse-file LUN 0 on
# 127.0.0.1:3260, no authentication. On Debian's own python3 the install goes into ./.venv (PEP 668).
# Arguments go to `cistern demo` (e.g. --portal 127.0.0.1:3261 --dir /srv/cistern --size 4G).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
choose_python
# already installed from this checkout (e.g. editable, by scripts/test.sh): use it as it is
if ! "$PYTHON" -c "import cistern, sys; sys.exit(0 if cistern.__file__.startswith('$REPO_ROOT') else 1)" 2>/dev/null; then
    bash "$REPO_ROOT/scripts/install.sh" >&2
    PYTHON=""
    choose_python
fi
exec "$PYTHON" -m cistern demo "$@"
