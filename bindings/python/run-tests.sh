#!/usr/bin/env bash
# Builds the Python package into a virtual environment with the README's
# pip command, checks its type stubs and runs its pytest suite. Like
# `cargo test`, the tests need root; under CI=true a test that cannot run
# fails instead of being skipped.
#
# Usage: bash bindings/python/run-tests.sh [pytest arguments]
# SOULBOX_PYTHON_VENV sets where the environment goes (default
# target/python-venv); an existing one is reused.
set -euo pipefail

cd "$(dirname "$0")/../.."
venv=${SOULBOX_PYTHON_VENV:-target/python-venv}

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv"; then
        echo "error: python3 -m venv failed; install the venv module (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "maturin>=1.9.4,<2" "pytest>=7" "mypy>=1.10"

# The README's install command, run inside the environment.
"$venv/bin/pip" install --quiet --disable-pip-version-check ./bindings/python

# The shipped stubs must match the native module, and the package's types
# must hold under --strict, also as a caller uses them.
"$venv/bin/python" -m mypy.stubtest soulbox
"$venv/bin/python" -m mypy --strict --no-incremental \
    bindings/python/python/soulbox bindings/python/tests/typed_usage.py

python=$(cd "$venv/bin" && pwd)/python
cd bindings/python
exec "$python" -m pytest -p no:cacheprovider tests "$@"
