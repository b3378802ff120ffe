"""Downloading Multi30k German-English from its public repository (github.com/multi30k/dataset)
into a folder, decompressed, in the layout the README's commands read
(scripts/download_multi30k.py):

    train.{de,en}             task 1 raw, 29,000 lines
    val.{de,en}               task 1 raw, 1,014 lines
    test_2016_flickr.{de,en}  task 1 raw, 1,000 lines
    mono/train.{de,en}        task 2 raw train.1-5 concatenated in order, 145,000 lines

Every file's line count is checked; files are written to a temporary name and renamed
when complete, and files already there with the right count are kept.
"""

import gzip
import os
import urllib.error
import urllib.request

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data"
LANGUAGES = ("de", "en")
# output file -> (paths under --base-url, concatenated in order; line count)
FILES = {
    **{
        f"{split}.{lang}": ([f"task1/raw/{split}.{lang}.gz"], lines)
        for split, lines in (("train", 29000), ("val", 1014), ("test_2016_flickr", 1000))
        for lang in LANGUAGES
    },
    **{
        f"mono/train.{lang}": ([f"task2/raw/train.{part}.{lang}.gz" for part in range(1, 6)], 145000)
        for lang in LANGUAGES
    },
}


def count_lines(path):
    with open(path, "rb") as text:
        return sum(1 for _ in text)


def fetch(url):
    """The decompressed bytes of the .gz file at ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            compressed = response.read()
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(
            f"cannot fetch {url} ({getattr(error, 'reason', error)}); "
            "check the connection, or give a copy of the repository's data/ folder with "
            "--base-url file:///path/to/dataset/data"
        ) from error
    try:
        return gzip.decompress(compressed)
    except (OSError, EOFError) as error:
        raise ValueError(f"{url} is not a complete gzip file ({error}); run again") from error


def download(outdir, base_url=BASE_URL, progress=print):
    """Write every file of FILES under ``outdir`` (each written whole or not at all),
    reporting each through ``progress``; return their paths. A file that cannot be
    fetched raises ConnectionError, one of the wrong length ValueError."""
    written = []
    for name, (sources, lines) in FILES.items():
        path = os.path.join(outdir, name)
        if os.path.isfile(path) and count_lines(path) == lines:
            progress(f"{path}: {lines} lines, kept")
            written.append(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = path + ".partial"
        with open(partial, "wb") as out:
            for source in sources:
                out.write(fetch(f"{base_url.rstrip('/')}/{source}"))
        found = count_lines(partial)
        if found != lines:
            os.remove(partial)
            raise ValueError(
                f"{name} from {', '.join(sources)} has {found} lines, "
                f"Multi30k's has {lines}; the download is incomplete or --base-url is not "
                "multi30k/dataset's data/ folder"
            )
        os.replace(partial, path)
        progress(f"{path}: {lines} lines")
        written.append(path)
    return written
