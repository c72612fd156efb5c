"""Properties every task generator must have: same seed -> same bytes, the target length
within 5%, and a scorer that gives the gold answer full marks."""

import json

import pytest

from deeprlm.errors import InputError
from deeprlm.textutil import estimate_tokens
from deeprlm_bench.example import Example, example_seed
from deeprlm_bench.tasks import TASKS, get_task


def as_bytes(example: Example) -> bytes:
    return json.dumps(
        [example.context, example.query, example.gold, dict(example.info)], sort_keys=True
    ).encode()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_bytes_and_other_seed_other_bytes(name):
    task = TASKS[name]
    first = task.generate(1234, 4096)
    assert as_bytes(first) == as_bytes(task.generate(1234, 4096))
    assert as_bytes(first) != as_bytes(task.generate(1235, 4096))


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("length", [2048, 5000, 16384])
def test_length_within_five_percent(name, length):
    for seed in range(3):
        example = TASKS[name].generate(seed, length)
        assert example.length == length
        assert abs(estimate_tokens(example.text()) - length) <= 0.05 * length


@pytest.mark.parametrize("name", sorted(TASKS))
def test_gold_answer_scores_one(name):
    # The gold written the way each query asks for its answer.
    task = TASKS[name]
    for seed in range(5):
        example = task.generate(seed, 4096)
        gold = example.gold
        if isinstance(gold, list):
            answer = "\n".join(f"({a}, {b})" for a, b in gold)
        elif name.startswith("aggregate") and example.info["kind"].startswith("compare"):
            answer = f"Answer: {example.info['a']} is {gold} {example.info['b']}"
        else:
            answer = f"Answer: {gold}"
        assert task.score(example, answer) == 1.0
        assert task.score(example, "Answer: I do not know") < 1.0


def test_example_seed_depends_on_every_coordinate():
    seeds = {
        example_seed(0, "niah", 8192, 0),
        example_seed(1, "niah", 8192, 0),
        example_seed(0, "pairs", 8192, 0),
        example_seed(0, "niah", 16384, 0),
        example_seed(0, "niah", 8192, 1),
    }
    assert len(seeds) == 5


def test_unknown_task_and_too_short_lengths_are_input_errors():
    with pytest.raises(InputError, match="unknown task"):
        get_task("haystack")
    with pytest.raises(InputError, match="at least 2k"):
        TASKS["multihop"].generate(0, 1024)
    with pytest.raises(InputError, match="at least 2k"):
        TASKS["codeqa"].generate(0, 1024)
