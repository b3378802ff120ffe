"""fairseq hub-style Python interface: text in, text out.

    from diffusion_plugin import DiffusionXLMRModel
    lm = DiffusionXLMRModel.from_pretrained(
        "checkpoints/multi30k", "checkpoint_best.pt", data_name_or_path="data-bin/multi30k"
    )
    lm.generate(["Ein Hund läuft."], iter_decode_max_iter=10, iter_decode_with_beam=5)

The prompt template of the data directory (``prompt_template.txt``) and its
sentencepiece model are applied to each input (as fairseq-interactive does); the
decoding options are those of ``fairseq-generate`` (``iter_decode_max_iter``,
``iter_decode_with_beam``, ``decoding_strategy``, ``guidance_scale``,
``candidate_selection``, ...), and any other keyword is an error.
"""

import os
from typing import Dict, List, Union

import torch
from fairseq import hub_utils

from diffusion_plugin.decoding_config import HUB_GENERATE_KEYWORDS, check_option_names


def from_pretrained(model_name_or_path, checkpoint_file="checkpoint_best.pt",
                    data_name_or_path=".", **kwargs) -> "DiffusionHubInterface":
    """Load ``model_name_or_path/checkpoint_file`` with the dictionaries, prompt template
    and sentencepiece model of ``data_name_or_path`` (a relative path is looked for in
    the current folder first, then in the checkpoint directory). ``kwargs`` override the
    saved options."""
    model_path = os.path.abspath(model_name_or_path)
    if not os.path.exists(os.path.join(model_path, checkpoint_file)):
        raise FileNotFoundError(f"{os.path.join(model_path, checkpoint_file)} not found")
    candidates = [os.path.abspath(data_name_or_path)]
    if not os.path.isabs(data_name_or_path):
        candidates.append(os.path.abspath(os.path.join(model_path, data_name_or_path)))
    data_path = next((path for path in candidates if os.path.isdir(path)), None)
    if data_path is None:
        raise FileNotFoundError(
            f"data_name_or_path={data_name_or_path!r}: no such directory (looked for "
            f"{' and '.join(candidates)}); give the data directory the checkpoint was "
            "trained on (with dict.*.txt)"
        )
    loaded = hub_utils.from_pretrained(model_path, checkpoint_file, data_path, **kwargs)
    return DiffusionHubInterface(loaded["args"], loaded["task"], loaded["models"])


class DiffusionHubInterface(hub_utils.GeneratorHubInterface):
    """fairseq's GeneratorHubInterface whose ``generate`` also takes raw strings.

    Its tokenizer is the task's, which applies the prompt template first, as
    ``fairseq-interactive`` does (fairseq's own interface builds a plain one).
    """

    def __init__(self, cfg, task, models):
        super().__init__(cfg, task, models)
        self.tokenizer = task.build_tokenizer(cfg.tokenizer)
        self.bpe = task.build_bpe(cfg.bpe, reads_raw_text=True)

    def generate(self, inputs: Union[List[str], List[torch.LongTensor]], beam: int = 1,
                 verbose: bool = False, **kwargs):
        """Decode raw prompts (strings) or tokenized ones (tensors, as fairseq's).

        For strings, returns per input its candidates best-first as dicts with
        ``text``, ``score`` (mean token log-prob), ``steps`` and, with
        ``retain_iter_history=True``, ``history`` (the canvas after each step, with
        ``<mask>`` for masked positions). A bare string, ``beam`` (fairseq's beam
        search; the length beam is ``iter_decode_with_beam``) and keywords that are no
        decoding option are a ValueError.
        """
        if isinstance(inputs, (str, torch.Tensor)):
            raise ValueError(
                f"generate() takes a list of prompts, got a single {type(inputs).__name__}: "
                f"pass [{'prompt' if isinstance(inputs, str) else 'tokens'}] (a list of one)"
            )
        if beam != 1:
            raise ValueError(
                f"generate(beam={beam}): diffusion decoding has no beam search; the length "
                f"beam is iter_decode_with_beam={beam}"
            )
        check_option_names(kwargs, "generate()", extra=HUB_GENERATE_KEYWORDS)
        if len(inputs) == 0 or not isinstance(inputs[0], str):
            return super().generate(inputs, beam=beam, verbose=verbose, **kwargs)
        tokenized = [self.encode(text) for text in inputs]
        results = super().generate(tokenized, beam=beam, verbose=verbose, **kwargs)
        return [[self._as_text(hypo) for hypo in hypos] for hypos in results]

    def translate(self, sentences: Union[str, List[str]], beam: int = 1, verbose: bool = False,
                  **kwargs) -> Union[str, List[str]]:
        """fairseq's ``translate`` (the best hypothesis as text; a string for a string),
        without its beam search: ``beam`` is 1 as in ``generate``."""
        return self.sample(sentences, beam, verbose, **kwargs)

    def _as_text(self, hypo) -> Dict:
        candidate = {
            "text": self.decode(hypo["tokens"]),
            "score": float(hypo["score"]),
            "steps": hypo.get("steps"),
        }
        if "history" in hypo:
            candidate["history"] = [self.tgt_dict.string(h["tokens"]) for h in hypo["history"]]
        return candidate
