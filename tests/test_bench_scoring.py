"""Scorers on hand-worked answers, including OOLONG's parsing rules."""

import pytest

from deeprlm_bench import scoring


@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        ("Label: location", "location"),
        ("I counted carefully.\nLabel: **human being**", "human being"),
        ("The answer: 'entity'.", "entity"),
        ("Answer: 12: final: 14", "14"),
        ("no colon at all", "no colon at all"),
    ],
)
def test_after_last_colon(answer, parsed):
    assert scoring.after_last_colon(answer) == parsed


def test_oolong_numeric_decays_by_a_quarter_per_unit():
    assert scoring.oolong_numeric(10, "Answer: 10") == 1.0
    assert scoring.oolong_numeric(10, "Answer: 12") == pytest.approx(0.5625)
    assert scoring.oolong_numeric(10, "Answer: 7") == pytest.approx(0.75**3)
    assert scoring.oolong_numeric(1200, "Answer: 1,201") == pytest.approx(0.75)


def test_oolong_numeric_reads_only_after_the_last_colon():
    # The 10 before the colon is reasoning, not the answer.
    assert scoring.oolong_numeric(10, "I saw 10 of them. Answer: 11") == pytest.approx(0.75)
    assert scoring.oolong_numeric(10, "there are 10") == 1.0  # no colon: the whole text
    assert scoring.oolong_numeric(10, "Answer: many") == 0.0


def test_oolong_exact_is_case_insensitive_but_whole():
    assert scoring.oolong_exact("numeric value", "Label: Numeric Value") == 1.0
    assert scoring.oolong_exact("numeric value", "Label: numeric") == 0.0
    assert scoring.oolong_exact("48213", "User: 48213") == 1.0
    assert scoring.oolong_exact("48213", "User: 48213 and 55555") == 0.0


def test_oolong_comparison_needs_exactly_the_gold_relation():
    gold = "more common than"
    assert scoring.oolong_comparison(gold, "Answer: entity is more common than location") == 1.0
    assert scoring.oolong_comparison(gold, "Answer: entity is less common than location") == 0.0
    hedged = "Answer: more common than or less common than"
    assert scoring.oolong_comparison(gold, hedged) == 0.0


def test_parse_pairs_orders_unordered_pairs_and_drops_self_pairs():
    text = "(5, 3)\n(3,5)\n( 7 , 9 )\n(4, 4)\nsome words (10, 2)"
    assert scoring.parse_pairs(text) == {(3, 5), (7, 9), (2, 10)}
    assert scoring.parse_pairs(text, ordered=True) == {(5, 3), (3, 5), (7, 9), (10, 2)}


def test_f1_on_hand_worked_sets():
    gold = {(1, 2), (1, 3), (2, 3), (3, 4)}
    # 2 hits out of 3 predicted, 4 gold: P = 2/3, R = 1/2, F1 = 4/7.
    assert scoring.f1(gold, {(1, 2), (2, 3), (5, 6)}) == pytest.approx(4 / 7)
    assert scoring.f1(gold, gold) == 1.0
    assert scoring.f1(gold, set()) == 0.0
    assert scoring.f1(set(), set()) == 1.0


def test_normalized_exact_ignores_case_punctuation_articles_and_preamble():
    assert scoring.normalized_exact("Mara Okafor", "Answer: mara okafor.") == 1.0
    assert scoring.normalized_exact("The Glimmer", "glimmer") == 1.0
    assert scoring.normalized_exact("Varnholm", "I think the answer is: Varnholm") == 1.0
    assert scoring.normalized_exact("Varnholm", "Answer: Varnholm or Estport") == 0.0


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("Answer: C", "C"),
        ("The answer is (B).", "B"),
        ("I first thought A) but the answer is D", "D"),
        ("(A) looks wrong, (C) is right", "C"),
        ("B\nbecause it writes the key", "B"),
        ("the answer is a function", None),
        ("no idea", None),
    ],
)
def test_extract_letter(answer, letter):
    assert scoring.extract_letter(answer) == letter


def test_contains_is_ruler_string_match():
    assert scoring.contains("4417021", "The number is 4417021.") == 1.0
    assert scoring.contains("4417021", "The number is 441702.") == 0.0
