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
    filter all use that concatenated length; without a reference (interactive
    input) it counts the shortest target, one token and ``</s>``. A ``training``
    dataset is shuffled (by ``seed`` alone) and drops (and counts in the log) pairs
    longer than ``max_positions``; an evaluation dataset keeps every example in
    every batch. With ``truncate`` the prompt of an over-length pair loses its
    last tokens until the pair fits (counted in the log); pairs whose target alone
    does not fit stay as they are.

    A batch holds ``net_input.src_tokens`` (B, S) = ``<s> prompt`` right-padded,
    ``target`` (B, M) = ``target </s>`` right-padded, ``tokens`` (B, L) = the full
    sequences and ``target_mask`` (B, L) = True on the target tokens and the final
    ``</s>`` (the positions the diffusion may mask).
    """

    def __init__(self, dataset: LanguagePairDataset, max_positions: int, training: bool,
                 truncate: bool = False, seed: int = 1):
        super().__init__(dataset)
        self.max_positions = max_positions
        self.training = training
        self.seed = seed
        self.dictionary = dataset.src_dict
        src_sizes = np.asarray(dataset.src_sizes, dtype=np.int64)
        tgt_sizes = dataset.tgt_sizes if dataset.tgt_sizes is not None else 2
        sizes = (src_sizes + tgt_sizes).astype(np.int64)
        excess = (sizes - max_positions).clip(min=0)
        cuttable = truncate & (excess <= src_sizes - 1)
        self._cuts = np.where(cuttable, excess, 0)
        cut = int((self._cuts > 0).sum())
        if cut:
            logger.warning(
                f"cut the prompts of {cut:,} of {len(sizes):,} pairs to fit --max-positions "
                f"{max_positions} (--truncate-source)"
            )
        self._sizes = sizes - self._cuts

    def __getitem__(self, index):
        item = self.dataset[index]
        cut = int(self._cuts[index])
        if cut:
            source = item["source"]
            item = dict(item, source=torch.cat([source[: -1 - cut], source[-1:]]))
        return item

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
        """Indices sorted by concatenated length, shuffled within equal lengths.

        The shuffle depends on ``seed`` only: fairseq builds the batches once, with
        numpy seeded by the seed and the epoch it starts in, and reuses them in later
        epochs, so a run resumed in epoch 2 would otherwise batch differently.
        """
        if self.training:
            indices = np.random.RandomState(self.seed).permutation(len(self)).astype(np.int64)
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
