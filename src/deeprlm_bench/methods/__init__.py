"""The method registry: every name `deeprlm bench run --methods` accepts."""

from __future__ import annotations

from deeprlm.errors import InputError
from deeprlm_bench.methods.codeact import CodeAct
from deeprlm_bench.methods.common import BUDGET, Method, Outcome, Setup, budget_of
from deeprlm_bench.methods.direct import Direct
from deeprlm_bench.methods.oracle import Oracle
from deeprlm_bench.methods.rlm import RLMMethod
from deeprlm_bench.methods.summary import Summary

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Direct(),
        Summary(),
        CodeAct(),
        RLMMethod("rlm", allow_sub_calls=True),
        RLMMethod("rlm-nosub", allow_sub_calls=False),
        Oracle(),
    )
}

# Methods that need no model at all.
MODEL_FREE = frozenset({"oracle"})


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


__all__ = [
    "BUDGET",
    "METHODS",
    "MODEL_FREE",
    "Method",
    "Outcome",
    "Setup",
    "budget_of",
    "get_method",
]
