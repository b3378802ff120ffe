#!/usr/bin/env bash
# Downloads the FLAN 2022 collection as the paper used it (SirNeural/flan_v2 on the
# Hugging Face hub, docs/METHOD.md §7), each file once, into DIR (default data/flan_2022),
# kept gzipped (scripts/prepare_instruct.py reads .jsonl.gz). Files already there are kept.
#   bash scripts/download_flan_2022.sh [DIR]
set -euo pipefail
dir="${1:-data/flan_2022}"
base="https://huggingface.co/datasets/SirNeural/flan_v2/resolve/main"
mkdir -p "$dir"
for name in cot_fs_opt cot_zs_opt dialog_fs_opt dialog_zs_opt flan_fs_noopt \
            flan_fs_opt_train_part1 flan_fs_opt_train_part2 flan_fs_opt_train_part3 \
            flan_zs_noopt flan_zs_opt niv2_fs_opt niv2_zs_opt t0_fs_noopt t0_zs_noopt t0_zs_opt; do
  file="$name.jsonl.gz"
  [[ "$name" == *_part? ]] || file="${name}_train.jsonl.gz"
  if [ ! -s "$dir/$file" ]; then
    wget -q -O "$dir/$file.partial" "$base/$file"
    mv "$dir/$file.partial" "$dir/$file"
  fi
done
echo "FLAN 2022 files in $dir"
