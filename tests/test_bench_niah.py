"""niah: the needle is where the info says, once, with the gold value."""

import re

import pytest

from deeprlm_bench.demo import main as demo_main
from deeprlm_bench.tasks.niah import Niah, hidden_fact

NEEDLE = re.compile(r"One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.")


@pytest.mark.parametrize("seed", range(5))
def test_single_needle_holds_the_gold_at_its_depth(seed):
    example = Niah().generate(seed, 8192)
    found = NEEDLE.findall(example.context)
    assert found == [(example.info["key"], example.gold)]
    position = example.context.index(example.gold) / len(example.context)
    assert abs(position - example.info["depth"]) < 0.02
    assert example.info["key"] in example.query


@pytest.mark.parametrize("seed", range(5))
def test_distractor_needles_carry_other_keys_and_values(seed):
    example = Niah(distractors=4).generate(seed, 8192)
    found = dict(NEEDLE.findall(example.context))
    key = example.info["key"]
    assert len(found) == 5
    assert found[key] == example.gold
    assert len(set(found.values())) == 5
    adjective, noun = key.split("-")
    others = [k for k in found if k != key]
    # Near misses: one distractor shares the adjective, one the noun.
    assert any(k.startswith(adjective + "-") for k in others)
    assert any(k.endswith("-" + noun) for k in others)


def test_score_is_whether_the_value_appears():
    example = Niah().generate(3, 2048)
    assert Niah().score(example, f"It is {example.gold}.") == 1.0
    assert Niah().score(example, "It is 1234567.") == (1.0 if example.gold == "1234567" else 0.0)


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_a_chosen_depth_places_the_needle_there(depth):
    example = Niah(depth=depth).generate(11, 8192)
    position = example.context.index(example.gold) / len(example.context)
    assert abs(position - depth) < 0.02
    assert example.info["depth"] == depth


@pytest.mark.parametrize("seed", range(8))
def test_a_hidden_fact_sits_once_at_its_depth_in_the_same_prose(seed):
    case = hidden_fact(50_000, depth=0.3, seed=seed)
    assert 49_000 < len(case.text) <= 50_000
    assert case.text.count(case.needle) == 1 and case.answer in case.needle
    assert abs(case.needle_at / len(case.text) - 0.3) < 0.02
    # Every capitalised word of the question but its first (names, places) is found in the
    # needle alone: looking for it finds the fact, and nothing else does.
    names = [w.strip("?") for w in case.query.split()[1:] if w[:1].isupper()]
    assert names and all(case.text.count(name) == case.needle.count(name) for name in names)
    assert hidden_fact(50_000, depth=0.3, seed=seed) == case


def test_the_demo_context_is_written_with_its_question(tmp_path, capsys):
    out, query = tmp_path / "demo" / "context.txt", tmp_path / "demo" / "query.txt"
    assert demo_main(["--chars", "20000", "--out", str(out), "--query-out", str(query)]) == 0
    case = hidden_fact(20_000, depth=0.62, seed=7)
    assert out.read_text() == case.text and query.read_text() == case.query
    printed = capsys.readouterr()
    assert printed.out.strip() == case.query
    assert f"expected answer {case.answer}" in printed.err
