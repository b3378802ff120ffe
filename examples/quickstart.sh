#!/usr/bin/env bash
# The main job on an embedded default: a seeded synthetic corpus (see
# scripts/make_synthetic_corpus.py) -> prompted binarized data -> fairseq-train
# (diffusion_xlmr_tiny) -> fairseq-generate with a length beam -> sacreBLEU.
# The last line printed is sacreBLEU's score line with its signature.
#
#   bash examples/quickstart.sh                       # synthetic corpus, ~7 min on 2 CPU cores
#   bash examples/quickstart.sh --data ../shared/data/multi30k --src de --tgt en \
#        --train train --valid val --test test_2016_flickr \
#        --template "Translate the German sentence to English. German: {src} English:" \
#        --vocab-size 8000 --spm-model-type unigram --minutes 30 --layers 6
# Other options: --workdir DIR (default work/quickstart), --max-update N, --max-tokens N,
# --lr X, --warmup-updates N, --iter-decode-max-iter K, --length-beam B,
# --time-sampling coupled|single. The default here is one noise level per
# example (single): per example it costs half of RDM's coupled pair, so a fixed
# CPU-time budget sees twice the sentences.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

data="" src=src tgt=tgt train=train valid=valid test=test
template="Translate: {src} =>"
vocab_size=1000
spm_type=bpe
max_update=100000
minutes=6
max_tokens=1000
time_sampling=single
lr=1e-3
warmup=50
layers=3
steps=10
length_beam=3
workdir="$root/work/quickstart"
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --src) src="$2"; shift 2 ;;
    --tgt) tgt="$2"; shift 2 ;;
    --train) train="$2"; shift 2 ;;
    --valid) valid="$2"; shift 2 ;;
    --test) test="$2"; shift 2 ;;
    --template) template="$2"; shift 2 ;;
    --vocab-size) vocab_size="$2"; shift 2 ;;
    --spm-model-type) spm_type="$2"; shift 2 ;;
    --max-update) max_update="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --layers) layers="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --time-sampling) time_sampling="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --warmup-updates) warmup="$2"; shift 2 ;;
    --iter-decode-max-iter) steps="$2"; shift 2 ;;
    --length-beam) length_beam="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "quickstart.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

bash "$root/scripts/setup_env.sh"
venv="${DIFFUSION_PLUGIN_VENV:-$root/.venv}"
export PATH="$venv/bin:$PATH" PYTHONWARNINGS=ignore
cd "$root"
rm -rf "$workdir"
mkdir -p "$workdir"
started=$SECONDS

if [ -z "$data" ]; then
  echo "== synthetic corpus (seeded) -> $workdir/raw"
  python scripts/make_synthetic_corpus.py --outdir "$workdir/raw" --seed 1
  data="$workdir/raw"
fi

echo "== prompted, binarized data -> $workdir/data-bin"
python scripts/prepare_prompted.py --source-lang "$src" --target-lang "$tgt" \
  --trainpref "$data/$train" --validpref "$data/$valid" --testpref "$data/$test" \
  --template "$template" --vocab-size "$vocab_size" --spm-model-type "$spm_type" \
  --destdir "$workdir/data-bin"

echo "== fairseq-train diffusion_xlmr_tiny ($layers layers; $minutes min or $max_update updates)"
fairseq-train "$workdir/data-bin" --user-dir diffusion_plugin \
  --task prompted_translation -s "$src" -t "$tgt" \
  --arch diffusion_xlmr_tiny --encoder-layers "$layers" --bf16-autocast \
  --criterion masked_diffusion --time-sampling "$time_sampling" \
  --optimizer adam --adam-betas '(0.9,0.98)' \
  --lr "$lr" --lr-scheduler fixed --warmup-updates "$warmup" \
  --dropout 0 --attention-dropout 0 --max-tokens "$max_tokens" \
  --max-update "$max_update" --stop-time-hours "$(python -c "print($minutes / 60)")" --seed 1 \
  --save-dir "$workdir/checkpoints" --no-epoch-checkpoints --validate-interval 1000 \
  --save-interval 1000 --log-format simple --log-interval 100 \
  > "$workdir/train.log" 2>&1 || { tail -n 30 "$workdir/train.log"; exit 1; }
grep -E "valid on|done training" "$workdir/train.log" | tail -n 2

echo "== fairseq-generate: $steps steps, length beam $length_beam"
fairseq-generate "$workdir/data-bin" --user-dir diffusion_plugin \
  --task prompted_translation -s "$src" -t "$tgt" \
  --path "$workdir/checkpoints/checkpoint_last.pt" --gen-subset test \
  --iter-decode-max-iter "$steps" --iter-decode-with-beam "$length_beam" \
  --batch-size 64 --post-process sentencepiece \
  > "$workdir/generate.out" 2> "$workdir/generate.log" || { tail -n 30 "$workdir/generate.log"; exit 1; }
grep -P "^D-\d+\t" "$workdir/generate.out" | sort -t- -k2 -n | cut -f3 > "$workdir/test.hyp"
grep "Translated" "$workdir/generate.log" | sed 's/.*INFO:fairseq_cli.generate://'
echo "== done in $((SECONDS - started)) s; hypotheses in $workdir/test.hyp"
sacrebleu "$data/$test.$tgt" -i "$workdir/test.hyp" -f text
