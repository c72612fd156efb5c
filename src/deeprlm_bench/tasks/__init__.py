"""The task registry: every task name `deeprlm bench run --tasks` accepts."""

from __future__ import annotations

from deeprlm.errors import InputError
from deeprlm_bench.example import Task
from deeprlm_bench.tasks.aggregate import Aggregate
from deeprlm_bench.tasks.codeqa import CodeQA
from deeprlm_bench.tasks.multihop import Multihop
from deeprlm_bench.tasks.niah import Niah
from deeprlm_bench.tasks.pairs import Pairs

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Niah(),
        Niah(distractors=4),
        Aggregate(),
        Aggregate(labelled=True),
        Pairs(),
        Pairs(labelled=True),
        Multihop(),
        CodeQA(),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
