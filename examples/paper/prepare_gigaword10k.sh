#!/usr/bin/env bash
# Gigaword-10K for the paper recipe (the paper's §A.2: 10K training pairs of Gigaword): Rush et al.'s Gigaword headline data (the archive Hugging Face's
# `gigaword` dataset reads; set GIGAWORD_URL to use another copy), its first 10,000
# training pairs, its validation pairs' first 1,000 and its 1,951-pair test set, prompted
# and encoded with XLM-R's sentencepiece model (pruned vocabulary). The paper's exact
# 10K subset (CLUEbenchmark/LGEB) is not published as a file list.
#   bash examples/paper/prepare_gigaword10k.sh XLMR_DIR [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
xlmr="${1:?usage: prepare_gigaword10k.sh XLMR_DIR [WORKDIR]}"
work="$(realpath -m "${2:-$root/work/paper}")"
url="${GIGAWORD_URL:-https://drive.google.com/uc?export=download&id=1USoQ8lJgN8kAWnUnRrupMGrPMLlDVqlV}"
mkdir -p "$work/gigaword" && cd "$work/gigaword"
[ -f summary.tar.gz ] || wget -q -O summary.tar.gz "$url"
tar -xzf summary.tar.gz
org=org_data
head -n 10000 "$org/train.src.txt" > train.src && head -n 10000 "$org/train.tgt.txt" > train.tgt
head -n 1000 "$org/dev.src.txt" > valid.src && head -n 1000 "$org/dev.tgt.txt" > valid.tgt
cp "$org/test.src.txt" test.src && cp "$org/test.tgt.txt" test.tgt
cd "$root"
python scripts/prepare_prompted.py --source-lang src --target-lang tgt \
  --trainpref "$work/gigaword/train" --validpref "$work/gigaword/valid" --testpref "$work/gigaword/test" \
  --template "Summarize the article in one sentence. Article: {src} Summary:" \
  --spm-model "$xlmr/sentencepiece.bpe.model" --destdir "$work/data-bin/gigaword10k" --workers 8
