#!/usr/bin/env bash
# Instruction tuning on 2 CPU cores, then the instruct evaluation (docs/INSTRUCT.md):
#   1. jsonl instructions from the parallel text in --data DIR (IWSLT14 and
#      Multi30k de->en, WMT14 and Multi30k en->de, Gigaword summaries), in the prompt
#      format of the instruct sets; none of the instruct evaluation sets is trained on;
#   2. a mixture of them drawn by ratio (scripts/prepare_instruct.py mix);
#   3. a sentencepiece model trained on the mixture, its full vocabulary, left
#      truncation to --max-positions (scripts/prepare_instruct.py binarize);
#   4. fairseq-train diffusion_xlmr_tiny from scratch for --minutes;
#   5. scripts/evaluate_instruct.py on the 0-shot MMLU, BBH-NLP, TyDiQA, MGSM and
#      IWSLT14 sets (the first --max-per-file examples of each file), oracle length.
#
#   bash examples/instruct_cpu.sh --data DIR           # about 20 minutes on 2 CPU cores
#   bash examples/instruct_cpu.sh --data DIR --smoke   # tiny sizes: checks the pipeline in about a minute
# --data DIR (required) holds iwslt14/train_sample.{de,en}, multi30k/train.{de,en}
# (scripts/download_multi30k.py --outdir DIR/multi30k), wmt14/train_sample.{en,de},
# gigaword/test.{src,tgt} and the instruct sets in instruct/ (docs/INSTRUCT.md).
# Options: --workdir DIR (default work/instruct_cpu),
# --examples N (mixture size), --vocab-size N, --layers N, --dim N, --minutes M,
# --max-update N, --max-tokens N, --lr X, --max-per-file N, --max-iter K (0: per set),
# --length-beam B (0: oracle length), --seed N, --venv DIR (use this environment as is).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

data=""
workdir="$root/work/instruct_cpu"
examples=40000 vocab_size=8000 layers=4 dim=256 minutes=14 max_update=1000000 max_tokens=4096
lr=1e-3 warmup=100 max_per_file=20 max_iter=0 length_beam=0 seed=1 venv=""
smoke=0
for argument in "$@"; do
  if [ "$argument" = --smoke ]; then  # its sizes, unless options set them
    smoke=1 examples=300 vocab_size=400 layers=2 dim=64 max_update=5 max_tokens=2000
    max_per_file=2 max_iter=2
  fi
done
valued=" data workdir examples vocab_size layers dim minutes max_update max_tokens lr max_per_file max_iter length_beam seed venv "
source "$root/examples/options.sh"
parse_options instruct_cpu.sh 2,21 "$@"
if [ -z "$data" ]; then
  echo "instruct_cpu.sh: give --data DIR holding iwslt14/ multi30k/ wmt14/ gigaword/ instruct/ (see --help)" >&2
  exit 2
fi
start_run jsonl

echo "== instructions from the parallel text in $data -> $workdir/jsonl"
to_jsonl() {  # to_jsonl NAME SRC TGT TEMPLATE
  python scripts/prepare_instruct.py from-parallel --src "$2" --tgt "$3" --template "$4" \
    --out "$workdir/jsonl/$1.jsonl.gz"
}
de_en="Translate the sentences into English.  German: {src} English: "
en_de="Translate the sentences into German.  English: {src} German: "
to_jsonl iwslt14_deen "$data/iwslt14/train_sample.de" "$data/iwslt14/train_sample.en" "$de_en"
to_jsonl multi30k_deen "$data/multi30k/train.de" "$data/multi30k/train.en" "$de_en"
to_jsonl multi30k_ende "$data/multi30k/train.en" "$data/multi30k/train.de" "$en_de"
to_jsonl wmt14_ende "$data/wmt14/train_sample.en" "$data/wmt14/train_sample.de" "$en_de"
to_jsonl gigaword "$data/gigaword/test.src" "$data/gigaword/test.tgt" \
  "Write a headline for the article.  Article: {src} Headline: "
cat > "$workdir/jsonl/ratios.json" <<'EOF'
{"iwslt14_deen": 0.3, "multi30k_deen": 0.2, "multi30k_ende": 0.15, "wmt14_ende": 0.2, "gigaword": 0.15}
EOF

echo "== mixture of $examples examples -> $workdir/mixture.jsonl.gz"
python scripts/prepare_instruct.py mix --dir "$workdir/jsonl" --ratios "$workdir/jsonl/ratios.json" \
  --examples "$examples" --seed "$seed" --out "$workdir/mixture.jsonl.gz" 2>/dev/null

echo "== sentencepiece ($vocab_size pieces) and binarized data -> $workdir/data-bin"
python scripts/prepare_instruct.py binarize --train "$workdir/mixture.jsonl.gz" \
  --vocab-size "$vocab_size" --max-positions 512 --destdir "$workdir/data-bin" \
  > "$workdir/prepare.log" 2>&1 || { tail -n 30 "$workdir/prepare.log"; exit 1; }
grep -E "^train:|^dictionary:" "$workdir/prepare.log"

echo "== fairseq-train diffusion_xlmr_tiny ($layers x $dim, from scratch; $minutes min or $max_update updates)"
fairseq-train "$workdir/data-bin" --user-dir diffusion_plugin --task prompted_translation -s src -t tgt \
  --arch diffusion_xlmr_tiny --encoder-layers "$layers" --encoder-embed-dim "$dim" \
  --encoder-ffn-embed-dim "$((4 * dim))" --encoder-attention-heads 4 --max-positions 512 \
  --length-classes 256 --bf16-autocast --criterion masked_diffusion --time-sampling single \
  --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr "$lr" --lr-scheduler fixed \
  --warmup-updates "$warmup" --dropout 0.1 --max-tokens "$max_tokens" --max-update "$max_update" \
  --stop-time-hours "$(python -c "print($minutes / 60)")" --seed "$seed" --disable-validation \
  --save-dir "$workdir/checkpoints" --no-epoch-checkpoints --save-interval 1000 \
  --log-format simple --log-interval 100 \
  > "$workdir/train.log" 2>&1 || { tail -n 30 "$workdir/train.log"; exit 1; }
grep -E "done training|train \|" "$workdir/train.log" | tail -n 2

echo "== evaluate_instruct.py: 0-shot sets, first $max_per_file examples per file"
python scripts/evaluate_instruct.py --path "$workdir/checkpoints/checkpoint_last.pt" \
  --data "$workdir/data-bin" --instruct-dir "$data/instruct" \
  --sets mmlu/0-shot bbh-nlp/0-shot tydiqa/0-shot mgsm/0-shot iwslt14/0-shot \
  --split mmlu=val iwslt14=validation \
  --max-per-file "$max_per_file" --max-iter "$max_iter" --length-beam "$length_beam" \
  --out "$workdir/report.json" 2> "$workdir/evaluate.log" \
  || { tail -n 30 "$workdir/evaluate.log"; exit 1; }
echo "== done in $((SECONDS - started)) s; report in $workdir/report.json"
