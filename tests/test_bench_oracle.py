"""The oracle (scripted root, gold sub-model) scores 1.0 on every family, through the real
engine: generators, scorers and engine agree. `deeprlm bench run --methods oracle --lengths
10m` is the same check at full scale."""

import pytest

from deeprlm.lm.scripted import ScriptedLM
from deeprlm_bench.example import example_seed
from deeprlm_bench.methods import METHODS, Setup
from deeprlm_bench.methods.oracle import sub_reply
from deeprlm_bench.methods.oracle_solvers import FIELD_REQUEST, LABEL_REQUEST
from deeprlm_bench.tasks import TASKS

UNUSED = ScriptedLM(["unused"])


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("length", [2048, 8192])
def test_oracle_scores_one(name, length):
    task = TASKS[name]
    example = task.generate(example_seed(0, name, length, 0), length)
    outcome = METHODS["oracle"].run(example, Setup(UNUSED, UNUSED))
    assert outcome.error is None
    assert task.score(example, outcome.answer) == 1.0, outcome.answer[:200]


def test_oracle_sub_model_answers_labels_and_facts():
    labels = sub_reply(
        LABEL_REQUEST.format(
            labels="...", items="0: What does KRTV stand for?\n1: Who invented the telephone?"
        )
    )
    assert labels.splitlines() == ["0: abbreviation", "1: human being"]
    doc = "Kiton\nKiton is a city in Corvania, on the Dorwe river. It was founded in 1227."
    assert sub_reply(FIELD_REQUEST.format(doc=doc, field="river")) == "Dorwe"
    assert sub_reply(FIELD_REQUEST.format(doc=doc, field="country")) == "Corvania"


def test_a_wrong_sub_model_makes_the_oracle_fail():
    # The score rests on the sub-model's labels: with a sub-model that calls every question
    # an entity, the oracle names "entity" as the most common label, which is wrong here.
    from deeprlm.rlm import RLM
    from deeprlm_bench.methods.oracle import root_policy

    task = TASKS["aggregate"]
    example = next(
        e
        for e in (task.generate(s, 2048) for s in range(60))
        if e.info["kind"] == "most_common" and e.gold != "entity"
    )

    def liar(messages):
        items = messages[-1]["content"].split("\n\n", 1)[1].splitlines()
        return "\n".join(f"{line.split(':')[0]}: entity" for line in items)

    root = ScriptedLM(root_policy(example))
    result = RLM(root, ScriptedLM(liar), max_iterations=2).run(example.query, example.context)
    assert result.answer == "Label: entity"
    assert task.score(example, result.answer) == 0.0
