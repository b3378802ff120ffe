"""python -m diffusion_plugin.options lists every option of the plugin, and docs/OPTIONS.md is its output."""

import sys
from dataclasses import fields

import pytest
from fairseq.tasks.translation import TranslationConfig

from diffusion_plugin import options
from diffusion_plugin.criterions.length_prediction import LengthPredictionCriterionConfig
from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterionConfig
from diffusion_plugin.models.diffusion_xlmr import DiffusionXLMRConfig
from diffusion_plugin.tasks.prompted_translation import PromptedTranslationConfig
from helpers import ROOT, run

OPTIONS_DOC = ROOT / "docs" / "OPTIONS.md"


def plugin_flags():
    """Every flag of the plugin's dataclasses: all fields but the task's inherited ones
    (those of fairseq's TranslationConfig that it does not redeclare) and ``seed``,
    which mirrors fairseq's --seed."""
    inherited = {f.name for f in fields(TranslationConfig)} - {"max_positions", "truncate_source"}
    names = [f.name for f in fields(PromptedTranslationConfig) if f.name not in inherited | {"seed"}]
    for config in (DiffusionXLMRConfig, MaskedDiffusionCriterionConfig, LengthPredictionCriterionConfig):
        names += [f.name for f in fields(config) if f.name != "_name"]
    return {"--" + name.replace("_", "-") for name in names}


def test_docs_options_is_current():
    expected = options.as_markdown(options.options())
    assert OPTIONS_DOC.read_text(encoding="utf-8") == expected, (
        "docs/OPTIONS.md is out of date: python -m diffusion_plugin.options > docs/OPTIONS.md"
    )


def test_every_field_is_listed_once_with_its_help():
    groups = options.options()
    for _, rows in groups:  # --max-positions is both the task's and the model's
        assert len({flag for flag, *_ in rows}) == len(rows)
    listed = [row for _, rows in groups for row in rows]
    flags = [flag for flag, *_ in listed]
    assert plugin_flags() <= set(flags), plugin_flags() - set(flags)
    assert {"--iter-decode-max-iter", "--iter-decode-with-beam", "--temperature"} <= set(flags)
    assert all(help_text for *_, help_text in listed), [flag for flag, *_, h in listed if not h]
    doc = OPTIONS_DOC.read_text(encoding="utf-8")
    assert all(f"| `{flag}` |" in doc for flag in plugin_flags())


@pytest.mark.slow  # a subprocess
def test_the_command_prints_docs_options():
    text = run([sys.executable, "-m", "diffusion_plugin.options"]).stdout
    assert text == OPTIONS_DOC.read_text(encoding="utf-8")
    assert "| `--guidance-scale` | `0.0` |" in text
    assert "| `--length-predictor` | `joint` (one of `joint`, `separate`) |" in text
