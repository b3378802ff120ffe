"""The Hugging Face export's tokenizer: AutoTokenizer on the export gives, for 300
Multi30k test sentences, every id fairseq gives (sentencepiece encoding, then the
dictionary lookup of the binarizer), for unigram and BPE models; where a piece of the
model has no dictionary row, no tokenizer is exported and AutoTokenizer refuses."""

import io
import itertools
from pathlib import Path

import pytest
import sentencepiece as spm
from fairseq import tasks
from fairseq.data import Dictionary

from helpers import ROOT, training_cfg
from diffusion_plugin.pretrained import dictionary_tokenizer, save_checkpoint
from diffusion_plugin.tools.conversion import export_huggingface
from diffusion_plugin.tools.preprocessing import PromptedDataConfig, prepare

transformers = pytest.importorskip("transformers")

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
TEMPLATE = "Translate the German sentence to English. German: {src} English:"
TRAIN_LINES, TEST_LINES = 3000, 300



def prepare_prompted(**options):
    """scripts/prepare_prompted.py's work on ``options`` (paths as str)."""
    return prepare(PromptedDataConfig(**{key: str(value) if isinstance(value, Path) else value
                                         for key, value in options.items()}))


def first_lines(path, count):
    with open(path, encoding="utf-8") as lines:
        return [line.rstrip("\n") for line in itertools.islice(lines, count)]


@pytest.fixture(scope="module")
def multi30k(tmp_path_factory):
    """The first lines of Multi30k de-en as train/valid/test.{src,tgt}."""
    if not MULTI30K.is_dir():
        pytest.skip(f"the shared Multi30k corpus is not at {MULTI30K}")
    raw = tmp_path_factory.mktemp("multi30k")
    for split, name, count in (("train", "train", TRAIN_LINES), ("valid", "val", 100), ("test", "test_2016_flickr", TEST_LINES)):
        for side, lang in (("src", "de"), ("tgt", "en")):
            (raw / f"{split}.{side}").write_text("\n".join(first_lines(MULTI30K / f"{name}.{lang}", count)) + "\n", encoding="utf-8")
    return raw


def sentences_of(raw):
    """The 300 German test sentences, raw and in the prompt, and the English ones."""
    german = first_lines(raw / "test.src", TEST_LINES)
    return german + [TEMPLATE.replace("{src}", line) for line in german] + first_lines(raw / "test.tgt", TEST_LINES)


def fairseq_ids(processor, dictionary, line):
    """``<s>`` + the dictionary row of each sentencepiece piece + ``</s>``, as the task's data holds it."""
    return [dictionary.bos(), *dictionary.encode_line(" ".join(processor.encode(line, out_type=str)), add_if_not_exist=False).tolist()]


def assert_same_ids(tokenizer, processor, dictionary, lines):
    compared = 0
    for line in lines:
        expected = fairseq_ids(processor, dictionary, line)
        assert tokenizer(line)["input_ids"] == expected, line
        compared += len(expected)
    print(f"{compared} ids equal on {len(lines)} lines")
    assert compared > 10 * len(lines)


def export(tmp_path, data):
    cfg = training_cfg(data)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    save_checkpoint(cfg, model, str(tmp_path / "checkpoint.pt"))
    exported = tmp_path / "hf"
    export_huggingface(str(tmp_path / "checkpoint.pt"), str(exported))
    return exported


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_autotokenizer_on_the_export_gives_the_ids_fairseq_gives(tmp_path, multi30k, model_type):
    data = tmp_path / "data-bin"
    options = dict(source_lang="src", target_lang="tgt", trainpref=multi30k / "train",
                   validpref=multi30k / "valid", testpref=multi30k / "test", template=TEMPLATE,
                   vocab_size=2000, spm_model_type=model_type, destdir=data)
    if model_type == "bpe":
        # BPE's intermediate pieces rarely end a word of the training data and so have
        # no row of its dictionary: here a dictionary of every piece (as --dict gives)
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(first_lines(multi30k / "train.src", TRAIN_LINES) + first_lines(multi30k / "train.tgt", TRAIN_LINES)),
            model_writer=model, vocab_size=2000, model_type="bpe", hard_vocab_limit=False, minloglevel=2,
        )
        (tmp_path / "bpe.model").write_bytes(model.getvalue())
        processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
        dictionary = Dictionary()
        for piece_id in range(3, processor.get_piece_size()):
            dictionary.add_symbol(processor.id_to_piece(piece_id), n=processor.get_piece_size() - piece_id)
        dictionary.save(str(tmp_path / "dict.txt"))
        options.update(spm_model=tmp_path / "bpe.model", dict=tmp_path / "dict.txt")
    prepare_prompted(**options)
    exported = export(tmp_path, data)

    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    processor = spm.SentencePieceProcessor(model_file=str(data / "sentencepiece.bpe.model"))
    dictionary = Dictionary.load(str(data / "dict.src.txt"))
    assert tokenizer.get_vocab() == {symbol: row for symbol, row in dictionary.indices.items() if symbol in tokenizer.get_vocab()}
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (
        dictionary.index("<mask>"), dictionary.pad(), dictionary.unk())
    assert_same_ids(tokenizer, processor, dictionary, sentences_of(multi30k))
    assert "re-mapped to the rows of `dict.txt`" in (exported / "README.md").read_text()


def test_a_piece_without_a_row_exports_no_tokenizer_and_autotokenizer_refuses(tmp_path, multi30k):
    data = tmp_path / "data-bin"
    prepare_prompted(source_lang="src", target_lang="tgt", trainpref=multi30k / "train",
                     testpref=multi30k / "test", template=TEMPLATE, vocab_size=2000,
                     spm_model_type="bpe", destdir=data)
    dictionary = Dictionary.load(str(data / "dict.src.txt"))
    tokenizer, reason = dictionary_tokenizer(str(data / "sentencepiece.bpe.model"), dictionary)
    assert tokenizer is None and "have no dictionary row" in reason
    exported = export(tmp_path, data)
    assert not (exported / "tokenizer.json").exists()
    assert "No tokenizer is exported" in (exported / "README.md").read_text()
    with pytest.raises(ValueError):
        transformers.AutoTokenizer.from_pretrained(exported)
