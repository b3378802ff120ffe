"""benchmarks.common: the runner's provenance when runs overlap, fairseq-generate's output
and the markdown tables every benchmark prints."""

import sys

from benchmarks.common import Runner, parse_generate, slice_corpus, table

# busy for ``seconds`` of CPU time, whatever the machine's speed
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\nprint('done')"


def test_runs_at_the_same_time_each_count_their_own_cpu_time(tmp_path):
    runner = Runner(tmp_path, threads=1)
    runs = runner.run_together({"short": [sys.executable, "-c", BUSY.format(0.2)],
                                "long": [sys.executable, "-c", BUSY.format(0.6)]})
    assert 0.15 <= runs["short"]["cpu_s"] < runs["long"]["cpu_s"]
    assert runs["long"]["cpu_s"] >= 0.5 and runs["long"]["peak_rss_mib"] > 0
    assert runs["short"]["command"].startswith("OMP_NUM_THREADS=1 ") and runs["short"]["invocations"] == 1
    assert runner.output("long").strip() == "done"
    again = runner.run("long", [sys.executable, "-c", "print('again')"], env={"EXTRA": "1"})
    assert runner.output("long").strip() == "again"  # the last invocation's output only
    assert again["command"].startswith("EXTRA=1 OMP_NUM_THREADS=1 ")


def test_a_run_directory_keeps_the_settings_it_was_made_with(tmp_path):
    Runner(tmp_path, settings={"smoke": True})
    Runner(tmp_path, settings={"smoke": True})
    try:
        Runner(tmp_path, settings={"smoke": False})
    except SystemExit as error:
        assert "pass another --workdir" in str(error)
    else:
        raise AssertionError("a work directory of other settings was reused")


def test_generate_output_gives_hypotheses_candidates_speed_and_steps():
    text = "\n".join([
        "S-1\tein Hund", "H-1\t-0.5\t▁a ▁dog", "D-1\t-0.5\ta dog", "P-1\t-0.1 -0.2 -0.3", "I-1\t4",
        "D-1\t-0.9\ta cat", "P-1\t-0.4 -0.5", "I-1\t4",
        "S-0\tzwei", "D-0\t-0.1\t", "P-0\t-0.1", "I-0\t2",
        "2023-01-01 | INFO | fairseq_cli.generate | Translated 2 sentences (5 tokens) in 0.1s "
        "(19.87 sentences/s, 50.00 tokens/s)",
    ])
    decoded = parse_generate(text)
    assert decoded["hypotheses"] == {"1": "a dog", "0": ""}
    assert decoded["candidates"]["1"] == [["a dog", 2], ["a cat", 1]]
    assert decoded["sentences_per_second"] == 19.87 and decoded["mean_steps"] == 10 / 3
    assert parse_generate("")["sentences_per_second"] is None


def test_tables_and_corpus_slices(tmp_path):
    assert table(["a", "b"], [[1, "x"]], ["note"], align="lr") == "| a | b |\n|---|---:|\n| 1 | x |\n\nnote"
    for lang in ("de", "en"):
        (tmp_path / f"train.{lang}").write_text("1\n2\n3\n")
    slice_corpus(tmp_path, tmp_path / "out", {"train": 2})
    assert (tmp_path / "out" / "train.en").read_text() == "1\n2\n"
