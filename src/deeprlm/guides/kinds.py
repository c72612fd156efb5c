"""The one table of kinds (`KINDS`), in the order a router lists them, and what a run
asks of the kind it picked: its follow-up, first step, answer variable, functions, steps
and example, as a run with or without sub-calls teaches them."""

from __future__ import annotations

from deeprlm.context import ContextInfo
from deeprlm.guides import code, counts, lookups, pairs
from deeprlm.guides.kind import FOLLOW_UP, SUB_CALL_FUNCTIONS, Kind, taught

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        lookups.LOOKUP,
        counts.COUNT,
        counts.JUDGE,
        pairs.PAIRS,
        pairs.ORDERED_PAIRS,
        lookups.CHAIN,
        code.CODE,
        code.RUN,
    )
}
DEFAULT_KIND = "lookup"


def _taught_named(kind: str | None, sub_calls: bool) -> Kind | None:
    """The kind of that name as the run teaches it; None for no kind or an unknown one."""
    found = KINDS.get(kind) if kind else None
    return taught(found, sub_calls) if found is not None else None


def follow_up_of(
    kind: str | None, sub_calls: bool = True, first: bool = False, query: str = ""
) -> str:
    """What a small root is told after an output (`first`: its first turn's)."""
    found = _taught_named(kind, sub_calls)
    if found is None:
        return FOLLOW_UP
    if first and found.first_follow_up is not None:
        told = found.first_follow_up
        return told if isinstance(told, str) else told(query)
    return found.follow_up


def answer_variable_of(kind: str | None, sub_calls: bool) -> str | None:
    found = _taught_named(kind, sub_calls)
    return found.answer_variable if found is not None else None


def functions_of(kind: Kind, sub_calls: bool) -> list[str]:
    names = taught(kind, sub_calls).functions
    return [name for name in names if sub_calls or name not in SUB_CALL_FUNCTIONS]


def first_step_of(kind: str | None, sub_calls: bool, query: str, info: ContextInfo) -> str | None:
    found = _taught_named(kind, sub_calls)
    step = found.first_step if found is not None else None
    return step(query, info) if step is not None else None


def steps_of(kind: Kind, sub_calls: bool) -> str:
    return taught(kind, sub_calls).steps


def example_of(kind: Kind, sub_calls: bool, shape: str = "str", query: str = "") -> str:
    kind = taught(kind, sub_calls)
    return kind.example_for(shape, query) if kind.example_for is not None else kind.example
