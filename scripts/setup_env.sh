#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv at the repository root with
# CPU torch, fairseq without torchaudio, and diffusion_plugin installed editable.
# Re-running is cheap: the environment is rebuilt only when setup.py or a
# requirements file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DIFFUSION_PLUGIN_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.diffusion_plugin_stamp"
want="$(cat "$root/setup.py" "$root/requirements.txt" "$root/requirements-test.txt" | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setting up $venv (first run: about 5 minutes, fairseq compiles its extensions)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
fairseq_pin="$("$venv/bin/python" -c 'import sys; print("fairseq-fixed==0.12.3.1" if sys.version_info >= (3, 11) else "fairseq==0.12.2")')"

# CPU torch first (an unpinned torch would pull a multi-GB CUDA build here).
"${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}" numpy cython setuptools wheel
# fairseq without its dependency list, which names torchaudio; its build uses
# the torch just installed (no build isolation).
"${pip[@]}" --no-deps --no-build-isolation "$fairseq_pin"
"${pip[@]}" -r "$root/requirements.txt" -r "$root/requirements-test.txt"
"${pip[@]}" --no-deps --no-build-isolation -e "$root"
if "$venv/bin/python" -c "import torchaudio" 2>/dev/null; then
  "$venv/bin/python" -m pip uninstall --yes --quiet torchaudio
fi
"$venv/bin/python" -c "import fairseq, diffusion_plugin" >/dev/null
echo "$want" > "$stamp"
