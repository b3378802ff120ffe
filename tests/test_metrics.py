"""diffusion_plugin/metrics.py against hand-computed cases."""

from decimal import Decimal

import pytest

from helpers import ROOT
from diffusion_plugin import metrics


def test_exact_match_compares_whole_answers_with_explicit_lowercasing():
    hyps = [" b ", "(A)", "AB", "", "Paris"]
    refs = ["B", "A", "A", "A", "paris"]
    assert metrics.exact_matches(hyps, refs, lowercase=True) == [True, False, False, False, True]
    assert metrics.exact_matches(hyps, refs, lowercase=False) == [False, False, False, False, False]
    assert metrics.exact_matches([" B "], ["B"], lowercase=False) == [True]


def test_multi_token_answer_letters_match_after_detokenization():
    # "(B)" is three sentencepiece pieces; the comparison is on the detokenized string
    assert metrics.exact_matches(["(b)", "( B )"], ["(B)", "(B)"], lowercase=True) == [True, False]


def test_grouped_accuracy_micro_and_macro():
    correct = [True, False, False, False, True]
    groups = ["a", "a", "a", "a", "b"]
    result = metrics.grouped_accuracy(correct, groups)
    assert result["micro"] == pytest.approx(40.0)  # 2 of 5
    assert result["macro"] == pytest.approx(62.5)  # (25 + 100) / 2
    assert result["groups"] == {"a": {"accuracy": 25.0, "examples": 4}, "b": {"accuracy": 100.0, "examples": 1}}


@pytest.mark.parametrize(
    "text, integer, decimal",
    [
        ("so she makes 1,234 dollars.", 1234, 1234),
        ("3 apples, then 12", 12, 12),
        ("# # # # 18", 18, 18),
        ("it costs 2.50 or -3", 3, -3),
        ("1,000,000", 1000000, 1000000),
        ("18.0", 0, 18),
        ("$18.00", 0, 18),
        ("5.5", 5, Decimal("5.5")),
        ("18-20", 20, -20),
        ("no digits", None, None),
        ("", None, None),
    ],
)
def test_last_number_by_the_papers_integer_rule_and_the_decimal_option(text, integer, decimal):
    assert metrics.last_number(text) == integer
    assert metrics.last_number(text, "decimal") == decimal


def test_number_matches_compare_values_and_reject_references_without_number():
    hyps = ["the answer is 1,200", "1200.0", "", "12 then 13", "-1200"]
    refs = ["# # 1200", "# # 1200", "# # 5", "# # 12", "# # 1200"]
    assert metrics.number_matches(hyps, refs) == [True, False, False, False, True]
    assert metrics.number_matches(hyps, refs, "decimal") == [True, True, False, False, False]
    with pytest.raises(ValueError, match="no number"):
        metrics.number_matches(["1"], ["# # #"])
    with pytest.raises(ValueError, match="choose from"):
        metrics.number_matches(["1"], ["1"], "float")


def test_decoded_text_cleans_up_tokenization_spaces_as_transformers_does():
    assert metrics.decoded_text(" It 's that pyramid , is n't it ? ") == "it's that pyramid, isn't it?"
    # in transformers' order: " ." goes before " ' " is looked for
    assert metrics.decoded_text("We 're here ! I 'm ' fine ' .") == "we're here! i'm'fine '."
    assert metrics.decoded_text("It 's", lowercase=False, clean_up=False) == "It 's"


def test_bleu_lowercasing_and_tokenizer_are_in_the_signature():
    hyps, refs = ["The Cat sat on the Mat ."], ["the cat sat on the mat ."]
    lowered = metrics.bleu(hyps, refs, tokenize="13a", lowercase=True)
    assert lowered["score"] == pytest.approx(100.0)
    assert "case:lc" in lowered["signature"] and "tok:13a" in lowered["signature"]
    cased = metrics.bleu(hyps, refs, tokenize="intl", lowercase=False)
    assert cased["score"] < 100.0 and "case:mixed" in cased["signature"] and "tok:intl" in cased["signature"]
    assert metrics.bleu([""], refs, tokenize="13a", lowercase=True)["score"] == 0.0


def test_rouge_hand_computed_with_a_tied_longest_common_subsequence():
    # LCS of "a b c d" and "a c b d" has length 3 two ways (a b d, a c d): P = R = 3/4
    scores = metrics.rouge(["a b c d"], ["a c b d"])
    assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 0.0, "rougeL": 75.0})


def test_rouge_is_asymmetric_in_the_right_direction_and_empty_output_scores_zero():
    # hypothesis "a b" against reference "a b c d": P = 1, R = 1/2, F = 2/3
    scores = metrics.rouge(["a b", ""], ["a b c d", "a b"])
    assert scores["rouge1"] == pytest.approx(100 * (2 / 3) / 2)
    assert scores["rouge2"] == pytest.approx(100 * (2 * 1 * (1 / 3) / (1 + 1 / 3)) / 2)
    sums = metrics.rouge_sums(["", ""], ["x", "y"])
    assert sums == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_stems_as_py_rouge_does():
    # py-rouge: lower-cased, [^a-z0-9] -> space, WordNet exceptions (went -> go, mice ->
    # mouse), else Porter stems of words longer than 3 characters; "cannot" stays whole
    tokenizer = metrics.PyRougeTokenizer()
    assert tokenizer.tokenize("Police ARRESTED five anti-nuclear protesters, who went home.") == [
        "polic", "arrest", "five", "anti", "nuclear", "protest", "who", "go", "home"]
    assert tokenizer.tokenize("Mice cannot swim; wanna see?") == ["mouse", "cannot", "swim", "wan", "na", "see"]
    assert tokenizer.tokenize("x" * 700) == ["x" * 665]
    scores = metrics.rouge(["police arrest protesters"], ["Police arrested the protesters."])
    # stems: polic arrest protest / polic arrest the protest: LCS 3, P = 1, R = 3/4
    assert scores["rougeL"] == pytest.approx(100 * 2 * 0.75 / 1.75)
    unstemmed = metrics.rouge(["police arrest protesters"], ["Police arrested the protesters."], "rouge-score")
    assert unstemmed["rougeL"] == pytest.approx(100 * 2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    with pytest.raises(ValueError, match="choose from"):
        metrics.rouge(["a"], ["a"], "perl")


def test_rouge_of_the_gigaword_lead_baseline_is_py_rouges():
    # 20.1697 is py-rouge 1.1's ROUGE-L of lead-8 (benchmarks/rouge_agreement.py, docs/INSTRUCT.md)
    data = ROOT.parent / "shared" / "data" / "gigaword"
    if not data.is_dir():
        pytest.skip(f"the shared Gigaword test set is not at {data}")
    sources = (data / "test.src").read_text(encoding="utf-8").splitlines()
    references = (data / "test.tgt").read_text(encoding="utf-8").splitlines()
    lead = [" ".join(s.split()[:8]) for s in sources]
    assert metrics.rouge(lead, references)["rougeL"] == pytest.approx(20.1697, abs=5e-5)
    assert metrics.rouge(lead, references, "rouge-score")["rougeL"] == pytest.approx(18.2125, abs=5e-5)


def gigaword_test_pairs():
    data = ROOT.parent / "shared" / "data" / "gigaword"
    if not data.is_dir():
        pytest.skip(f"the shared Gigaword test set is not at {data}")
    return [(data / f"test.{side}").read_text(encoding="utf-8").splitlines() for side in ("src", "tgt")]


def corrupted(text):
    """``text`` with every third word dropped and its first two words swapped."""
    words = [w for i, w in enumerate(text.split()) if i % 3 != 2]
    return " ".join(words[1:2] + words[:1] + words[2:])


def scored(scorer, hyps, refs):
    for hyp, ref in zip(hyps, refs):
        scorer.add_string(ref, hyp)
    return scorer


@pytest.mark.parametrize("tokenizer", ["py-rouge", "rouge-score"])
def test_fairseq_scorer_rouge_equals_the_default_rule_on_gigaword(tokenizer):
    # fairseq-generate --scoring rouge builds the plugin's scorer from fairseq's registry
    from argparse import Namespace

    from fairseq.scoring import build_scorer

    sources, references = gigaword_test_pairs()
    choice = Namespace(scoring="rouge", rouge_tokenizer=tokenizer)
    for hyps in (references, [corrupted(r) for r in references], [" ".join(s.split()[:8]) for s in sources]):
        expected = metrics.rouge(hyps, references, tokenizer)
        scorer = scored(build_scorer(choice, None), hyps, references)
        assert scorer.score() == expected["rougeL"]
        assert f"ROUGE-L = {expected['rougeL']:.2f} (F1 %, {tokenizer} words, {len(references)} examples)" in (
            scorer.result_string())
        assert scorer.scores() == expected
    assert metrics.rouge(references, references, tokenizer)["rougeL"] == pytest.approx(100.0)
    assert build_scorer("rouge", None).cfg.rouge_tokenizer == "py-rouge"  # the paper's words by default


def test_fairseq_scorer_rouge_equals_the_default_rule_case_by_case():
    from fairseq.scoring import build_scorer

    _, references = gigaword_test_pairs()
    for ref in references[::4]:
        for hyp in (ref, corrupted(ref)):
            assert scored(build_scorer("rouge", None), [hyp], [ref]).score() == metrics.rouge([hyp], [ref])["rougeL"]


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        metrics.rouge(["a", "b"], ["a"])
