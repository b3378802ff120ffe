"""scripts/prepare_prompted.py and scripts/make_synthetic_corpus.py: outputs and bad input."""

import pytest
from fairseq.data import Dictionary, data_utils

from helpers import load_script, write_reversal_corpus

prepare_prompted = load_script("prepare_prompted")
make_synthetic_corpus = load_script("make_synthetic_corpus")


@pytest.fixture()
def raw(tmp_path):
    directory = tmp_path / "raw"
    directory.mkdir()
    write_reversal_corpus(directory, sizes=(("train", 50), ("valid", 5), ("test", 5)))
    return directory


def argv(raw, dest, *extra):
    return [
        "--source-lang", "src", "--target-lang", "tgt",
        "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"), "--testpref", str(raw / "test"),
        "--vocab-size", "60", "--destdir", str(dest), *extra,
    ]


def test_outputs_prompted_binarized_data_with_mask(raw, tmp_path):
    dest = tmp_path / "bin"
    prepare_prompted.main(argv(raw, dest, "--template", "Q: {src} A:"))
    src_dict = Dictionary.load(str(dest / "dict.src.txt"))
    assert (dest / "dict.src.txt").read_text() == (dest / "dict.tgt.txt").read_text()
    assert "<mask>" in src_dict.indices
    assert (dest / "prompt_template.txt").read_text().strip() == "Q: {src} A:"
    assert (dest / "sentencepiece.bpe.model").exists()
    source = data_utils.load_indexed_dataset(str(dest / "test.src-tgt.src"), src_dict)
    first_raw = (raw / "test.src").read_text().splitlines()[0]
    decoded = src_dict.string(source[0], "sentencepiece")
    assert decoded == f"Q: {first_raw} A:"
    assert len(source) == 5


def test_existing_spm_model_and_dictionary_are_reused(raw, tmp_path):
    first = tmp_path / "first"
    prepare_prompted.main(argv(raw, first))
    second = tmp_path / "second"
    prepare_prompted.main(
        argv(raw, second, "--spm-model", str(first / "sentencepiece.bpe.model"), "--dict", str(first / "dict.src.txt"))
    )
    assert (first / "dict.src.txt").read_text() == (second / "dict.src.txt").read_text()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda raw: (raw / "train.src").write_text(""), r"train\.src is empty"),
        (lambda raw: (raw / "valid.tgt").write_text("a\n\nb\nc\nd\n"), r"valid\.tgt.*line 2"),
        (lambda raw: (raw / "test.tgt").write_text("a\nb\n"), r"test\.src.*test\.tgt|test\.tgt.*test\.src"),
        (lambda raw: (raw / "train.tgt").unlink(), r"train\.tgt does not exist"),
        (lambda raw: (raw / "train.src").write_bytes(b"caf\xe9\n" * 50), r"train\.src is not valid UTF-8"),
    ],
)
def test_bad_corpora_fail_with_one_clear_message_and_write_nothing(raw, tmp_path, corrupt, message):
    corrupt(raw)
    dest = tmp_path / "bin"
    with pytest.raises(SystemExit, match=message):
        prepare_prompted.main(argv(raw, dest))
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [raw]


def test_template_without_placeholder_is_rejected(raw, tmp_path):
    with pytest.raises(SystemExit, match=r"--template.*\{src\}"):
        prepare_prompted.main(argv(raw, tmp_path / "bin", "--template", "Translate this:"))
    assert not (tmp_path / "bin").exists()


def test_dictionary_without_spm_model_is_rejected(raw, tmp_path):
    with pytest.raises(SystemExit, match="--spm-model"):
        prepare_prompted.main(argv(raw, tmp_path / "bin", "--dict", str(raw / "train.src")))


def test_spm_model_alone_gives_the_pieces_of_the_training_data(raw, tmp_path):
    first = tmp_path / "first"
    prepare_prompted.main(argv(raw, first, "--vocab-size", "80"))
    (raw / "train.src").write_text("reverse : w1 w2 =\n" * 50)
    (raw / "train.tgt").write_text("w2 w1\n" * 50)
    second = tmp_path / "second"
    prepare_prompted.main(argv(raw, second, "--spm-model", str(first / "sentencepiece.bpe.model")))
    full, pruned = (Dictionary.load(str(d / "dict.src.txt")) for d in (first, second))
    assert set(pruned.symbols) < set(full.symbols) and "<mask>" in pruned.indices


def test_missing_spm_model_names_the_flag_and_writes_nothing(raw, tmp_path):
    missing = tmp_path / "missing.model"
    with pytest.raises(SystemExit, match=r"--spm-model .*missing\.model does not exist"):
        prepare_prompted.main(argv(raw, tmp_path / "bin", "--spm-model", str(missing), "--dict", str(raw / "train.src")))
    assert not (tmp_path / "bin").exists()


def test_synthetic_corpus_is_seeded_disjoint_and_reorders(tmp_path):
    make_synthetic_corpus.main(["--outdir", str(tmp_path / "a"), "--train", "300", "--valid", "50", "--test", "50"])
    make_synthetic_corpus.main(["--outdir", str(tmp_path / "b"), "--train", "300", "--valid", "50", "--test", "50"])
    for name in ("train.src", "train.tgt", "test.src", "test.tgt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    train = set((tmp_path / "a" / "train.src").read_text().splitlines())
    test_src = (tmp_path / "a" / "test.src").read_text().splitlines()
    test_tgt = (tmp_path / "a" / "test.tgt").read_text().splitlines()
    assert not train & set(test_src)
    lengths = [(len(s.split()), len(t.split())) for s, t in zip(test_src, test_tgt)]
    assert any(s != t for s, t in lengths), "target lengths must differ from source lengths"
    assert "synthetic" in (tmp_path / "a" / "README.txt").read_text().lower()


def test_synthetic_translation_is_the_mirrored_word_by_word_translation():
    lex, (pairs,) = make_synthetic_corpus.generate(1, [200])
    function_words = {"subj": "of", "obj": "to", "def": "the", "indef": "a",
                      "past": "did", "future": "will", "neg": "not"}
    lexicon = dict(lex.nouns + lex.verbs + lex.adjectives + lex.time_adverbs
                   + lex.adverbs + lex.prepositions)
    lexicon.update({lex.src_function[s]: lex.tgt_function[t] for s, t in function_words.items()})
    in_source_order = 0
    for src, tgt in pairs:
        words = [lexicon[word] for word in src.split()]
        assert " ".join(reversed(words)) == tgt
        in_source_order += " ".join(words) == tgt
    assert in_source_order == 0, "the target order must differ from the source order"
