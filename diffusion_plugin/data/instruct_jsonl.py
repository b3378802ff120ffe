"""JSON-lines instruction data (``{"inputs": ..., "targets": ...}``, plain or .gz) and
the left truncation of docs/METHOD.md §1."""

import gzip
import json
from typing import Iterator, List, Sequence, Tuple


def open_text(path: str):
    """``path`` opened for reading UTF-8 text, gunzipped if it ends in .gz."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: str) -> Iterator[Tuple[str, str]]:
    """Yields (inputs, targets) of each line; a bad line raises ValueError naming it."""
    try:
        with open_text(path) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {number} is not JSON ({e}); fix or delete it") from None
                if not isinstance(record, dict) or not all(
                    isinstance(record.get(key), str) for key in ("inputs", "targets")
                ):
                    raise ValueError(
                        f"{path} line {number} needs string fields \"inputs\" and \"targets\", "
                        f"got {line.strip()[:80]!r}"
                    )
                yield record["inputs"], record["targets"]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def left_truncate(prompt: Sequence, target: Sequence, max_positions: int) -> Tuple[List, List, int]:
    """Keep the last tokens of ``prompt + target`` so that ``<s> prompt target </s>``
    has at most ``max_positions`` tokens (docs/METHOD.md §1: the left end goes first, the
    target is cut only once the prompt is gone). ``<s>`` and ``</s>`` are kept.

    Returns (prompt, target, number of tokens dropped).
    """
    room = max_positions - 2
    if room < 1:
        raise ValueError(f"max_positions {max_positions} leaves no room for a target")
    dropped = max(0, len(prompt) + len(target) - room)
    from_prompt = min(dropped, len(prompt))
    return list(prompt[from_prompt:]), list(target[dropped - from_prompt:]), dropped
