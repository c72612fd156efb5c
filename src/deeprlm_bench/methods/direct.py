"""`base`, the paper's base model: the whole input in one prompt, the question after it, one
model call.

When the prompt cannot fit the model's window the method does not call the model: it
records why and scores 0, as the paper does for inputs beyond a base model's window.
"""

from __future__ import annotations

import asyncio

from deeprlm_bench.example import Example
from deeprlm_bench.methods.common import Calls, Outcome, Setup, TooLong

SYSTEM = "You are a helpful assistant. Answer the question about the text you are given."


def prompt(example: Example) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{example.text()}\n\n{example.query}"},
    ]


class Direct:
    name = "base"

    def run(self, example: Example, setup: Setup) -> Outcome:
        return asyncio.run(self._run(example, setup))

    async def _run(self, example: Example, setup: Setup) -> Outcome:
        calls = Calls(setup)
        try:
            answer = await calls.complete(prompt(example))
        except TooLong as err:
            return Outcome("", calls.usage(), error=str(err))
        return Outcome(answer, calls.usage(), iterations=1)
