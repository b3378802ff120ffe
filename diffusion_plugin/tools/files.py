"""File helpers that scripts and benchmarks share."""

import os


def write_atomically(path, text: str) -> None:
    """Write ``text`` to ``path`` (str or Path; its directory made if missing) through a
    partial file renamed into place, so a reader never sees half of it."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)
