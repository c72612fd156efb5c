"""The task registry: every task name `deeprlm bench run --tasks` accepts."""

from __future__ import annotations

from deeprlm.bench.example import Task
from deeprlm.bench.tasks.aggregate import Aggregate
from deeprlm.bench.tasks.codeqa import CodeQA
from deeprlm.bench.tasks.multihop import Multihop
from deeprlm.bench.tasks.niah import Niah
from deeprlm.bench.tasks.pairs import Pairs
from deeprlm.errors import InputError

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
