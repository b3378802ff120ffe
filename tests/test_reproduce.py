"""python -m benchmarks.reproduce --smoke: every claim's pipeline at toy sizes, the shape of its
table and the provenance of its runs (never its numbers)."""

import argparse
import json
import re
import subprocess
import sys

import pytest
from helpers import BIN, ROOT
from benchmarks.reproduce import SAMPLERS, Pipeline, bold_ratio, extra_test

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
# a ratio in bold, or a bold dash where the baseline scored 0 BLEU (a toy run on a fast machine can)
RATIO = r"\*\*([\d.]+×|—)\*\*"
pytestmark = pytest.mark.slow  # every claim's stages at toy sizes: about 130 fairseq runs


def reproduce(workdir, *claims):
    result = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.reproduce", "--smoke", "--workdir", str(workdir),
         "--claim", *claims],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def rows(section_text, first_cell):
    """Table rows (lists of cells) of the printed section whose first cell matches."""
    found = []
    for line in section_text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            found.append(cells)
    return found


def slice_of_val(directory, lines=20):
    """The first ``lines`` pairs of Multi30k's val as raw parallel files PREFIX.de/.en; PREFIX."""
    for lang in ("de", "en"):
        text = (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()[:lines]
        (directory / f"val20.{lang}").write_text("".join(f"{line}\n" for line in text), encoding="utf-8")
    return directory / "val20"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not (MULTI30K / "mono").is_dir():
        pytest.skip(f"the shared Multi30k corpus with mono/ is not at {MULTI30K}")
    workdir = tmp_path_factory.mktemp("reproduce")
    extra = slice_of_val(tmp_path_factory.mktemp("extra"))
    first = reproduce(workdir, "a", "--extra-test", f"flickr_val={extra}")
    rest = reproduce(workdir, "b", "c", "d", "e", "--distill", "--train-first", "mlm-micro",
                     "length-mini-pretrained", "--extra-test", f"flickr_val={extra}")
    state = json.loads((workdir / "state.json").read_text())
    return workdir, first, rest, state


def test_claim_a_compares_pretrained_and_scratch_on_the_same_batches(smoke):
    workdir, output, _, state = smoke
    assert "## (a) Pretrained vs from scratch" in output
    table = rows(output, r"masked LM, then adapted|from scratch")
    assert [row[0] for row in table] == ["masked LM, then adapted", "from scratch"]
    assert all(len(row) == 8 for row in table)
    assert re.search(r"Pretrained \+ adapted / from scratch on test2016: " + RATIO, output)
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in output
    # only the pretrained run read the masked LM; both made the same updates
    pretrained = (workdir / "logs" / "adapt-mini-pretrained.log").read_text()
    scratch = (workdir / "logs" / "adapt-mini-scratch.log").read_text()
    assert re.search(r"initialised from .*mlm-mini/checkpoint_last\.pt", pretrained)
    assert "initialised from" not in scratch
    assert table[0][2] == table[1][2]
    wpb = re.compile(r"\| train \| epoch \d+ \|.*?wpb ([\d.]+)")
    assert wpb.findall(pretrained) == wpb.findall(scratch)


def test_every_run_records_its_command_and_whether_it_shared_the_machine(smoke):
    _, _, _, state = smoke
    trainings = [key for key in state["stages"] if key.split("-")[0] in
                 ("mlm", "adapt", "length", "transformer", "cmlm")]
    assert {"mlm-mini", "mlm-micro", "mlm-tiny", "adapt-mini-pretrained", "adapt-mini-scratch",
            "adapt-mini-mlm10", "adapt-mini-converged", "length-mini-pretrained", "length-mini-converged",
            "transformer-mini", "cmlm-mini", "transformer-mini-converged"} <= set(trainings)
    for key in trainings:
        run = state["stages"][key]
        assert run["command"].startswith("OMP_NUM_THREADS=1 ")
        assert run["wall_s"] > 0 and run["cpu_s"] > 0 and isinstance(run["shared"], bool)


def test_claim_b_scales_with_pretraining_compute_and_size(smoke):
    workdir, _, output, state = smoke
    compute = rows(output, r"\d+( \(from scratch\))?")
    assert [row[0] for row in compute] == ["0 (from scratch)", "10", "30"]  # --smoke's points
    assert all(len(row) == 6 for row in compute) and compute[0][1] == "0.00"
    # each point adapts from the masked LM's checkpoint kept at that update, the last from its end
    stages = state["stages"]
    assert re.search(r"--pretrained-mlm \S+/mlm-mini/checkpoint_\d+_10\.pt", stages["adapt-mini-mlm10"]["command"])
    assert "--pretrained-mlm" not in stages["adapt-mini-scratch"]["command"]
    sizes = rows(output, r"(micro|mini|tiny) \(\d+ × \d+\)")
    assert [row[0].split()[0] for row in sizes] == ["micro", "mini", "tiny"]  # ordered by parameters
    assert all(len(row) == 8 and row[2] == "20" for row in sizes)
    # every size's masked LM on the first size's schedule (--total-num-update), stopped at 20 updates
    for size in ("micro", "tiny"):
        command = stages[f"mlm-{size}"]["command"]
        assert "--total-num-update 30" in command and "--max-update 20" in command
    assert "--total-num-update 30" in stages["mlm-mini"]["command"]
    for picture in ("scaling_compute.png", "scaling_size.png", "samplers.png", "time_to_quality.png"):
        assert (workdir / picture).stat().st_size > 0 and f"(img/{picture})" in output


def test_claim_c_compares_length_beams_with_the_oracle_length(smoke):
    _, _, output, _ = smoke
    beams = rows(output, r"mini")  # claim c's two tables: BLEU, then the length analysis
    headers = [line for line in output.splitlines() if line.startswith("| size | candidate")]
    assert "| LB 1 | LB 3 | oracle length |" in headers[0]  # --smoke: length beams 1 and 3
    assert "| length error LB 1 | length error LB 3 |" in headers[1]
    assert "LB 3, the candidate nearest the reference length" in headers[1]
    assert [row[1] for row in beams] == ["score", "joint"] * 2
    assert [len(row) for row in beams] == [7] * 2 + [6] * 2  # the first with BLEU flickr_val (LB 3)
    assert all(re.fullmatch(r"[+-][\d.]+", cell) for row in beams[2:] for cell in row[2:4])


def test_claim_d_at_equal_time_and_at_convergence(smoke):
    _, _, output, state = smoke
    systems = rows(output, r"diffusion \(masked LM, then adapted\)|the same, `--collapse-repeats`|"
                           r"distilled track .*|fairseq (transformer|cmlm_transformer), .*|converged: .*")
    assert [row[0][:24] for row in systems] == [
        "diffusion (masked LM, th", "the same, `--collapse-re", "distilled track (not the",
        "fairseq transformer, bea", "fairseq cmlm_transformer", "converged: diffusion (ma",
        "converged: fairseq trans"]
    assert all(len(row) == 12 for row in systems)
    assert re.search(r"`python -m benchmarks\.reproduce --smoke --distill --extra-test flickr_val=\S+ --claim d`",
                     output)
    # a ratio over a baseline of 0 BLEU (a toy run can) names the baseline in brackets
    assert re.search(r"at equal training time: " + RATIO + r"( \([^)]*\))?; at convergence: " + RATIO, output)
    assert "### Time to quality" in output and "### Examples (test2016)" in output
    stages = state["stages"]
    # fairseq's models of equal time trained for the (from-scratch) adaptation's CPU time
    seconds = stages["adapt-mini-scratch"]["cpu_total_s"]
    for key in ("transformer-mini", "cmlm-mini"):
        assert f"--stop-time-hours {seconds / 3600:.6f}" in stages[key]["command"]
    assert "--arch cmlm_transformer" in stages["cmlm-mini"]["command"]
    # the converged runs: validation BLEU, patience, the best checkpoint
    for key, decoding in (("adapt-mini-converged", '"oracle_length": true'),
                          ("transformer-mini-converged", '"beam": 5')):
        command = stages[key]["command"]
        assert "--patience 2 " in command and "--best-checkpoint-metric bleu" in command and decoding in command
    assert "adapt-mini-converged/checkpoint_best.pt" in stages["length-mini-converged"]["command"]
    curves = rows(output, r"(adapt|transformer)-mini-converged")
    assert [row[0] for row in curves] == ["adapt-mini-converged", "transformer-mini-converged"]
    assert all(re.fullmatch(r"[\d.]+ min: [\d.]+", row[1]) for row in curves)


def test_claim_e_decodes_with_every_sampler_at_every_step_count(smoke):
    _, _, output, state = smoke
    samplers = rows(output, r"`[\w.-]+`")
    assert [(row[0].strip("`"), row[1]) for row in samplers] == [
        (strategy, "3") for strategy in SAMPLERS]  # --smoke's steps
    assert all(len(row) == 9 and re.fullmatch(r"[\d.]+%", row[5])
               and re.fullmatch(r"alone|shared \(generate-.*\)", row[8]) for row in samplers)
    assert len(rows(output, r"fairseq transformer \(converged\), beam 5")) == 1
    for strategy in SAMPLERS:
        command = state["stages"][f"generate-mini-converged-lb3-{strategy}-K3-test"]["command"]
        assert command.endswith(f"--decoding-strategy {strategy} --iter-decode-max-iter 3")


def test_a_ratio_over_a_zero_baseline_names_the_baseline_instead_of_printing_inf():
    assert bold_ratio(30.0, 20.0, "the transformer") == "**1.50×**"
    assert bold_ratio(3.0, 0.0, "the transformer") == "**—** (the transformer scored 0.00 BLEU)"


def test_a_second_run_resumes_without_training_again(smoke):
    workdir, _, _, state = smoke
    before = {key: value.get("finished") for key, value in state["stages"].items()
              if isinstance(value, dict)}
    output = reproduce(workdir, "a")
    after = json.loads((workdir / "state.json").read_text())["stages"]
    assert {key: after[key].get("finished") for key in before} == before
    assert "## (a) Pretrained vs from scratch" in output


def test_a_run_sums_the_invocations_stopped_before_it(tmp_path):
    args = argparse.Namespace(workdir=tmp_path, smoke=True, seed=1, threads=1)
    pipe = Pipeline(args)
    progress = tmp_path / "progress" / "busy.json"
    progress.parent.mkdir()
    stopped = {"wall_s": 50.0, "cpu_s": 40.0, "peak_load": 3.0, "shared": True}
    progress.write_text(json.dumps([stopped]))  # an invocation killed before it finished
    # busy for 0.3 s of CPU time whatever the machine's speed (a fixed loop rounded to 0.0 on CI)
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    run = pipe.run("busy", [sys.executable, "-c", busy])
    assert run["invocations"] == 2 and run["shared"] is True
    assert run["cpu_total_s"] == round(40.0 + run["cpu_s"], 1) and run["cpu_s"] >= 0.2
    assert run["wall_total_s"] >= 50.0 + run["wall_s"] - 0.1
    assert not progress.exists()
    assert run["command"].startswith("OMP_NUM_THREADS=1 ")


@pytest.mark.parametrize("stage", ["mlm-huge", "adapt-tiny", "length-mini-warm", "transformer-tiny-scratch",
                                   "cmlm-mini-converged", "adapt-mini-mlm"])
def test_train_first_names_a_training_stage(stage):
    result = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.reproduce", "--train-first", stage],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert f"--train-first: {stage!r} is not a training stage" in result.stderr


def test_the_distilled_track_adapts_the_masked_lm_on_the_transformers_translations(smoke):
    workdir, _, output, state = smoke
    assert re.search(r"Distilled track / autoregressive: " + RATIO, output)
    stage = state["stages"]["distill-mini"]
    assert stage["pairs"] == 1000 and stage["command"].startswith("OMP_NUM_THREADS=1 ")
    translations = state["stages"]["generate-transformer-mini-train"]["hypotheses"]
    assert len(translations) == 1000
    targets = (workdir / "text" / "distill-mini" / "train.en").read_text(encoding="utf-8").splitlines()
    references = (MULTI30K / "train.en").read_text(encoding="utf-8").splitlines()[:1000]
    assert [t == (translations[str(i)] if translations[str(i)].strip() else references[i])
            for i, t in enumerate(targets)] == [True] * 1000
    assert stage["changed"] == sum(t != r for t, r in zip(targets, references)) > 0
    adaptation = state["stages"]["adapt-mini-distilled"]["command"]
    assert "data-bin/de-en-distilled-mini" in adaptation and "--pretrained-mlm" in adaptation
    assert "data-bin/de-en-distilled-mini" in state["stages"]["length-mini-distilled"]["command"]


def test_extra_test_scores_every_model_of_each_claim(smoke):
    workdir, first, rest, state = smoke
    prefix = state["stages"]["data-extra-flickr_val"]["prefix"]
    headers = [line for line in (first + rest).splitlines() if "BLEU flickr_val" in line]
    assert [line.split(" | ")[0] for line in headers] == [
        "| init", "| masked-LM updates", "| size", "| size", "| system", "| sampler (`--decoding-strategy`)"]
    claim_b = rows(rest, r"\d+( \(from scratch\))?|(micro|mini|tiny) \(\d+ × \d+\)")
    claim_c = [row for row in rows(rest, r"mini") if len(row) == 7]
    claim_d = rows(rest, r"fairseq (transformer|cmlm_transformer), .*|diffusion.*|the same.*|distilled.*|converged: .*")
    claim_e = rows(rest, r"`[\w.-]+`|fairseq transformer \(converged\), beam 5")
    assert (len(claim_b), len(claim_c), len(claim_d), len(claim_e)) == (6, 2, 7, 7)
    cells = [row[5] for row in rows(first, r"masked LM, then adapted|from scratch")]
    cells += [row[4] for row in claim_b[:3]] + [row[6] for row in claim_b[3:] + claim_c + claim_d]
    cells += [row[3] for row in claim_e]
    assert all(re.fullmatch(r"\d+\.\d\d", cell) for cell in cells), cells
    # each decoding read the test set binarized with the run's dictionary, all of its lines
    decodes = {key: run for key, run in state["stages"].items()
               if key.startswith("generate-") and key.endswith("-extra-flickr_val")}
    assert {"generate-mini-pretrained-lb3-extra-flickr_val", "generate-mini-scratch-lb3-extra-flickr_val",
            "generate-transformer-mini-extra-flickr_val", "generate-cmlm-mini-extra-flickr_val"} <= set(decodes)
    for key, run in decodes.items():
        assert len(run["hypotheses"]) == 20 and run["command"].startswith("OMP_NUM_THREADS=1 ")
        raw = "-raw" if "transformer" in key or "cmlm" in key else ""
        assert f"data-bin/extra-flickr_val{raw} " in run["command"]
    assert prefix.endswith("val20") and (workdir / "data-bin" / "extra-flickr_val" / "dict.en.txt").is_file()


def test_extra_test_names_one_pair_of_parallel_files(tmp_path):
    (tmp_path / "t.de").write_text("a\nb\n")
    (tmp_path / "t.en").write_text("a\n")
    for text, message in ((f"{tmp_path}/t", "give NAME=PREFIX"), (f"x={tmp_path}/none", "none.de is not a file"),
                          (f"x={tmp_path}/t", "t.de has 2 lines and")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            extra_test(text)
    (tmp_path / "t.en").write_text("a\nb\n")
    assert extra_test(f"held_out={tmp_path}/t") == f"held_out={tmp_path}/t"


@pytest.mark.parametrize("options, message", [
    (["--samplers", "bogus"], "argument --samplers: --decoding-strategy 'bogus' is not understood"),
    (["--scaling-points", "0", "3000"], "each needs a kept masked-LM checkpoint, a multiple of --mlm-keep-every 2000"),
])
def test_samplers_and_scaling_points_are_checked_before_anything_runs(options, message, tmp_path):
    result = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.reproduce", *options, "--workdir", str(tmp_path / "work"), "--claim"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "work").exists()
