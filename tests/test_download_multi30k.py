"""scripts/download_multi30k.py against a mirror of multi30k/dataset written here in the
repository's real layout (data/task1/raw/*.gz, data/task2/raw/train.N.*.gz), served over
http on 127.0.0.1 and read as file:// URLs: the files, their line counts, the
concatenated monolingual text, a re-run that keeps them, and a short file refused."""

import functools
import gzip
import http.server
import threading

import pytest

from diffusion_plugin.tools.multi30k_download import download
TASK1 = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}


def write_gz(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(f"{line}\n" for line in lines).encode("utf-8")))


@pytest.fixture
def mirror(tmp_path):
    """The data/ folder of a multi30k/dataset copy: lines "<file> <n> ä" in every file."""
    data = tmp_path / "dataset" / "data"
    for lang in ("de", "en"):
        for split, count in TASK1.items():
            write_gz(data / "task1" / "raw" / f"{split}.{lang}.gz", (f"{split}.{lang} {i} ä" for i in range(count)))
        for part in range(1, 6):
            write_gz(data / "task2" / "raw" / f"train.{part}.{lang}.gz", (f"train.{part}.{lang} {i} ä" for i in range(29000)))
    return data


@pytest.fixture
def http_mirror(mirror):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_downloads_the_real_layout_over_http_and_keeps_it_on_a_rerun(tmp_path, http_mirror, capsys):
    out = tmp_path / "data" / "multi30k"
    download(out, http_mirror)
    names = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert names == sorted([f"{split}.{lang}" for split in TASK1 for lang in ("de", "en")] + ["mono/train.de", "mono/train.en"])
    for split, count in TASK1.items():
        lines = (out / f"{split}.de").read_text(encoding="utf-8").splitlines()
        assert lines == [f"{split}.de {i} ä" for i in range(count)]
    mono = (out / "mono" / "train.en").read_text(encoding="utf-8").splitlines()
    assert mono == [f"train.{part}.en {i} ä" for part in range(1, 6) for i in range(29000)]
    capsys.readouterr()

    download(out, "http://127.0.0.1:9/nothing-here")
    assert capsys.readouterr().out.count("lines, kept") == 8  # nothing fetched again


def test_a_short_file_is_refused_and_nothing_half_written_stays(tmp_path, mirror):
    write_gz(mirror / "task1" / "raw" / "val.en.gz", ["only one line"])
    out = tmp_path / "multi30k"
    with pytest.raises(ValueError, match=r"val\.en from task1/raw/val\.en\.gz has 1 lines, Multi30k's has 1014"):
        download(out, mirror.as_uri())
    assert not (out / "val.en").exists() and not list(out.glob("*.partial"))
    assert (out / "val.de").exists()  # the files before it are complete


def test_an_unreachable_file_names_its_url_and_the_mirror_option(tmp_path, mirror):
    (mirror / "task1" / "raw" / "train.de.gz").unlink()
    with pytest.raises(ConnectionError, match=r"cannot fetch file://.*/task1/raw/train\.de\.gz .*--base-url"):
        download(tmp_path / "out", mirror.as_uri())
