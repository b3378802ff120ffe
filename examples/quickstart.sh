#!/usr/bin/env bash
# The main job on an embedded default: a seeded synthetic corpus (see
# scripts/make_synthetic_corpus.py) -> prompted binarized data -> fairseq-train
# (diffusion_xlmr_tiny, a fixed number of updates) -> fairseq-generate with a length
# beam -> sacreBLEU. It prints the updates done, the training and total time, and last
# sacreBLEU's score line with its signature. The same --seed and --threads give the
# same score on any machine with the same software and CPU instruction set. While it
# trains, a progress line (update, loss, masked-token accuracy, time left) comes every
# --log-interval updates, and at least every 30 s (scripts/train_progress.py); the
# whole fairseq log goes to WORKDIR/train.log.
#
#   bash examples/quickstart.sh                       # synthetic corpus, ~18 min on a CPU core
#   python scripts/download_multi30k.py              # Multi30k -> data/multi30k
#   bash examples/quickstart.sh --data data/multi30k --src de --tgt en \
#        --train train --valid val --test test_2016_flickr \
#        --template "Translate the German sentence to English. German: {src} English:" \
#        --vocab-size 8000 --spm-model-type unigram --max-update 100000 --minutes 30 --layers 6
# Other options: --workdir DIR (default work/quickstart), --minutes M (also stop after M
# minutes of training: the score then depends on the machine's speed), --max-tokens N,
# --lr X, --warmup-updates N, --log-interval N (default 25), --seed N, --threads N (torch
# threads, default 1: the floating-point sums, hence the score, depend on it),
# --iter-decode-max-iter K, --length-beam B, --time-sampling coupled|single, --venv DIR
# (use this environment as is). The default here is one noise level per example (single):
# per example it costs half of RDM's coupled pair, so a CPU budget sees twice the sentences.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

data="" src=src tgt=tgt train=train valid=valid test=test
template="Translate: {src} =>"
vocab_size=1000 spm_model_type=bpe
max_update=4000 minutes="" seed=1 threads=1 log_interval=25
max_tokens=1000 time_sampling=single lr=1e-3 warmup_updates=50 layers=3
iter_decode_max_iter=10 length_beam=3
workdir="$root/work/quickstart" venv=""
valued=" data src tgt train valid test template vocab_size spm_model_type max_update minutes seed threads log_interval max_tokens time_sampling lr warmup_updates layers iter_decode_max_iter length_beam workdir venv "
source "$root/examples/options.sh"
parse_options quickstart.sh 2,24 "$@"
start_run
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"

if [ -z "$data" ]; then
  echo "== synthetic corpus (seeded) -> $workdir/raw"
  python scripts/make_synthetic_corpus.py --outdir "$workdir/raw" --seed 1
  data="$workdir/raw"
fi

echo "== prompted, binarized data -> $workdir/data-bin"
python scripts/prepare_prompted.py --source-lang "$src" --target-lang "$tgt" \
  --trainpref "$data/$train" --validpref "$data/$valid" --testpref "$data/$test" \
  --template "$template" --vocab-size "$vocab_size" --spm-model-type "$spm_model_type" \
  --destdir "$workdir/data-bin"

stop_time=()
if [ -n "$minutes" ]; then
  stop_time=(--stop-time-hours "$(python -c "print($minutes / 60)")")
fi
echo "== fairseq-train diffusion_xlmr_tiny ($layers layers; $max_update updates${minutes:+ or $minutes min})"
train_started=$SECONDS
fairseq-train "$workdir/data-bin" --user-dir diffusion_plugin \
  --task prompted_translation -s "$src" -t "$tgt" \
  --arch diffusion_xlmr_tiny --encoder-layers "$layers" --bf16-autocast \
  --criterion masked_diffusion --time-sampling "$time_sampling" \
  --optimizer adam --adam-betas '(0.9,0.98)' \
  --lr "$lr" --lr-scheduler fixed --warmup-updates "$warmup_updates" \
  --dropout 0 --attention-dropout 0 --max-tokens "$max_tokens" \
  --max-update "$max_update" "${stop_time[@]}" --seed "$seed" \
  --save-dir "$workdir/checkpoints" --no-epoch-checkpoints --validate-interval 1000 \
  --save-interval 1000 --log-format simple --log-interval "$log_interval" 2>&1 \
  | python scripts/train_progress.py "$workdir/train.log" --max-update "$max_update" ${minutes:+--minutes "$minutes"} \
  || { tail -n 30 "$workdir/train.log"; exit 1; }
updates="$(grep -oP "num_updates \K\d+" "$workdir/train.log" | tail -n 1)"
accuracy="$(grep "valid on" "$workdir/train.log" | grep -oP "\| accuracy \K[\d.]+" | tail -n 1)"
echo "== trained $updates updates in $((SECONDS - train_started)) s (valid masked-token accuracy $accuracy%)"

echo "== fairseq-generate: $iter_decode_max_iter steps, length beam $length_beam"
fairseq-generate "$workdir/data-bin" --user-dir diffusion_plugin \
  --task prompted_translation -s "$src" -t "$tgt" \
  --path "$workdir/checkpoints/checkpoint_last.pt" --gen-subset test \
  --iter-decode-max-iter "$iter_decode_max_iter" --iter-decode-with-beam "$length_beam" \
  --batch-size 64 --post-process sentencepiece --seed "$seed" \
  > "$workdir/generate.out" 2> "$workdir/generate.log" || { tail -n 30 "$workdir/generate.log"; exit 1; }
grep -P "^D-\d+\t" "$workdir/generate.out" | sort -t- -k2 -n | cut -f3 > "$workdir/test.hyp"
grep "Translated" "$workdir/generate.log" | sed 's/.*INFO:fairseq_cli.generate://'
echo "== done in $((SECONDS - started)) s; hypotheses in $workdir/test.hyp"
sacrebleu "$data/$test.$tgt" -i "$workdir/test.hyp" -f text
