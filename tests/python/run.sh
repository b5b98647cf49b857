#!/usr/bin/env bash
# Runs the Python (grpcio) client tests against a real prorata server.
#
#   bash tests/python/run.sh            # from the repository root
#
# Builds nothing: expects target/debug/prorata (or $PRORATA_BIN) to exist.
# The venv lives at ${PRORATA_VENV:-/tmp/prorata-venv} and is created when missing.
# Extra arguments are passed to pytest. Exits with pytest's status.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

venv="${PRORATA_VENV:-/tmp/prorata-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r tests/python/requirements.txt

bin="${PRORATA_BIN:-$repo_root/target/debug/prorata}"
if [ ! -x "$bin" ]; then
  echo "run.sh: no server binary at $bin (cargo build --bin prorata, or set PRORATA_BIN)" >&2
  exit 2
fi

# No .pytest_cache in the repository root.
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python "$@" || status=$?
exit "$status"
