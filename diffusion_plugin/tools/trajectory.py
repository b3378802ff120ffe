"""The denoising trajectory of sentences in fairseq-generate --retain-iter-history output
(``E-<id>_<step>`` lines), drawn by scripts/plot_trajectory.py: a panel per sentence, a
row per step, a column per target position, coloured by what the step did there."""

import re
from collections import defaultdict

HISTORY_LINE = re.compile(r"^E-(?P<id>\d+)_(?P<step>\d+)\t(?P<tokens>.*)$")
MASK = "<mask>"
STATES = {
    "masked": ("#d9d9d9", "still masked"),
    "committed": ("#4daf4a", "committed at this step"),
    "kept": ("#e5f5e0", "kept from an earlier step"),
    "remasked": ("#e41a1c", "re-masked at this step"),
    "replaced": ("#ff7f00", "replaced by another token"),
}


def read_histories(path):
    """{sentence id: [tokens of step 0, step 1, ...]} from ``E-<id>_<step>`` lines."""
    histories = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = HISTORY_LINE.match(line.rstrip("\n"))
            if match:
                histories[int(match["id"])][int(match["step"])] = match["tokens"].split()
    result = {}
    for sentence_id, steps in histories.items():
        if sorted(steps) != list(range(len(steps))):
            raise ValueError(f"{path}: sentence {sentence_id} misses steps (found {sorted(steps)})")
        result[sentence_id] = [steps[s] for s in range(len(steps))]
    return result


def cell_states(history):
    """A state name for every (step, position) of one sentence's history."""
    states = []
    for step, tokens in enumerate(history):
        row = []
        for position, token in enumerate(tokens):
            before = history[step - 1][position] if step > 0 else MASK
            if token == MASK:
                row.append("remasked" if before != MASK else "masked")
            elif before == MASK:
                row.append("committed")
            else:
                row.append("kept" if before == token else "replaced")
        states.append(row)
    return states


def plot(histories, ids, out_path, max_width=40):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(STATES)
    colormap = ListedColormap([STATES[name][0] for name in names])
    heights = [len(histories[i]) for i in ids]
    widths = [min(max(len(t) for t in histories[i]), max_width) for i in ids]
    fig_width = max(6.0, 0.75 * max(widths) + 1.5)
    fig, axes = plt.subplots(
        len(ids), 1, figsize=(fig_width, 0.4 * sum(heights) + 1.2 * len(ids) + 0.8), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, sentence_id, width in zip(axes[:, 0], ids, widths):
        history = [tokens[:width] for tokens in histories[sentence_id]]
        states = cell_states(history)
        grid = [[names.index(state) for state in row] for row in states]
        ax.imshow(grid, cmap=colormap, vmin=0, vmax=len(names) - 1, aspect="auto")
        for step, tokens in enumerate(history):
            for position, token in enumerate(tokens):
                if token != MASK:
                    ax.text(position, step, token.replace("\u2581", "_"), ha="center",
                            va="center", fontsize=7)
        ax.set_yticks(range(len(history)))
        ax.set_ylabel("step")
        ax.set_xticks(range(width))
        ax.set_xlabel("target position")
        ax.set_title(f"sentence {sentence_id}", fontsize=9)
    handles = [Patch(color=STATES[name][0], label=STATES[name][1]) for name in names]
    fig.legend(handles=handles, loc="lower center", ncol=len(names), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def draw(generate_output, ids=None, out_path="trajectory.png", max_width=40):
    """Draw sentences ``ids`` (default: the first three) of ``generate_output`` into
    ``out_path``; returns the ids drawn. Needs matplotlib (ImportError otherwise)."""
    histories = read_histories(generate_output)
    if not histories:
        raise ValueError(f"{generate_output} has no E-<id>_<step> lines; "
                         "run fairseq-generate with --retain-iter-history")
    ids = ids or sorted(histories)[:3]
    missing = [i for i in ids if i not in histories]
    if missing:
        raise ValueError(f"{generate_output} has no history for sentence id(s) {missing}")
    plot(histories, ids, out_path, max_width)
    return ids
