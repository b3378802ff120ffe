"""scripts/rehearse_recipes.py: every command examples/paper/train.sh prints, for the four
tasks at tiny size on CPU (only the CHANGES the script lists), from the prepare scripts to
the score lines, and the XXL path up to FSDP; the stage-2 model keeps stage 1's weights."""

import re
import sys

import pytest
import torch

from helpers import ROOT, SCRIPTS, run

pytestmark = pytest.mark.slow  # about 4 minutes on 2 shared cores


def test_every_recipe_command_runs_at_tiny_size(tmp_path):
    work = tmp_path / "rehearsal"
    result = run([sys.executable, SCRIPTS / "rehearse_recipes.py", "--workdir", work,
                  "--data", ROOT.parent / "shared" / "data"])
    out = result.stdout
    for task in ("iwslt14", "wmt14"):
        assert len(re.findall(rf"^{task} base: Generate test with .*BLEU\S* = [\d.]+", out, re.M)) == 2
    assert len(re.findall(r"^gigaword10k base: Generate test with beam=\d+: ROUGE-1 = [\d.]+, ROUGE-2 = [\d.]+, "
                          r"ROUGE-L = [\d.]+ \(F1 %, py-rouge words, 16 examples\)$", out, re.M)) == 2
    for name in ("mmlu", "bbh-nlp", "mgsm", "tydiqa", "iwslt14"):
        assert re.search(rf"^flan2022 base: {name}/0-shot: .* [\d.]+ on \d+ examples of \d+ files?$", out, re.M), name
    assert len(re.findall(r"^flan2022 base: ", out, re.M)) == 7  # 5 sets at oracle length, 2 length beams
    assert "iwslt14 xxl: converted, and trained from the converted checkpoint" in out
    for what in ("--bf16 replaced by --cpu", "--max-update 8", "--iter-decode-max-iter 4"):
        assert what in out  # the changes are listed

    for task, best in (("iwslt14", "checkpoint_best.pt"), ("flan2022", "checkpoint_last.pt")):
        stage1 = torch.load(work / "checkpoints" / f"{task}.base" / best, weights_only=False)["model"]
        stage2 = torch.load(work / "checkpoints" / f"{task}.base.length" / best, weights_only=False)["model"]
        assert any(name.startswith("length_predictor.") for name in stage2)
        # the separate predictor replaces stage 1's joint length head, which stage 2 does not keep
        backbone = {name: value for name, value in stage1.items() if not name.startswith("length_head.")}
        assert backbone and not any(name.startswith("length_head.") for name in stage2)
        for name, value in backbone.items():  # the frozen backbone: stage 1's selected weights
            assert torch.equal(stage2[name], value), name
    assert (work / "checkpoints" / "iwslt14.xxl" / "checkpoint_last.pt").exists()
