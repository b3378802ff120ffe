"""scripts/prepare_instruct.py (diffusion_plugin.tools.instruct_data) and
diffusion_plugin/data/instruct_jsonl.py: jsonl -> mixture -> binarized data, left
truncation, bad input."""

import gzip
import json
import re

import pytest
import sentencepiece
from fairseq.data import Dictionary, data_utils

from diffusion_plugin.data.instruct_jsonl import left_truncate, read_jsonl
from diffusion_plugin.tools import instruct_data


def write_jsonl_gz(path, examples):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for inputs, targets in examples:
            f.write(json.dumps({"inputs": inputs, "targets": targets}) + "\n")


@pytest.mark.parametrize(
    "prompt, target, limit, expected",
    [
        ("abc", "xy", 7, ("abc", "xy", 0)),  # 1 + 3 + 2 + 1 = 7 fits
        ("abcde", "xy", 7, ("cde", "xy", 2)),  # the prompt loses its first tokens
        ("ab", "vwxyz", 5, ("", "xyz", 4)),  # the prompt is gone, then the target's start
    ],
)
def test_left_truncation_keeps_the_end(prompt, target, limit, expected):
    kept_prompt, kept_target, dropped = left_truncate(list(prompt), list(target), limit)
    assert ("".join(kept_prompt), "".join(kept_target), dropped) == expected
    assert 2 + len(kept_prompt) + len(kept_target) <= limit


def test_left_truncation_needs_room_for_a_target():
    with pytest.raises(ValueError, match="max_positions 2"):
        left_truncate([1], [2], 2)


def test_bad_jsonl_lines_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"inputs": "a", "targets": "b"}\n{"inputs": "a"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2 needs string fields"):
        list(read_jsonl(str(path)))
    path.write_text('{"inputs": "a", "targets": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2 is not JSON"):
        instruct_data.binarize(instruct_data.InstructDataConfig(train=[str(path)], destdir=str(tmp_path / "bin")))
    assert not (tmp_path / "bin").exists()


@pytest.fixture()
def flan_dir(tmp_path):
    """Every FLAN 2022 source as scripts/download_flan_2022.sh names it, tiny and gzipped;
    example k of source s is ("s k: ...", "answer k")."""
    directory = tmp_path / "flan_2022"
    directory.mkdir()
    for name in instruct_data.FLAN_2022_RATIOS:
        examples = [(f"{name} {k}: question number {k} about {name}", f"answer {k}") for k in range(3)]
        if name == "flan_fs_opt":
            for part in (1, 2, 3):
                write_jsonl_gz(directory / f"{name}_train_part{part}.jsonl.gz", examples[part - 1 : part])
        else:
            write_jsonl_gz(directory / f"{name}_train.jsonl.gz", examples)
    return directory


def test_flan_mixture_follows_the_ratios_and_reads_each_file_in_order(flan_dir, tmp_path):
    out = tmp_path / "mixture.jsonl.gz"
    counts = instruct_data.mix(str(flan_dir), 4000, str(out))
    drawn = list(read_jsonl(str(out)))
    assert len(drawn) == 4000
    by_source = {}
    for inputs, targets in drawn:
        name, k = re.match(r"(\w+) (\d+):", inputs).groups()
        by_source.setdefault(name, []).append(int(k))
        assert targets == f"answer {k}"
    total = sum(instruct_data.FLAN_2022_RATIOS.values())
    for name, ratio in instruct_data.FLAN_2022_RATIOS.items():
        share = len(by_source[name]) / 4000
        assert share == pytest.approx(ratio / total, abs=0.02), name
        assert by_source[name][:5] == [0, 1, 2, 0, 1], "read in order, from the start again at the end"
    assert counts == {name: len(ks) for name, ks in sorted(by_source.items())}


def test_mixture_source_missing_is_named(flan_dir, tmp_path):
    (flan_dir / "cot_zs_opt_train.jsonl.gz").unlink()
    with pytest.raises(FileNotFoundError, match="cot_zs_opt.*download_flan_2022"):
        instruct_data.mix(str(flan_dir), 10, str(tmp_path / "m.jsonl"))


def test_binarize_left_truncates_counts_and_keeps_the_full_vocabulary(tmp_path):
    train = tmp_path / "train.jsonl.gz"
    examples = [(f"question {i} : " + " ".join(f"w{j}" for j in range(i % 9)), f"answer w{i % 7}") for i in range(60)]
    examples.append(("a prompt whose target is empty", ""))
    write_jsonl_gz(train, examples)
    dest = tmp_path / "bin"
    summary = instruct_data.binarize(instruct_data.InstructDataConfig(
        train=[str(train)], test=[str(train)], vocab_size=60, max_positions=12, destdir=str(dest)))
    processor = sentencepiece.SentencePieceProcessor(model_file=str(dest / "sentencepiece.bpe.model"))
    dictionary = Dictionary.load(str(dest / "dict.src.txt"))
    assert "<mask>" in dictionary.indices
    assert dictionary.nspecial + processor.get_piece_size() - 3 + 1 == len(dictionary), "every piece, plus <mask>"

    prompts = data_utils.load_indexed_dataset(str(dest / "train.src-tgt.src"), dictionary)
    targets = data_utils.load_indexed_dataset(str(dest / "train.src-tgt.tgt"), dictionary)
    expected_truncated = expected_dropped = 0
    for i, (inputs, target) in enumerate(examples[:-1]):
        pieces, target_pieces = processor.encode(inputs, out_type=str), processor.encode(target, out_type=str)
        dropped = max(0, len(pieces) + len(target_pieces) - 10)
        expected_truncated += dropped > 0
        expected_dropped += dropped
        assert dictionary.string(prompts[i]).split() == pieces[dropped:]
        assert dictionary.string(targets[i]).split() == target_pieces
        assert len(prompts[i]) + len(targets[i]) <= 12  # + <s>, with both </s> counted once as </s>
    counts = summary["splits"]["train"]
    assert counts == {"examples": 60, "skipped_empty_target": 1, "truncated": expected_truncated,
                      "tokens_dropped": expected_dropped}
    assert expected_truncated > 0
    assert json.loads((dest / "prepare_summary.json").read_text())["splits"]["test"] == counts
