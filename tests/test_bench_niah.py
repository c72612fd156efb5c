"""niah: the needle is where the info says, once, with the gold value."""

import re

import pytest

from deeprlm_bench.tasks.niah import Niah

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
