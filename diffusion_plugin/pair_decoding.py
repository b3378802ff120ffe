"""Decoding a list of (prompt, target) token pairs with the task's generator, in order:
what scripts and benchmarks that decode pairs outside fairseq-generate share."""

from fairseq.data import LanguagePairDataset

from diffusion_plugin.data.prompted_pair_dataset import PromptedPairDataset


def decode_pairs(task, models, generator, sources, targets, batch_size):
    """The best hypothesis (a fairseq hypothesis dict) of each pair, in order.

    sources: ``prompt </s>`` LongTensors; targets: ``target </s>`` LongTensors (their
    lengths are the ``--oracle-length`` references). Pairs are batched by length, at most
    ``batch_size`` per batch, within the models' and the task's positions.
    """
    dictionary = task.source_dictionary
    max_positions = min(task.max_positions(), *(m.max_positions() for m in models))
    pairs = LanguagePairDataset(
        sources, [len(s) for s in sources], dictionary, targets, [len(t) for t in targets], dictionary,
        left_pad_source=False, left_pad_target=False, shuffle=False,
    )
    dataset = PromptedPairDataset(pairs, max_positions, training=False)
    batches = task.get_batch_iterator(
        dataset, max_sentences=batch_size, max_positions=max_positions
    ).next_epoch_itr(shuffle=False)
    best = [None] * len(sources)
    for sample in batches:
        for index, hypos in zip(sample["id"].tolist(), task.inference_step(generator, models, sample)):
            best[index] = hypos[0]
    return best
