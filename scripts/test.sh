#!/usr/bin/env bash
# Sets up .venv if needed (scripts/setup_env.sh) and runs the test suite in
# TEST_WORKERS parallel pytest-xdist workers (default: the CPU count, at most 4): a test
# file per worker in collection order (slow files first), each worker on one thread
# (tests/conftest.py); TEST_WORKERS=0 runs it in this process.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k criterion`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
venv="${DIFFUSION_PLUGIN_VENV:-$root/.venv}"
cd "$root"
workers="${TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}"
exec "$venv/bin/python" -m pytest tests -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
