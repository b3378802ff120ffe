"""--pretrained-mlm from Hugging Face XLM-R / XLM-R XL and fairseq RoBERTa checkpoints,
vocabulary pruning, the released-checkpoint converter and the Hugging Face export
(docs/METHOD.md §1, §5, §8). Every source model is built and saved here."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.data import Dictionary, data_utils
from fairseq_cli import preprocess
from torch import nn

from helpers import BIN, run, training_cfg
from diffusion_plugin.tools.conversion import convert, export_huggingface
from diffusion_plugin.pretrained import save_checkpoint

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
SHAPE = [  # training_cfg's model, the shape of the tiny masked LMs
    "--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--max-positions", "64",
]
TEXT = [
    "Ein Hund läuft über die Wiese.",
    "A dog runs across the meadow.",
    "Zwei Kinder spielen im Park.",
    "Two children are playing in the park.",
    "Eine Frau liest ein Buch am Fenster.",
    "A woman reads a book at the window.",
]
UNSEEN = "not-a-piece"



@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("spm") / "sentencepiece.bpe"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 4), model_prefix=str(prefix), vocab_size=70,
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=f"{prefix}.model"), Path(f"{prefix}.model")


@pytest.fixture(scope="module")
def tokenizer(sentencepiece_model):
    return transformers.XLMRobertaTokenizer.from_pretrained(str(sentencepiece_model[1].parent))


@pytest.fixture(scope="module")
def vocabulary(sentencepiece_model, tokenizer):
    """XLM-R's fairseq dictionary of the sentencepiece model: <s> <pad> </s> <unk>, its
    pieces, <mask>; the same ids as the Hugging Face tokenizer's."""
    processor, _ = sentencepiece_model
    dictionary = Dictionary()
    for piece_id in range(3, processor.get_piece_size()):
        dictionary.add_symbol(processor.id_to_piece(piece_id))
    dictionary.add_symbol("<mask>")
    assert tokenizer.get_vocab() == dictionary.indices
    return dictionary


@pytest.fixture(scope="module")
def pruned(sentencepiece_model, vocabulary):
    """A task dictionary: the pieces of TEXT[:4], a symbol XLM-R lacks, <mask>."""
    processor, _ = sentencepiece_model
    dictionary = Dictionary()
    for line in TEXT[:4]:
        for piece in processor.encode(line, out_type=str):
            dictionary.add_symbol(piece)
    dictionary.add_symbol(UNSEEN)
    dictionary.add_symbol("<mask>")
    assert len(dictionary) < len(vocabulary)
    return dictionary


def tiny_config(config_class, vocab_size):
    """The shape training_cfg gives the plugin: 2 layers x 32, 2 heads, FFN 64, 64 positions."""
    return config_class(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=66, type_vocab_size=1,
        layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )


def randomized(module, seed=0):
    """Every parameter (LayerNorms, token types, biases too) uniform in [-0.5, 0.5]."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-0.5, 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory, tokenizer, vocabulary):
    """A tiny XLMRobertaForMaskedLM saved as safetensors with its tokenizer."""
    directory = tmp_path_factory.mktemp("xlm-roberta")
    model = randomized(
        transformers.XLMRobertaForMaskedLM(tiny_config(transformers.XLMRobertaConfig, len(vocabulary)))
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    assert (directory / "model.safetensors").exists()
    return directory, model


def build(directory, dictionary, *extra):
    """(cfg, model) for ``dictionary`` built as fairseq-train builds it (2 layers x 32)."""
    directory.mkdir(exist_ok=True)
    for lang in ("src", "tgt"):
        dictionary.save(str(directory / f"dict.{lang}.txt"))
    cfg = training_cfg(directory, *extra)
    task = tasks.setup_task(cfg.task)
    return cfg, task.build_model(cfg.model).eval()


def tokens_of(dictionary, processor, lines=TEXT[:4]):
    """``<s> pieces </s>`` rows of ``lines`` in dictionary ids, right-padded: (B, L)."""
    rows = [
        torch.tensor(
            [dictionary.bos()]
            + [dictionary.index(piece) for piece in processor.encode(line, out_type=str)]
            + [dictionary.eos()]
        )
        for line in lines
    ]
    return data_utils.collate_tokens(rows, dictionary.pad())


def hf_logits(hf_model, tokens, dictionary, hf_vocabulary):
    """Hugging Face logits (B, L, len(dictionary)) for ``tokens`` in dictionary ids; the
    columns of symbols the vocabulary lacks are <unk>'s."""
    hf_ids = [hf_vocabulary.get(symbol, hf_vocabulary["<unk>"]) for symbol in dictionary.symbols]
    hf_ids = torch.tensor(hf_ids)
    with torch.no_grad():
        logits = hf_model(input_ids=hf_ids[tokens], attention_mask=tokens.ne(dictionary.pad())).logits
    return logits[:, :, hf_ids]


def max_difference(model, reference_logits, tokens, dictionary, label):
    """max |plugin logits - reference logits| over the non-pad positions."""
    with torch.no_grad():
        logits = model.encoder(tokens)[0]
    keep = tokens.ne(dictionary.pad())
    difference = (logits[keep] - reference_logits[keep]).abs().max().item()
    print(f"max |logit difference| {label}: {difference:.2e}")
    return difference


def test_huggingface_xlmr_full_vocabulary_gives_its_logits(tmp_path, xlmr, vocabulary, tokenizer, sentencepiece_model):
    directory, hf_model = xlmr
    _, model = build(tmp_path / "data", vocabulary, "--pretrained-mlm", str(directory), "--pretrained-vocab", "full")
    assert model.tied_embeddings
    tokens = tokens_of(vocabulary, sentencepiece_model[0])
    reference = hf_logits(hf_model, tokens, vocabulary, tokenizer.get_vocab())
    assert max_difference(model, reference, tokens, vocabulary, "HF XLM-R") < ATOL


def test_pruning_keeps_the_logits_of_kept_tokens(tmp_path, xlmr, pruned, tokenizer, sentencepiece_model):
    directory, hf_model = xlmr
    _, model = build(tmp_path / "data", pruned, "--pretrained-mlm", str(directory))
    encoder = model.encoder
    assert not model.tied_embeddings
    assert encoder.lm_head.weight.shape[0] == len(pruned)
    tokens = tokens_of(pruned, sentencepiece_model[0])
    reference = hf_logits(hf_model, tokens, pruned, tokenizer.get_vocab())
    assert max_difference(model, reference, tokens, pruned, "pruned HF XLM-R") < ATOL
    unseen, unk = pruned.index(UNSEEN), pruned.unk()
    assert torch.equal(encoder.sentence_encoder.embed_tokens.weight[unseen], encoder.sentence_encoder.embed_tokens.weight[unk])


def test_huggingface_xlmr_xl_from_pytorch_model_bin(tmp_path, tokenizer, vocabulary, sentencepiece_model):
    directory = tmp_path / "xlm-roberta-xl"
    hf_model = randomized(
        transformers.XLMRobertaXLForMaskedLM(tiny_config(transformers.XLMRobertaXLConfig, len(vocabulary)))
    )
    hf_model.config.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    # as facebook/xlm-roberta-xxl's config.json has it (docs/METHOD.md §1)
    config.update(model_type="xlm-roberta", architectures=["XLMRobertaXLForMaskedLM"])
    (directory / "config.json").write_text(json.dumps(config))
    torch.save(hf_model.state_dict(), directory / "pytorch_model.bin")
    tokenizer.save_pretrained(directory)
    _, model = build(
        tmp_path / "data", vocabulary, "--arch", "diffusion_xlmr_xl",
        "--pretrained-mlm", str(directory), "--pretrained-vocab", "full",
    )
    assert model.cfg.encoder_normalize_before and not model.cfg.layernorm_embedding
    tokens = tokens_of(vocabulary, sentencepiece_model[0])
    reference = hf_logits(hf_model, tokens, vocabulary, tokenizer.get_vocab())
    assert max_difference(model, reference, tokens, vocabulary, "HF XLM-R XL") < ATOL


@pytest.fixture(scope="module")
def fairseq_roberta(tmp_path_factory, vocabulary, sentencepiece_model):
    """checkpoint_last.pt of ``fairseq-train --task masked_lm --arch roberta`` (3 updates)."""
    processor, model_file = sentencepiece_model
    work = tmp_path_factory.mktemp("masked_lm")
    pieces = Dictionary()  # XLM-R's dict.txt: the pieces, without <mask>
    for symbol in vocabulary.symbols[pieces.nspecial:-1]:
        pieces.add_symbol(symbol)
    pieces.save(str(work / "dict.txt"))
    for split, lines in (("train", TEXT * 8), ("valid", TEXT)):
        (work / f"{split}.txt").write_text(
            "".join(" ".join(processor.encode(line, out_type=str)) + "\n" for line in lines)
        )
    preprocess.main(
        options.get_preprocessing_parser().parse_args(
            [
                "--only-source", "--srcdict", str(work / "dict.txt"),
                "--trainpref", str(work / "train.txt"), "--validpref", str(work / "valid.txt"),
                "--destdir", str(work / "data-bin"),
            ]
        )
    )
    save_dir = work / "checkpoints"
    run(
        [
            str(BIN / "fairseq-train"), str(work / "data-bin"),
            "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta", *SHAPE,
            "--tokens-per-sample", "64", "--sample-break-mode", "complete",
            "--optimizer", "adam", "--lr", "1e-2", "--batch-size", "8", "--max-update", "3",
            "--seed", "1", "--disable-validation", "--save-dir", str(save_dir),
            "--no-epoch-checkpoints", "--log-format", "simple",
        ]
    )
    return work, save_dir / "checkpoint_last.pt", model_file


def roberta_logits(checkpoint, tokens):
    """Logits (B, L, V) of the fairseq RobertaModel saved in ``checkpoint``."""
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    with torch.no_grad():
        return models[0].eval()(tokens)[0]


@pytest.mark.slow  # a subprocess
def test_fairseq_roberta_checkpoint_and_xlmr_directory_give_their_logits(tmp_path, fairseq_roberta, vocabulary, sentencepiece_model):
    work, checkpoint, model_file = fairseq_roberta
    tokens = tokens_of(vocabulary, sentencepiece_model[0])
    reference = roberta_logits(checkpoint, tokens)
    # the checkpoint file: its dictionary comes from its training data directory
    _, model = build(tmp_path / "a", vocabulary, "--pretrained-mlm", str(checkpoint), "--pretrained-vocab", "full")
    assert max_difference(model, reference, tokens, vocabulary, "fairseq roberta") < ATOL
    # an XLM-R archive directory, with the older names (decoder.*, emb_layer_norm)
    archive = tmp_path / "xlmr.tiny"
    archive.mkdir()
    shutil.copy(work / "dict.txt", archive / "dict.txt")
    shutil.copy(model_file, archive / "sentencepiece.bpe.model")
    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {
        name.replace("encoder.", "decoder.", 1).replace("layernorm_embedding", "emb_layer_norm"): value
        for name, value in state["model"].items()
    }
    torch.save(state, archive / "model.pt")
    _, model = build(tmp_path / "b", vocabulary, "--pretrained-mlm", str(archive), "--pretrained-vocab", "full")
    assert max_difference(model, reference, tokens, vocabulary, "fairseq XLM-R directory") < ATOL


class ReleasedLayout(nn.Module):
    """The module tree of the released checkpoints (Diffusion-LLM's
    DiscreteDiffusionXLMRModel, docs/METHOD.md §5): ``model`` (the Hugging Face masked LM),
    ``length_trm`` and ``length_predictor`` over max_position_embeddings classes."""

    def __init__(self, mlm):
        super().__init__()
        config = mlm.config
        self.model = mlm
        self.length_trm = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model=config.hidden_size, nhead=config.num_attention_heads,
                dim_feedforward=config.intermediate_size, batch_first=True,
            ),
            num_layers=1,
        )
        self.length_predictor = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.Tanh(),
            nn.Linear(config.intermediate_size, config.max_position_embeddings),
        )

    def forward_length(self, input_ids):
        """Length logits (B, max_position_embeddings) of prompts (B, S), as the release computes them."""
        attention_mask = input_ids.ne(self.model.config.pad_token_id)
        features = self.model.roberta(input_ids, attention_mask=attention_mask)[0]
        features = self.length_trm(features, src_key_padding_mask=~attention_mask)
        pooled = features.masked_fill(~attention_mask[:, :, None], 0).sum(1) / attention_mask.sum(-1, keepdim=True)
        return self.length_predictor(pooled)


def test_converter_turns_a_released_checkpoint_into_one_fairseq_generate_loads(tmp_path, tokenizer, vocabulary, sentencepiece_model):
    released_dir = tmp_path / "flan_v2.tiny.length"
    released_dir.mkdir()
    mlm = transformers.XLMRobertaForMaskedLM(tiny_config(transformers.XLMRobertaConfig, len(vocabulary)))
    released = randomized(ReleasedLayout(mlm))
    torch.save(released.state_dict(), released_dir / "pytorch_model.bin")
    tokenizer.save_pretrained(released_dir)
    shutil.copy(sentencepiece_model[1], released_dir)  # as the release's slow tokenizer saved it

    out = tmp_path / "converted"
    convert(str(released_dir), str(out), "diffusion_xlmr_tiny", model_options=[*SHAPE, "--dropout", "0"])
    assert_converted_release_gives_its_outputs(tmp_path, out, released, vocabulary, tokenizer, sentencepiece_model)


def assert_converted_release_gives_its_outputs(tmp_path, out, released, vocabulary, tokenizer, sentencepiece_model):
    """OUTDIR of the converter loads with fairseq's checkpoint_utils and gives the logits and
    length predictions of ``released`` (a ReleasedLayout)."""
    assert Dictionary.load(str(out / "dict.txt")).symbols == vocabulary.symbols
    assert (out / "sentencepiece.bpe.model").exists()
    data = tmp_path / f"data-bin-{out.name}"  # what prepare_prompted.py --dict OUTDIR/dict.txt writes
    data.mkdir(exist_ok=True)
    for lang in ("src", "tgt"):
        shutil.copy(out / "dict.txt", data / f"dict.{lang}.txt")
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(out / "checkpoint.pt")], arg_overrides={"data": str(data)}
    )
    model = models[0].eval()
    assert cfg.model.length_predictor == "separate" and cfg.model.length_classes == 66

    tokens = tokens_of(vocabulary, sentencepiece_model[0])
    reference = hf_logits(released.model, tokens, vocabulary, tokenizer.get_vocab())
    assert max_difference(model, reference, tokens, vocabulary, "converted release, masked LM") < ATOL
    prompts = tokens.masked_fill(tokens.eq(vocabulary.eos()), vocabulary.pad())  # <s> pieces
    with torch.no_grad():
        length_difference = (model.forward_length(prompts) - released.forward_length(prompts)).abs().max().item()
    print(f"max |logit difference| converted release, length predictor: {length_difference:.2e}")
    assert length_difference < ATOL


def test_converter_reads_the_official_trainer_layout_with_the_xlmr_directory(tmp_path, tokenizer, vocabulary, sentencepiece_model):
    """The official code's HF Trainer writes checkpoint-N/pytorch_model.bin (the wrapper's
    state: model.roberta.*, model.lm_head.*, length_trm.*, length_predictor.*) with no config
    or tokenizer; a run directory's trainer_state.json names its best checkpoint."""
    xlmr_dir = tmp_path / "xlm-roberta"
    mlm = transformers.XLMRobertaForMaskedLM(tiny_config(transformers.XLMRobertaConfig, len(vocabulary)))
    mlm.save_pretrained(xlmr_dir)
    tokenizer.save_pretrained(xlmr_dir)
    shutil.copy(sentencepiece_model[1], xlmr_dir)  # as facebook/xlm-roberta-* hold it
    run_dir, trained = tmp_path / "run", {}
    for step in (500, 1000):
        trained[step] = randomized(ReleasedLayout(copy.deepcopy(mlm)), seed=step)
        (run_dir / f"checkpoint-{step}").mkdir(parents=True)
        torch.save(trained[step].state_dict(), run_dir / f"checkpoint-{step}" / "pytorch_model.bin")
    state = {"global_step": 1000, "best_model_checkpoint": "/train/output/run/checkpoint-500"}
    (run_dir / "checkpoint-1000" / "trainer_state.json").write_text(json.dumps(state))
    assert [p.name for p in (run_dir / "checkpoint-500").iterdir()] == ["pytorch_model.bin"]
    options = [*SHAPE, "--dropout", "0"]

    with pytest.raises(ValueError, match="holds only weights .* --xlmr-dir XLMR_DIR"):
        convert(str(run_dir / "checkpoint-500"), str(tmp_path / "none"), "diffusion_xlmr_tiny", model_options=options)
    wrong = tmp_path / "xlm-roberta-3-layers"
    transformers.XLMRobertaConfig(**{**mlm.config.to_dict(), "num_hidden_layers": 3}).save_pretrained(wrong)
    with pytest.raises(ValueError, match=r"2 layers, but .*config.json has 32 with 3; .*\(--xlmr-dir\)"):
        convert(str(run_dir), str(tmp_path / "none"), "diffusion_xlmr_tiny", xlmr_dir=str(wrong), model_options=options)

    for source, step in ((run_dir, 500), (run_dir / "checkpoint-1000", 1000)):
        out = tmp_path / f"converted-{step}"
        convert(str(source), str(out), "diffusion_xlmr_tiny", xlmr_dir=str(xlmr_dir), model_options=options)
        assert_converted_release_gives_its_outputs(tmp_path, out, trained[step], vocabulary, tokenizer, sentencepiece_model)
        other = trained[1500 - step]  # the other checkpoint: its weights differ
        with pytest.raises(AssertionError):
            assert_converted_release_gives_its_outputs(tmp_path, out, other, vocabulary, tokenizer, sentencepiece_model)


def test_export_then_import_gives_identical_logits(tmp_path, xlmr, pruned, sentencepiece_model):
    cfg, model = build(tmp_path / "data", pruned, "--pretrained-mlm", str(xlmr[0]))
    save_checkpoint(cfg, model, str(tmp_path / "checkpoint.pt"))
    exported = tmp_path / "hf"
    assert export_huggingface(str(tmp_path / "checkpoint.pt"), str(exported), str(tmp_path / "data"))[0] == len(pruned)

    _, imported = build(tmp_path / "data2", pruned, "--pretrained-mlm", str(exported))
    tokens = tokens_of(pruned, sentencepiece_model[0])
    with torch.no_grad():
        original_logits, imported_logits = model.encoder(tokens)[0], imported.encoder(tokens)[0]
    keep = tokens.ne(pruned.pad())
    print(f"max |logit difference| export then import: {(original_logits - imported_logits)[keep].abs().max():.2e}")
    assert torch.equal(original_logits[keep], imported_logits[keep])
    hf_model = transformers.AutoModelForMaskedLM.from_pretrained(exported).eval()
    assert max_difference(model, hf_logits(hf_model, tokens, pruned, pruned.indices), tokens, pruned, "exported HF model") < ATOL


def test_wrong_shapes_name_the_parameter_and_both_shapes(tmp_path, xlmr, vocabulary):
    with pytest.raises(
        ValueError,
        match=r"encoder\.sentence_encoder\.layers\.0\.fc1\.weight has shape \(64, 32\) in the "
        r"checkpoint but \(48, 32\) in the model",
    ):
        build(tmp_path / "data", vocabulary, "--pretrained-mlm", str(xlmr[0]), "--encoder-ffn-embed-dim", "48")


def test_full_vocabulary_needs_every_symbol(tmp_path, xlmr, pruned):
    with pytest.raises(ValueError, match=f"--pretrained-vocab full.*{UNSEEN}"):
        build(tmp_path / "data", pruned, "--pretrained-mlm", str(xlmr[0]), "--pretrained-vocab", "full")


@pytest.mark.slow  # a subprocess
def test_converted_checkpoint_starts_finetuning_and_needs_its_untied_embeddings(tmp_path, xlmr, tiny_data):
    """The FSDP route of docs/PRETRAINED.md without FSDP: convert for a task dictionary
    (pruned, so untied), then fairseq-train --finetune-from-model."""
    model_options = [*SHAPE, "--length-classes", "16"]
    out = tmp_path / "init"
    checkpoint, _, finetune = convert(str(xlmr[0]), str(out), "diffusion_xlmr_tiny", str(tiny_data),
                                      model_options=model_options)
    assert checkpoint == str(out / "checkpoint.pt") and "--untie-weights-roberta" in finetune
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    cfg = training_cfg(tiny_data)  # a tied model cannot hold embeddings trained apart
    tied_model = tasks.setup_task(cfg.task).build_model(cfg.model)
    trained_apart = dict(state["model"])
    trained_apart["encoder.lm_head.weight"] = trained_apart["encoder.lm_head.weight"] + 1
    with pytest.raises(ValueError, match="--untie-weights-roberta"):
        tied_model.load_state_dict(trained_apart, model_cfg=cfg.model)

    result = run(
        [
            str(BIN / "fairseq-train"), str(tiny_data), "--user-dir", "diffusion_plugin",
            "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--arch", "diffusion_xlmr_tiny", *model_options, "--untie-weights-roberta",
            "--finetune-from-model", str(out / "checkpoint.pt"),
            "--criterion", "masked_diffusion", "--optimizer", "adam", "--lr", "1e-4",
            "--max-tokens", "500", "--max-update", "1", "--disable-validation",
            "--save-dir", str(tmp_path / "checkpoints"), "--no-epoch-checkpoints",
        ]
    )
    assert "Loaded checkpoint" in result.stdout + result.stderr
    trained = torch.load(tmp_path / "checkpoints" / "checkpoint_last.pt", weights_only=True)["model"]
    name = "encoder.sentence_encoder.layers.0.fc1.weight"  # one Adam step of lr 1e-4 away
    assert torch.allclose(trained[name], state["model"][name], atol=1e-3)
