"""scripts/prepare_prompted.py (diffusion_plugin.tools.preprocessing) and
scripts/make_synthetic_corpus.py (diffusion_plugin.tools.synthetic_corpus): outputs and bad input."""

import sys

import pytest
from fairseq.data import Dictionary, data_utils

from helpers import run, write_reversal_corpus
from diffusion_plugin.tools import synthetic_corpus
from diffusion_plugin.tools.preprocessing import PromptedDataConfig, prepare

BAD_INPUT = (ValueError, FileNotFoundError)


@pytest.fixture()
def raw(tmp_path):
    directory = tmp_path / "raw"
    directory.mkdir()
    write_reversal_corpus(directory, sizes=(("train", 50), ("valid", 5), ("test", 5)))
    return directory


def config(raw, dest, **options):
    return PromptedDataConfig(**{
        "source_lang": "src", "target_lang": "tgt", "trainpref": str(raw / "train"), "validpref": str(raw / "valid"),
        "testpref": str(raw / "test"), "vocab_size": 60, "destdir": str(dest), **options,
    })


def test_outputs_prompted_binarized_data_with_mask(raw, tmp_path):
    dest = tmp_path / "bin"
    summary = prepare(config(raw, dest, template="Q: {src} A:"))
    assert summary["pairs"] == {"train": 50, "valid": 5, "test": 5} and summary["destdir"] == str(dest)
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
    prepare(config(raw, first))
    second = tmp_path / "second"
    prepare(config(raw, second, spm_model=str(first / "sentencepiece.bpe.model"), dict=str(first / "dict.src.txt")))
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
    with pytest.raises(BAD_INPUT, match=message):
        prepare(config(raw, dest))
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [raw]


def test_template_without_placeholder_is_rejected(raw, tmp_path):
    with pytest.raises(ValueError, match=r"--template.*\{src\}"):
        prepare(config(raw, tmp_path / "bin", template="Translate this:"))
    assert not (tmp_path / "bin").exists()


@pytest.mark.slow
def test_the_script_prints_the_error_and_exits_with_1(raw, tmp_path):
    result = run([sys.executable, "scripts/prepare_prompted.py", "--trainpref", raw / "train", "--destdir",
                  tmp_path / "bin", "--template", "Translate this:"], ok=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("prepare_prompted.py: error: --template 'Translate this:' does not "
                                          "contain the placeholder {src}; add {src} where the source sentence goes")
    assert not (tmp_path / "bin").exists()


def test_dictionary_without_spm_model_is_rejected(raw, tmp_path):
    with pytest.raises(ValueError, match="--spm-model"):
        prepare(config(raw, tmp_path / "bin", dict=str(raw / "train.src")))


def test_spm_model_alone_gives_the_pieces_of_the_training_data(raw, tmp_path):
    first = tmp_path / "first"
    prepare(config(raw, first, vocab_size=80))
    (raw / "train.src").write_text("reverse : w1 w2 =\n" * 50)
    (raw / "train.tgt").write_text("w2 w1\n" * 50)
    second = tmp_path / "second"
    prepare(config(raw, second, spm_model=str(first / "sentencepiece.bpe.model")))
    full, pruned = (Dictionary.load(str(d / "dict.src.txt")) for d in (first, second))
    assert set(pruned.symbols) < set(full.symbols) and "<mask>" in pruned.indices


def test_missing_spm_model_names_the_flag_and_writes_nothing(raw, tmp_path):
    missing = tmp_path / "missing.model"
    with pytest.raises(FileNotFoundError, match=r"--spm-model .*missing\.model does not exist"):
        prepare(config(raw, tmp_path / "bin", spm_model=str(missing), dict=str(raw / "train.src")))
    assert not (tmp_path / "bin").exists()


def test_synthetic_corpus_is_seeded_disjoint_and_reorders(tmp_path):
    for outdir in ("a", "b"):
        synthetic_corpus.write_corpus(str(tmp_path / outdir), 1, {"train": 300, "valid": 50, "test": 50})
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
    lex, (pairs,) = synthetic_corpus.generate(1, [200])
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
