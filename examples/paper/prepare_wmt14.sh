#!/usr/bin/env bash
# WMT14 En->De for the paper recipe (docs/METHOD.md §8): fairseq's standard
# preparation (examples/translation/prepare-wmt14en2de.sh: download, Moses
# tokenization, newstest2013 valid / newstest2014 test), then its text before BPE is
# prompted and encoded with XLM-R's sentencepiece model (pruned vocabulary).
#   bash examples/paper/prepare_wmt14.sh XLMR_DIR [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
xlmr="${1:?usage: prepare_wmt14.sh XLMR_DIR [WORKDIR]}"
work="$(realpath -m "${2:-$root/work/paper}")"
mkdir -p "$work/wmt14" && cd "$work/wmt14"
[ -f prepare-wmt14en2de.sh ] || wget -q https://raw.githubusercontent.com/facebookresearch/fairseq/v0.12.2/examples/translation/prepare-wmt14en2de.sh
bash prepare-wmt14en2de.sh
cd "$root"
python scripts/prepare_prompted.py --source-lang en --target-lang de \
  --trainpref "$work/wmt14/wmt14_en_de/tmp/train" --validpref "$work/wmt14/wmt14_en_de/tmp/valid" \
  --testpref "$work/wmt14/wmt14_en_de/tmp/test" \
  --template "Translate the English sentence to German. English: {src} German:" \
  --spm-model "$xlmr/sentencepiece.bpe.model" --destdir "$work/data-bin/wmt14" --workers 8
