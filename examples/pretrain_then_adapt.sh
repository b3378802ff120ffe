#!/usr/bin/env bash
# Pretraining in miniature: does starting from a masked LM make a better diffusion LM?
#   1. prompted, binarized Multi30k de->en with a new sentencepiece model (scripts/prepare_prompted.py);
#   2. the German and English train sides, encoded alone, as monolingual text (fairseq-preprocess);
#   3. MLM pretraining of a small XLM-R-shaped model with fairseq's own masked_lm task (--arch roberta);
#   4. diffusive adaptation on de->en from that masked LM (--pretrained-mlm), and the same
#      architecture from scratch, for the same updates of the same --max-tokens;
#   5. fairseq-generate on test2016 with both, and one table of sacreBLEU scores.
# The text is read from --data (default data/multi30k, which scripts/download_multi30k.py
# writes) and never copied there;
# everything written goes to --workdir.
#
#   bash examples/pretrain_then_adapt.sh           # the experiment (CPU hours at the defaults)
#   bash examples/pretrain_then_adapt.sh --smoke   # tiny model, 1000 train pairs, 50 test pairs:
#                                                  # checks the pipeline in about a minute
# Options: --data DIR, --workdir DIR (default work/pretrain_then_adapt), --layers N, --dim N,
# --heads N, --mlm-updates N, --adapt-updates N, --max-tokens N (MLM), --adapt-max-tokens N,
# --lr X, --warmup N, --vocab-size N, --iter-decode-max-iter K, --length-beam B, --seed N,
# --adapt-args "..." (extra fairseq-train options of both adaptation runs; default
# "--bf16-autocast --time-sampling single", the quickstart's CPU settings), --venv DIR (use this
# environment as is).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

data="$root/data/multi30k" train=train valid=val test=test_2016_flickr
workdir="$root/work/pretrain_then_adapt"
template="Translate the German sentence to English. German: {src} English:"
smoke=0 vocab_size=8000 layers=6 dim=256 heads=4 positions=256
mlm_updates=20000 adapt_updates=10000 max_tokens=4096 adapt_max_tokens=1536 lr=1e-3 warmup=1000
adapt_args="--bf16-autocast --time-sampling single" venv=""
iter_decode_max_iter=10 length_beam=3 seed=1
for argument in "$@"; do
  if [ "$argument" = --smoke ]; then  # its sizes, unless options set them
    smoke=1 vocab_size=500 layers=2 dim=64 heads=2
    mlm_updates=20 adapt_updates=20 max_tokens=2000 adapt_max_tokens=1000 warmup=10 iter_decode_max_iter=3 length_beam=1
  fi
done
valued=" data workdir layers dim heads mlm_updates adapt_updates max_tokens adapt_max_tokens lr warmup adapt_args vocab_size iter_decode_max_iter length_beam seed venv "
source "$root/examples/options.sh"
parse_options pretrain_then_adapt.sh 2,21 "$@"
if [ ! -f "$data/$train.de" ]; then
  echo "pretrain_then_adapt.sh: $data/$train.de not found; python scripts/download_multi30k.py" \
    "writes Multi30k to data/multi30k, or give --data DIR" >&2
  exit 2
fi
start_run mono

text="$data"
if [ "$smoke" = 1 ]; then  # slices of the corpus, outside the repository, removed at exit
  text="$(mktemp -d)"
  trap 'rm -rf "$text"' EXIT
  for lang in de en; do
    head -n 1000 "$data/$train.$lang" > "$text/$train.$lang"
    head -n 50 "$data/$valid.$lang" > "$text/$valid.$lang"
    head -n 50 "$data/$test.$lang" > "$text/$test.$lang"
  done
fi

echo "== prompted de->en data and sentencepiece model -> $workdir/data-bin/de-en"
python scripts/prepare_prompted.py --source-lang de --target-lang en \
  --trainpref "$text/$train" --validpref "$text/$valid" --testpref "$text/$test" \
  --template "$template" --vocab-size "$vocab_size" --destdir "$workdir/data-bin/de-en" \
  > "$workdir/prepare.log" 2>&1 || { tail -n 30 "$workdir/prepare.log"; exit 1; }

echo "== monolingual German + English train text -> $workdir/data-bin/mono (same dictionary)"
encode() {  # encode FILE...: one line of sentencepiece pieces per input line
  python -c 'import sys, sentencepiece
model = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
for path in sys.argv[2:]:
    for line in open(path, encoding="utf-8"):
        print(" ".join(model.encode(line.strip(), out_type=str)))' \
    "$workdir/data-bin/de-en/sentencepiece.bpe.model" "$@"
}
encode "$text/$train.de" "$text/$train.en" > "$workdir/mono/train.txt"
encode "$text/$valid.de" "$text/$valid.en" > "$workdir/mono/valid.txt"
fairseq-preprocess --only-source --srcdict "$workdir/data-bin/de-en/dict.de.txt" \
  --trainpref "$workdir/mono/train.txt" --validpref "$workdir/mono/valid.txt" \
  --destdir "$workdir/data-bin/mono" --workers 1 > "$workdir/mono/preprocess.log" 2>&1

shape=(--encoder-layers "$layers" --encoder-embed-dim "$dim" --encoder-ffn-embed-dim "$((4 * dim))"
       --encoder-attention-heads "$heads" --max-positions "$positions")
optimization=(--optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr "$lr"
              --lr-scheduler inverse_sqrt --warmup-updates "$warmup" --dropout 0.1
              --seed "$seed" --no-epoch-checkpoints
              --log-format simple --log-interval 100)

echo "== MLM pretraining: fairseq masked_lm, roberta $layers x $dim, $mlm_updates updates"
fairseq-train "$workdir/data-bin/mono" --task masked_lm --criterion masked_lm --arch roberta \
  "${shape[@]}" --tokens-per-sample "$positions" --sample-break-mode complete \
  "${optimization[@]}" --max-tokens "$max_tokens" --max-update "$mlm_updates" --skip-invalid-size-inputs-valid-test \
  --save-dir "$workdir/checkpoints/mlm" > "$workdir/mlm.log" 2>&1 \
  || { tail -n 30 "$workdir/mlm.log"; exit 1; }
grep -E "valid on" "$workdir/mlm.log" | tail -n 1 || true

adapt() {  # adapt NAME [options]: diffusion training on de->en for $adapt_updates updates
  local name="$1"
  shift
  fairseq-train "$workdir/data-bin/de-en" --user-dir diffusion_plugin \
    --task prompted_translation -s de -t en --arch diffusion_xlmr_tiny "${shape[@]}" \
    --criterion masked_diffusion "${optimization[@]}" --max-tokens "$adapt_max_tokens" \
    --max-update "$adapt_updates" --disable-validation --save-dir "$workdir/checkpoints/$name" \
    $adapt_args "$@" \
    > "$workdir/$name.log" 2>&1 || { tail -n 30 "$workdir/$name.log"; exit 1; }
}
echo "== adaptation from the masked LM ($adapt_updates updates)"
adapt pretrained --pretrained-mlm "$workdir/checkpoints/mlm/checkpoint_last.pt" --pretrained-vocab full
echo "== the same architecture from scratch ($adapt_updates updates)"
adapt scratch

evaluate() {  # evaluate NAME: sacreBLEU of NAME's last checkpoint on the test split
  fairseq-generate "$workdir/data-bin/de-en" --user-dir diffusion_plugin \
    --task prompted_translation -s de -t en --path "$workdir/checkpoints/$1/checkpoint_last.pt" \
    --gen-subset test --iter-decode-max-iter "$iter_decode_max_iter" --iter-decode-with-beam "$length_beam" \
    --batch-size 64 --post-process sentencepiece \
    > "$workdir/$1.generate.out" 2> "$workdir/$1.generate.log" \
    || { tail -n 30 "$workdir/$1.generate.log" >&2; exit 1; }
  grep -P "^D-\d+\t" "$workdir/$1.generate.out" | sort -t- -k2 -n | cut -f3 > "$workdir/$1.hyp"
  sacrebleu "$text/$test.en" -i "$workdir/$1.hyp" -b -w 1
}
echo "== fairseq-generate on $test: $iter_decode_max_iter steps, length beam $length_beam"
pretrained_bleu="$(evaluate pretrained)"
scratch_bleu="$(evaluate scratch)"

echo
echo "| Multi30k $test de→en, $layers layers × $dim$([ "$smoke" = 1 ] && echo ", --smoke: 1000 train / 50 test pairs") | MLM pretraining | adaptation | sacreBLEU |"
echo "|---|---|---|---|"
echo "| masked LM, then adapted | $mlm_updates updates × $max_tokens tokens | $adapt_updates updates × $adapt_max_tokens tokens | $pretrained_bleu |"
echo "| from scratch | — | $adapt_updates updates × $adapt_max_tokens tokens | $scratch_bleu |"
echo "== done in $((SECONDS - started)) s; logs in $workdir"
