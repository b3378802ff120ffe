#!/usr/bin/env bash
# IWSLT14 De->En for the paper recipe (docs/METHOD.md §8): fairseq's standard
# preparation (examples/translation/prepare-iwslt14.sh: download, Moses tokenization,
# lower-casing, train/valid/test split), then its text before BPE is prompted and
# encoded with XLM-R's sentencepiece model, keeping the pieces of the training data
# (the paper's pruned vocabulary).
#   bash examples/paper/prepare_iwslt14.sh XLMR_DIR [WORKDIR]   # XLMR_DIR holds sentencepiece.bpe.model
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
xlmr="${1:?usage: prepare_iwslt14.sh XLMR_DIR [WORKDIR]}"
work="$(realpath -m "${2:-$root/work/paper}")"
mkdir -p "$work/iwslt14" && cd "$work/iwslt14"
[ -f prepare-iwslt14.sh ] || wget -q https://raw.githubusercontent.com/facebookresearch/fairseq/v0.12.2/examples/translation/prepare-iwslt14.sh
bash prepare-iwslt14.sh  # clones mosesdecoder and subword-nmt, downloads the TED data
cd "$root"
python scripts/prepare_prompted.py --source-lang de --target-lang en \
  --trainpref "$work/iwslt14/iwslt14.tokenized.de-en/tmp/train" \
  --validpref "$work/iwslt14/iwslt14.tokenized.de-en/tmp/valid" \
  --testpref "$work/iwslt14/iwslt14.tokenized.de-en/tmp/test" \
  --template "Translate the German sentence to English. German: {src} English:" \
  --spm-model "$xlmr/sentencepiece.bpe.model" --destdir "$work/data-bin/iwslt14" --workers 8
