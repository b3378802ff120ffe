#!/usr/bin/env bash
# The paper's runs (docs/METHOD.md §5, §8; the paper's Tables 5-6) from XLM-R, then its
# evaluation rows:
#   bash examples/paper/train.sh TASK SIZE XLMR_DIR [WORKDIR]
# TASK: iwslt14 | wmt14 | gigaword10k | flan2022 (data from examples/paper/prepare_TASK.sh);
# SIZE: base | large | xl | xxl; XLMR_DIR: fairseq's xlmr.SIZE (or a Hugging Face directory).
#   stage 1  the diffusion LM (--criterion masked_diffusion --length-loss-factor 0); task
#            runs validate BLEU / ROUGE-L every EVAL updates (oracle length, 10 steps) and
#            keep the best checkpoint, FLAN keeps the last (as the official code);
#   stage 2  the separate length predictor on the frozen stage-1 model (--length-predictor
#            separate --criterion length_prediction): 30k updates of 256 prompts (FLAN: 16k);
#   evaluate the table rows: length beam 10 and oracle length, 50 steps (task runs, sacreBLEU
#            lower-cased, tokenizer 13a / WMT14 intl; Gigaword ROUGE-L); FLAN with
#            scripts/evaluate_instruct.py (oracle length, and length beam 10 / TyDiQA 3).
# GPUS (default 8) sets --update-freq (and the tokens per GPU) so that an update holds the
# paper's batch on 1, 2, 4 or 8 GPUs. Training pairs longer than 512 tokens are dropped and
# counted in the log. XXL is converted once and trained with FSDP (docs/PRETRAINED.md).
# SHOTS (default 0) picks the FLAN evaluation sets' K-shot directories under
# WORKDIR/instruct (the official data/instruct). DRY_RUN=1 prints the commands instead of
# running them. Every deliberate difference from the official code: docs/DIFFERENCES.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
task="${1:?usage: train.sh TASK SIZE XLMR_DIR [WORKDIR]}" size="${2:?SIZE}" xlmr="${3:?XLMR_DIR}"
work="$(realpath -m "${4:-$root/work/paper}")"
gpus="${GPUS:-8}" shots="${SHOTS:-0}"
case "$gpus" in 1|2|4|8) ;; *) echo "GPUS=$gpus: the paper's batches divide over 1, 2, 4 or 8 GPUs" >&2; exit 2 ;; esac
declare -A steps=(
  [iwslt14.base]=150000 [iwslt14.large]=150000 [iwslt14.xl]=100000 [iwslt14.xxl]=30000
  [wmt14.base]=300000 [wmt14.large]=300000 [wmt14.xl]=150000 [wmt14.xxl]=100000
  [gigaword10k.base]=30000 [gigaword10k.large]=10000 [gigaword10k.xl]=5000 [gigaword10k.xxl]=1000
  [flan2022.base]=70000 [flan2022.large]=30000 [flan2022.xl]=17000 [flan2022.xxl]=4000
)
declare -A flan_batch=([base]=512 [large]=512 [xl]=1024 [xxl]=2048)
max_update="${steps[$task.$size]:?unknown TASK.SIZE $task.$size}"
case "$task" in  # tokens per update (Table 5), validation interval (the README's eval_steps)
  iwslt14) langs=(-s de -t en) tokens=32768 every=5000 metric=bleu bleu_tok=13a ;;
  wmt14) langs=(-s en -t de) tokens=131072 every=10000 metric=bleu bleu_tok=intl ;;
  gigaword10k) langs=(-s src -t tgt) tokens=16384 every=$((max_update / 10)) metric=rougeL ;;
  flan2022) langs=(-s src -t tgt) metric=none ;;
esac
if [ "$task" = flan2022 ]; then  # batch in sequences, lr 1e-5, full vocabulary (Table 6)
  batch=(--batch-size 2 --update-freq "$((flan_batch[$size] / 2 / gpus))" --lr 1e-5)
  length_batch=(--batch-size 16 --update-freq "$((256 / 16 / gpus))" --lr 1e-5) length_update=16000
  vocab=(--pretrained-vocab full) untie=()
else  # batch in tokens, lr 5e-5, pruned (so untied) vocabulary (Table 5, docs/METHOD.md §1)
  update_freq=$(( tokens > 4096 * gpus ? tokens / (4096 * gpus) : 1 ))
  batch=(--max-tokens "$((tokens / gpus / update_freq))" --update-freq "$update_freq" --lr 5e-5)
  length_batch=(--batch-size 4 --update-freq "$((256 / 4 / gpus))" --lr 5e-5) length_update=30000
  vocab=(--pretrained-vocab prune) untie=(--untie-weights-roberta)
fi
data="$work/data-bin/$task" save="$work/checkpoints/$task.$size" eval_dir="$work/eval"
common=("$data" --user-dir diffusion_plugin --task prompted_translation "${langs[@]}"
  --max-positions 512 --arch "diffusion_xlmr_$size"
  --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-8 --weight-decay 0.01 --clip-norm 1.0
  --lr-scheduler fixed --dropout 0.1 --attention-dropout 0.1 --distributed-world-size "$gpus"
  --no-epoch-checkpoints --log-format simple)
if [ "$size" = xxl ]; then
  precision=(--ddp-backend fully_sharded --fp16)
else
  precision=(--bf16)
fi
if [ "$metric" = none ]; then  # instruction tuning: no evaluation, the last checkpoint
  select=(--disable-validation --save-interval-updates 1000 --keep-interval-updates 5)
  length_select=(--disable-validation --save-interval-updates 1000 --keep-interval-updates 1)
  best=checkpoint_last.pt
else  # validate every $every updates (not at epoch ends), keep the best checkpoint
  # scored as the official code: lower-cased, 13a / WMT14 intl, py-rouge's ROUGE-L
  [ "$metric" = bleu ] && scoring=(--eval-bleu --eval-bleu-tokenize "$bleu_tok") || scoring=(--eval-rouge)
  select=("${scoring[@]}" --eval-bleu-args '{"iter_decode_max_iter": 10, "oracle_length": true}'
    --eval-bleu-remove-bpe sentencepiece --best-checkpoint-metric "$metric" --maximize-best-checkpoint-metric
    --validate-interval-updates "$every" --save-interval-updates "$every" --keep-interval-updates 1
    --validate-interval 1000000 --save-interval 1000000 --skip-invalid-size-inputs-valid-test)
  length_select=(--validate-interval-updates 1000 --save-interval-updates 1000 --keep-interval-updates 1
    --validate-interval 1000000 --save-interval 1000000 --skip-invalid-size-inputs-valid-test)
  best=checkpoint_best.pt
fi
run() { if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
run_to() {  # run_to FILE COMMAND...: COMMAND's stdout into FILE
  local out="$1"; shift
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo "> $(printf '%q' "$out")"; else "$@" > "$out"; fi
}
cd "$root"
[ "${DRY_RUN:-0}" = 1 ] || mkdir -p "$eval_dir"

echo "# stage 1: the diffusion LM ($task, $size, $gpus GPUs)"
if [ "$size" = xxl ]; then  # FSDP cannot fill sharded layers from --pretrained-mlm: convert first
  [ "$task" = flan2022 ] && convert=() || convert=(--data "$data" "${langs[@]}")
  run python scripts/convert_pretrained.py "$xlmr" "$work/checkpoints/$task.xxl-init" \
    --arch diffusion_xlmr_xxl "${convert[@]}"
  init=(--finetune-from-model "$work/checkpoints/$task.xxl-init/checkpoint.pt" "${untie[@]}" --checkpoint-activations)
else
  init=(--pretrained-mlm "$xlmr" "${vocab[@]}")
fi
run fairseq-train "${common[@]}" "${init[@]}" "${precision[@]}" \
  --criterion masked_diffusion --length-loss-factor 0 "${batch[@]}" \
  --max-update "$max_update" --warmup-updates "$((max_update / 100))" "${select[@]}" --save-dir "$save"

echo "# stage 2: the separate length predictor on the frozen stage-1 model"
run fairseq-train "${common[@]}" "${untie[@]}" "${precision[@]}" \
  --length-predictor separate --criterion length_prediction --finetune-from-model "$save/$best" \
  "${length_batch[@]}" --max-update "$length_update" --warmup-updates "$((length_update / 100))" \
  "${length_select[@]}" --save-dir "$save.length"

echo "# evaluation: length beam 10 (the length predictor) and oracle length"
model="$save.length/$best"
if [ "$task" = flan2022 ]; then
  evaluate=(python scripts/evaluate_instruct.py --path "$model" --data "$data" --instruct-dir "$work/instruct")
  run "${evaluate[@]}" --sets "mmlu/$shots-shot" "bbh-nlp/$shots-shot" "mgsm/$shots-shot" \
    "tydiqa/$shots-shot" "iwslt14/$shots-shot" --out "$eval_dir/$task.$size.oracle.json"
  run "${evaluate[@]}" --sets "iwslt14/$shots-shot" --length-beam 10 --out "$eval_dir/$task.$size.beam10.json"
  run "${evaluate[@]}" --sets "tydiqa/$shots-shot" --length-beam 3 --out "$eval_dir/$task.$size.beam3.json"
else
  generate=(fairseq-generate "$data" --user-dir diffusion_plugin --task prompted_translation "${langs[@]}"
    --path "$model" --gen-subset test --iter-decode-max-iter 50 --post-process sentencepiece
    --batch-size 32 --fp16)
  for row in beam10 oracle; do
    [ "$row" = beam10 ] && length=(--iter-decode-with-beam 10) || length=(--oracle-length)
    if [ "$metric" = bleu ]; then
      score=(--scoring sacrebleu --sacrebleu-tokenizer "$bleu_tok" --sacrebleu-lowercase)
    else
      score=(--scoring rouge)  # the plugin's scorer: py-rouge's words, as the paper's
    fi
    run_to "$eval_dir/$task.$size.$row.txt" "${generate[@]}" "${length[@]}" "${score[@]}"
    run tail -n 1 "$eval_dir/$task.$size.$row.txt"
  done
fi
