"""fairseq hub-style Python interface: text in, text out.

    from diffusion_plugin import DiffusionXLMRModel
    lm = DiffusionXLMRModel.from_pretrained(
        "checkpoints/multi30k", "checkpoint_best.pt", data_name_or_path="../../data-bin/multi30k"
    )
    lm.generate(["Ein Hund läuft."], iter_decode_max_iter=10, iter_decode_with_beam=5)

The prompt template of the data directory (``prompt_template.txt``) and its
sentencepiece model are applied to each input; the decoding options are those of
``fairseq-generate`` (``iter_decode_max_iter``, ``iter_decode_with_beam``,
``decoding_strategy``, ``guidance_scale``, ``candidate_selection``, ...).
"""

import os
from typing import Dict, List, Union

import torch
from fairseq import hub_utils

from diffusion_plugin.constants import SENTENCEPIECE_MODEL


def from_pretrained(model_name_or_path, checkpoint_file="checkpoint_best.pt",
                    data_name_or_path=".", **kwargs) -> "DiffusionHubInterface":
    """Load ``model_name_or_path/checkpoint_file`` with the dictionaries, prompt template
    and sentencepiece model of ``data_name_or_path`` (relative to the checkpoint
    directory when it starts with '.'). ``kwargs`` override the saved options."""
    model_path = os.path.abspath(model_name_or_path)
    if data_name_or_path.startswith("."):
        data_path = os.path.abspath(os.path.join(model_path, data_name_or_path))
    else:
        data_path = os.path.abspath(data_name_or_path)
    sentencepiece_model = os.path.join(data_path, SENTENCEPIECE_MODEL)
    if os.path.exists(sentencepiece_model):
        kwargs.setdefault("bpe", "sentencepiece")
        kwargs.setdefault("sentencepiece_model", sentencepiece_model)
    if not os.path.exists(os.path.join(model_path, checkpoint_file)):
        raise FileNotFoundError(f"{os.path.join(model_path, checkpoint_file)} not found")
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

    def generate(self, inputs: Union[List[str], List[torch.LongTensor]], beam: int = 1,
                 verbose: bool = False, **kwargs):
        """Decode raw prompts (strings) or tokenized ones (tensors, as fairseq's).

        For strings, returns per input its candidates best-first as dicts with
        ``text``, ``score`` (mean token log-prob), ``steps`` and, with
        ``retain_iter_history=True``, ``history`` (the canvas after each step, with
        ``<mask>`` for masked positions).
        """
        if len(inputs) == 0 or not isinstance(inputs[0], str):
            return super().generate(inputs, beam=beam, verbose=verbose, **kwargs)
        tokenized = [self.encode(text) for text in inputs]
        results = super().generate(tokenized, beam=beam, verbose=verbose, **kwargs)
        return [[self._as_text(hypo) for hypo in hypos] for hypos in results]

    def _as_text(self, hypo) -> Dict:
        candidate = {
            "text": self.decode(hypo["tokens"]),
            "score": float(hypo["score"]),
            "steps": hypo.get("steps"),
        }
        if "history" in hypo:
            candidate["history"] = [self.tgt_dict.string(h["tokens"]) for h in hypo["history"]]
        return candidate
