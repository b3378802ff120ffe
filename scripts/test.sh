#!/usr/bin/env bash
# Sets up .venv if needed (scripts/setup_env.sh) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k criterion`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
venv="${DIFFUSION_PLUGIN_VENV:-$root/.venv}"
cd "$root"
exec "$venv/bin/python" -m pytest tests "$@"
