#!/usr/bin/env bash
# The paper's fine-tuning runs (method spec §6.1-6.3, Paper-v3 Tables 5-6) from XLM-R:
#   bash examples/paper/train.sh TASK SIZE XLMR_DIR [WORKDIR]
# TASK: iwslt14 | wmt14 | gigaword10k | flan2022 (data from examples/paper/prepare_TASK.sh);
# SIZE: base | large | xl | xxl; XLMR_DIR: fairseq's xlmr.SIZE (or a Hugging Face directory).
# GPUS (default 8) sets --update-freq so that a step holds the paper's batch. XXL is
# converted once and trained with FSDP (docs/PRETRAINED.md). DRY_RUN=1 prints the
# commands instead of running them. Then evaluate:
#   task runs: fairseq-generate --iter-decode-with-beam 10 (and --oracle-length), sacreBLEU
#              (--scoring sacrebleu --sacrebleu-lowercase; WMT14 with --sacrebleu-tokenizer intl, spec §5.4) or
#              scripts/score_rouge.py for Gigaword;
#   flan2022:  scripts/evaluate_instruct.py (docs/INSTRUCT.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
task="${1:?usage: train.sh TASK SIZE XLMR_DIR [WORKDIR]}" size="${2:?SIZE}" xlmr="${3:?XLMR_DIR}"
work="$(realpath -m "${4:-$root/work/paper}")"
gpus="${GPUS:-8}"
declare -A steps=(
  [iwslt14.base]=150000 [iwslt14.large]=150000 [iwslt14.xl]=100000 [iwslt14.xxl]=30000
  [wmt14.base]=300000 [wmt14.large]=300000 [wmt14.xl]=150000 [wmt14.xxl]=100000
  [gigaword10k.base]=30000 [gigaword10k.large]=10000 [gigaword10k.xl]=5000 [gigaword10k.xxl]=1000
  [flan2022.base]=70000 [flan2022.large]=30000 [flan2022.xl]=17000 [flan2022.xxl]=4000
)
declare -A flan_batch=([base]=512 [large]=512 [xl]=1024 [xxl]=2048)
max_update="${steps[$task.$size]:?unknown TASK.SIZE $task.$size}"
case "$task" in
  iwslt14) langs=(-s de -t en) tokens=32768 ;;
  wmt14) langs=(-s en -t de) tokens=131072 ;;
  gigaword10k) langs=(-s src -t tgt) tokens=16384 ;;
  flan2022) langs=(-s src -t tgt) ;;
esac
if [ "$task" = flan2022 ]; then  # batch in sequences, lr 1e-5, full vocabulary (Table 6)
  per_gpu=2
  batch=(--batch-size "$per_gpu" --update-freq "$((flan_batch[$size] / per_gpu / gpus))" --lr 1e-5)
  vocab=(--pretrained-vocab full)
else  # batch in tokens, lr 5e-5, pruned vocabulary (Table 5)
  per_gpu=4096
  batch=(--max-tokens "$per_gpu" --update-freq "$(( (tokens + per_gpu * gpus - 1) / (per_gpu * gpus) ))" --lr 5e-5)
  vocab=(--pretrained-vocab prune)
fi
data="$work/data-bin/$task"
common=("$data" --user-dir diffusion_plugin --task prompted_translation "${langs[@]}"
  --max-positions 512 --truncate-source --criterion masked_diffusion
  --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-8 --weight-decay 0.01 --clip-norm 1.0
  --lr-scheduler fixed --warmup-updates "$((max_update / 100))" --dropout 0.1 --attention-dropout 0.1
  "${batch[@]}" --max-update "$max_update" --save-interval-updates 1000 --keep-interval-updates 5
  --no-epoch-checkpoints --disable-validation --save-dir "$work/checkpoints/$task.$size" --log-format simple)
run() { if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
cd "$root"
if [ "$size" = xxl ]; then
  untie=() convert=(--data "$data" "${langs[@]}")  # the pruned vocabulary is untied (spec §1.1)
  [ "$task" = flan2022 ] && convert=() || untie=(--untie-weights-roberta)
  run python scripts/convert_pretrained.py "$xlmr" "$work/checkpoints/$task.xxl-init" \
    --arch diffusion_xlmr_xxl "${convert[@]}"
  run fairseq-train "${common[@]}" --arch diffusion_xlmr_xxl "${untie[@]}" \
    --finetune-from-model "$work/checkpoints/$task.xxl-init/checkpoint.pt" \
    --ddp-backend fully_sharded --fp16 --checkpoint-activations
else
  run fairseq-train "${common[@]}" --arch "diffusion_xlmr_$size" --pretrained-mlm "$xlmr" "${vocab[@]}" --bf16
fi
