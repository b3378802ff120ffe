"""Concatenates a LanguagePairDataset's prompt and target into one sequence."""

import logging

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset, LanguagePairDataset, data_utils

logger = logging.getLogger(__name__)


class PromptedPairDataset(BaseWrapperDataset):
    """``<s> prompt target </s>`` examples built from a :class:`LanguagePairDataset`.

    The wrapped dataset must hold ``prompt </s>`` sources and ``target </s>``
    targets (``prepend_bos=False``), so that the full sequence has
    ``len(source) + len(target)`` tokens. Sizes, batching and the ``max_positions``
    filter all use that concatenated length. A ``training`` dataset is shuffled
    and drops (and counts in the log) pairs longer than ``max_positions``; an
    evaluation dataset keeps every example in every batch.

    A batch holds ``net_input.src_tokens`` (B, S) = ``<s> prompt`` right-padded,
    ``target`` (B, M) = ``target </s>`` right-padded, ``tokens`` (B, L) = the full
    sequences and ``target_mask`` (B, L) = True on the target tokens and the final
    ``</s>`` (the positions the diffusion may mask).
    """

    def __init__(self, dataset: LanguagePairDataset, max_positions: int, training: bool):
        super().__init__(dataset)
        self.max_positions = max_positions
        self.training = training
        self.dictionary = dataset.src_dict
        tgt_sizes = dataset.tgt_sizes if dataset.tgt_sizes is not None else 0
        self._sizes = (np.asarray(dataset.src_sizes) + tgt_sizes).astype(np.int64)

    @property
    def sizes(self):
        return self._sizes

    def size(self, index):
        return int(self._sizes[index])

    def num_tokens(self, index):
        return int(self._sizes[index])

    def num_tokens_vec(self, indices):
        return self._sizes[indices]

    def ordered_indices(self):
        """Indices sorted by concatenated length, shuffled within equal lengths."""
        if self.training:
            indices = np.random.permutation(len(self)).astype(np.int64)
        else:
            indices = np.arange(len(self), dtype=np.int64)
        indices = indices[np.argsort(self._sizes[indices], kind="mergesort")]
        if self.training:
            fits = self._sizes[indices] <= self.max_positions
            dropped = int((~fits).sum())
            if dropped:
                logger.warning(
                    f"dropped {dropped:,} of {len(indices):,} pairs longer than "
                    f"--max-positions {self.max_positions} (<s> prompt target </s>)"
                )
            indices = indices[fits]
        return indices

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        """Batches by concatenated length. Evaluation batches ignore
        ``required_batch_size_multiple``: fairseq 0.12's batcher can drop the last
        batch when its size is not a multiple (fairseq issue #5036)."""
        return FairseqDataset.batch_by_size(
            self,
            indices,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple if self.training else 1,
        )

    def filter_indices_by_size(self, indices, max_sizes):
        """Filter on the concatenated length (fairseq's base implementation)."""
        return FairseqDataset.filter_indices_by_size(self, indices, max_sizes)

    def collater(self, samples):
        if len(samples) == 0:
            return {}
        pad, bos = self.dictionary.pad(), self.dictionary.bos()
        prompts = [torch.cat([s["source"].new_tensor([bos]), s["source"][:-1]]) for s in samples]
        has_target = samples[0].get("target") is not None
        src_tokens = data_utils.collate_tokens(prompts, pad)
        batch = {
            "id": torch.LongTensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "net_input": {
                "src_tokens": src_tokens,
                "src_lengths": torch.LongTensor([p.numel() for p in prompts]),
            },
            "target": None,
        }
        if has_target:
            targets = [s["target"] for s in samples]
            full = [torch.cat([p, t]) for p, t in zip(prompts, targets)]
            tokens = data_utils.collate_tokens(full, pad)
            positions = torch.arange(tokens.size(1)).unsqueeze(0)
            prompt_lengths = batch["net_input"]["src_lengths"].unsqueeze(1)
            full_lengths = torch.LongTensor([f.numel() for f in full]).unsqueeze(1)
            batch["target"] = data_utils.collate_tokens(targets, pad)
            batch["tokens"] = tokens
            batch["target_mask"] = (positions >= prompt_lengths) & (positions < full_lengths)
            batch["ntokens"] = sum(t.numel() for t in targets)
        else:
            batch["ntokens"] = 0
        return batch
