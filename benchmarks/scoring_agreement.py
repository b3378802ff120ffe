#!/usr/bin/env python3
"""Agreement of the instruct scoring rules with the paper's on the shared validation sets,
for constructed predictions: each target itself (a perfect output), upper-cased, and
written tokenised-style (clitics and punctuation split off, as Moses output).

The paper's verdict: both sides through transformers' XLMRobertaTokenizer (encode, then
decode with clean_up_tokenization_spaces=True), lower-cased, stripped; exact match,
MGSM's last ``\\d+(,\\d+)*`` as an integer, IWSLT14 corpus sacreBLEU 13a. The project's:
``metrics.decoded_text`` of the sentencepiece round trip of both sides with
``evaluate_instruct.py``'s defaults, and with its previous rules (raw reference, no
clean-up, the decimal MGSM number). The sentencepiece model is trained here on the
targets and their upper-cased copies (nmt_nfkc, XLM-R's normalisation; XLM-R's own
model is not at hand).
"""

import argparse
import glob
import json
import os
import re
import tempfile

import sacrebleu
import sentencepiece as spm
import transformers

from diffusion_plugin import metrics
from diffusion_plugin.data.instruct_jsonl import read_jsonl

SETS = {
    "mmlu/0-shot": "val/*.jsonl",
    "bbh-nlp/0-shot": "validation/*.jsonl",
    "tydiqa/0-shot": "validation/*.jsonl",
    "mgsm/0-shot": "*.jsonl",
    "iwslt14/0-shot": "validation/deen.jsonl",
}


def tokenised(text):
    text = re.sub(r"([.,!?\"])", r" \1 ", text)
    return " ".join(re.sub(r"(n't|'s|'re|'m|'ve|'ll)\b", r" \1", text).split())


def paper_number(text):
    found = re.findall(r"(\d+(,\d+)*)", text)
    return int(found[-1][0].replace(",", "")) if found else -0x7FFFFFFF


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruct-dir", default="../shared/data/instruct")
    args = parser.parse_args(argv)
    targets = {}
    for name, pattern in SETS.items():
        files = [f for f in sorted(glob.glob(os.path.join(args.instruct_dir, name, pattern)))
                 if os.path.basename(f) != "full.jsonl"]
        targets[name] = [t for f in files for _, t in read_jsonl(f)]
    with tempfile.TemporaryDirectory() as tmp:
        lines = [line for ts in targets.values() for t in ts for line in t.splitlines() if line.strip()]
        lines += [line.upper() for line in lines]  # so that no upper-cased prediction holds an unknown piece
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=os.path.join(tmp, "sentencepiece.bpe"), vocab_size=8000,
            character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "sentencepiece.bpe.model"))
        tokenizer = transformers.XLMRobertaTokenizer.from_pretrained(tmp)

    def paper(text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).lower().strip()

    def roundtrip(text):
        return "".join(sp.encode(text, out_type=str)).replace("\u2581", " ").strip()

    rules = {
        "default": lambda h, r: (metrics.decoded_text(roundtrip(h)), metrics.decoded_text(roundtrip(r))),
        "previous": lambda h, r: (metrics.decoded_text(roundtrip(h), clean_up=False),
                                  metrics.decoded_text(r, clean_up=False)),
    }
    rows = []
    for name, refs in targets.items():
        for kind, make in (("target", str), ("upper-cased", str.upper), ("tokenised", tokenised)):
            preds = [make(r) for r in refs]
            row = {"set": name, "predictions": kind, "examples": len(refs)}
            if name.startswith("iwslt14"):
                row["paper"] = sacrebleu.corpus_bleu([paper(p) for p in preds], [[paper(r) for r in refs]]).score
                for rule, prepare in rules.items():
                    hyps, golds = zip(*(prepare(p, r) for p, r in zip(preds, refs)))
                    row[rule] = metrics.bleu(hyps, golds, tokenize="13a", lowercase=True)["score"]
            else:
                def verdict(h, r):
                    return paper_number(h) == paper_number(r) if name.startswith("mgsm") else h == r

                official = [verdict(paper(p), paper(r)) for p, r in zip(preds, refs)]
                row["paper"] = 100.0 * sum(official) / len(refs)
                for rule, prepare in rules.items():
                    prepared = [prepare(p, r) for p, r in zip(preds, refs)]
                    if name.startswith("mgsm"):
                        number_rule = "integer" if rule == "default" else "decimal"
                        ours = metrics.number_matches(*zip(*prepared), number_rule)
                    else:
                        ours = [h == r for h, r in prepared]
                    row[rule] = 100.0 * sum(ours) / len(refs)
                    row[f"{rule}_agreement"] = 100.0 * sum(a == b for a, b in zip(ours, official)) / len(refs)
            rows.append(row)
            print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
