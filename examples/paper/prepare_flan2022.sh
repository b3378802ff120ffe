#!/usr/bin/env bash
# FLAN 2022 for the paper recipe (docs/METHOD.md §7, §8): the SirNeural/flan_v2 files
# (scripts/download_flan_2022.sh), a mixture drawn by the paper's ratios, and XLM-R's
# sentencepiece model with its full vocabulary (dict.txt), left-truncated to 512 tokens.
#   bash examples/paper/prepare_flan2022.sh XLMR_DIR [WORKDIR] [EXAMPLES]
# EXAMPLES (default 36,000,000 = 70k updates x 512 sequences, base) sets the mixture size.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
xlmr="${1:?usage: prepare_flan2022.sh XLMR_DIR [WORKDIR] [EXAMPLES]}"
work="$(realpath -m "${2:-$root/work/paper}")"
examples="${3:-36000000}"
cd "$root"
bash scripts/download_flan_2022.sh "$work/flan_2022"
python scripts/prepare_instruct.py mix --dir "$work/flan_2022" --examples "$examples" \
  --out "$work/flan_2022/mixture.jsonl.gz"
python scripts/prepare_instruct.py binarize --train "$work/flan_2022/mixture.jsonl.gz" \
  --spm-model "$xlmr/sentencepiece.bpe.model" --dict "$xlmr/dict.txt" --max-positions 512 \
  --destdir "$work/data-bin/flan2022" --workers 8
