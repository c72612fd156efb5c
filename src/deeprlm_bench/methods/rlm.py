"""`rlm` and `rlm-nosub`: the engine itself, with and without sub-calls (the paper's
ablation: the input still lives in the REPL, but the root must do everything in code)."""

from __future__ import annotations

from dataclasses import replace

from deeprlm.errors import LimitError
from deeprlm.rlm import RLM
from deeprlm_bench.example import Example
from deeprlm_bench.methods.common import Outcome, Setup


class RLMMethod:
    def __init__(self, name: str, *, allow_sub_calls: bool) -> None:
        self.name = name
        self.allow_sub_calls = allow_sub_calls

    def run(self, example: Example, setup: Setup) -> Outcome:
        settings = replace(setup.settings, allow_sub_calls=self.allow_sub_calls)
        rlm = RLM(setup.model, setup.sub_model, trace_path=setup.trace_path, **settings.to_dict())
        try:
            result = rlm.run(example.query, example.context)
        except LimitError as err:
            if err.result is None:
                raise
            # A run stopped by the budget is scored on its partial answer.
            r = err.result
            return Outcome(r.answer, r.usage, r.iterations, r.sub_calls, error=str(err))
        return Outcome(result.answer, result.usage, result.iterations, result.sub_calls)
