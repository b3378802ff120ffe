#!/usr/bin/env bash
# The plain pip install of docs/INSTALL.md, in a fresh virtual environment, then a smoke test
# there: the imports (transformers included) and two tests of tests/test_pretrained.py
# (a tiny Hugging Face XLM-R turned into the plugin's model with its logits; converted,
# then one fairseq-train update from it).
#
#   bash scripts/check_pip_install.sh [VENV]   # default: a new temporary directory, removed after
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -gt 0 ]; then
  venv="$1"
else
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  venv="$scratch/venv"
fi
[ ! -e "$venv" ] || { echo "check_pip_install.sh: $venv exists; name a new directory" >&2; exit 2; }
"${PYTHON:-python3}" -m venv "$venv"
python="$venv/bin/python"
pip=("$python" -m pip --disable-pip-version-check)
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore

echo "== pip install torch==${TORCH_VERSION:-2.13.0}, then -e \".[hf,test]\" into $venv"
"${pip[@]}" install --quiet "torch==${TORCH_VERSION:-2.13.0}"
(cd "$root" && "${pip[@]}" install --quiet -e ".[hf,test]")
if ! "$python" -c "import torchaudio" 2>/dev/null; then
  echo "== torchaudio cannot load beside this torch: pip uninstall torchaudio (docs/INSTALL.md)"
  "${pip[@]}" uninstall --quiet --yes torchaudio
fi
"$python" -c "import fairseq, diffusion_plugin, transformers; from transformers import XLMRobertaForMaskedLM"

cd "$root"
exec "$python" -m pytest -q -p no:cacheprovider \
  tests/test_pretrained.py::test_huggingface_xlmr_full_vocabulary_gives_its_logits \
  tests/test_pretrained.py::test_converted_checkpoint_starts_finetuning_and_needs_its_untied_embeddings
