# Sourced by the other scripts: choose the Python interpreter and the pip install flags.
#
# $PYTHON wins when set. Otherwise a repository .venv is used when present, else `python3`.
# A Debian system python3 is "externally managed" (PEP 668): pip refuses to install into it,
# so for that interpreter we create .venv (python3-venv) and use it instead.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

python_is_externally_managed() {
    "$1" - <<'PY'
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
sys.exit(0 if os.path.exists(marker) and not in_venv else 1)
PY
}

choose_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        return
    fi
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        PYTHON="$REPO_ROOT/.venv/bin/python"
    else
        PYTHON="$(command -v python3)"
    fi
}

# Make sure $PYTHON can pip-install: switch an externally-managed system python to .venv.
ensure_installable_python() {
    choose_python
    if python_is_externally_managed "$PYTHON"; then
        "$PYTHON" -m venv "$REPO_ROOT/.venv"
        PYTHON="$REPO_ROOT/.venv/bin/python"
    fi
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        "$PYTHON" -m ensurepip --upgrade
    fi
}
