# Shared set-up for .ci/demo and .ci/test (sourced, not run): a virtual
# environment in .venv with nbpool installed. Needs only Python 3.10+.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

find_python() {
  for candidate in python3 python3.13 python3.12 python3.11 python3.10 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "nbpool needs Python 3.10 or newer on PATH (python3); none found." >&2
  return 1
}

PYTHON=$(find_python)
if [ ! -x .venv/bin/python ]; then
  echo "--> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv || {
    echo "could not create a virtual environment: install your Python's venv module (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
VENV_PY="$PWD/.venv/bin/python"
"$VENV_PY" -m pip install --quiet --upgrade pip
