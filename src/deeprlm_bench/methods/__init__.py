"""The method registry: every name `deeprlm bench run --methods` accepts."""

from __future__ import annotations

from deeprlm.errors import InputError
from deeprlm_bench.methods.base import Base
from deeprlm_bench.methods.codeact import CodeAct
from deeprlm_bench.methods.common import Limits, Method, Outcome, Setup
from deeprlm_bench.methods.oracle import Oracle
from deeprlm_bench.methods.rlm import RLMMethod
from deeprlm_bench.methods.summary import Summary

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Base(),
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


__all__ = ["METHODS", "MODEL_FREE", "Limits", "Method", "Outcome", "Setup", "get_method"]
