"""diffusion_plugin/metrics.py against hand-computed cases."""

from decimal import Decimal

import pytest

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
    "text, number",
    [
        ("so she makes 1,234 dollars.", Decimal(1234)),
        ("3 apples, then 12", Decimal(12)),
        ("# # # # 18", Decimal(18)),
        ("it costs 2.50 or -3", Decimal(-3)),
        ("1,000,000", Decimal(1000000)),
        ("no digits", None),
        ("", None),
    ],
)
def test_last_number(text, number):
    assert metrics.last_number(text) == number


def test_number_matches_compare_values_and_reject_references_without_number():
    hyps = ["the answer is 1,200", "1200.0", "", "12 then 13"]
    refs = ["# # 1200", "# # 1200", "# # 5", "# # 12"]
    assert metrics.number_matches(hyps, refs) == [True, True, False, False]
    with pytest.raises(ValueError, match="no number"):
        metrics.number_matches(["1"], ["# # #"])


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


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        metrics.rouge(["a", "b"], ["a"])
