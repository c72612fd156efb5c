"""`oracle`: the engine driven by a scripted root and an oracle sub-model, no real model.

The root's one reply is a code block holding the family's solver (see `oracle_solvers`);
the sub-model answers the solvers' requests from the gold: a question's class from the
question bank, a document's fact by reading the generator's own sentence templates. A
correct generator, scorer and engine therefore score 1.0 at any length, which is how this
method checks all three at full scale. It ignores the budget: it is a check, not a
contender.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Sequence

from deeprlm.lm.base import Message
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.rlm import RLM
from deeprlm_bench.banks.questions import label_of
from deeprlm_bench.example import Example
from deeprlm_bench.methods import oracle_solvers
from deeprlm_bench.methods.common import Outcome, Setup

# The fact a multihop document states, by the name the solver asks for it.
_FACTS = {
    "main sponsor": re.compile(r"Its main sponsor was (.+?)\.(?: |$)"),
    "founding year": re.compile(r"It was founded in (\d+) by "),
    "founder": re.compile(r" by (.+? \(born \d+\))\."),
    "headquarters city": re.compile(r"headquartered in (.+?)\. It was founded"),
    "birthplace": re.compile(r"born in \d+ in (.+?)\. "),
    "country": re.compile(r"is a city in (.+?), on the "),
    "river": re.compile(r", on the (.+?) river\."),
}
_ITEM = re.compile(r"^(\d+): (.+)$", re.MULTILINE)
_FIELD = re.compile(r"^Document:\n(.*)\n\nFrom this document, give only the (.+)\.$", re.DOTALL)


@functools.cache
def solver_source() -> str:
    return inspect.getsource(oracle_solvers)


def sub_reply(prompt: str) -> str:
    """The oracle sub-model: gold labels for a classification request, the stated fact for
    a document request."""
    if prompt.startswith(oracle_solvers.LABEL_REQUEST.split("{", 1)[0]):
        labels = label_of()
        items = prompt.split("\n\n", 1)[1]
        return "\n".join(f"{n}: {labels[q]}" for n, q in _ITEM.findall(items))
    field = _FIELD.match(prompt)
    if field is not None:
        found = _FACTS[field.group(2)].search(field.group(1))
        return found.group(1) if found else "not stated"
    return "I can only label questions and read document facts."


def _last_user_text(messages: Sequence[Message]) -> str:
    return str(messages[-1].get("content") or "")


def root_policy(example: Example):
    """The root's script: the solver on its first turn; if that failed, give up."""
    call = f"FINAL(solve({example.task!r}, context, {dict(example.info)!r}, llm_query, llm_batch))"
    code = f"```repl\n{solver_source()}\n\n{call}\n```"

    def policy(messages: Sequence[Message]) -> str:
        if any(m.get("role") == "assistant" for m in messages):
            return "FINAL(the oracle solver failed)"
        return code

    return policy


class Oracle:
    name = "oracle"

    def run(self, example: Example, setup: Setup) -> Outcome:
        root = ScriptedLM(root_policy(example), name="oracle-root")
        sub = ScriptedLM(lambda messages: sub_reply(_last_user_text(messages)), name="oracle-sub")
        rlm = RLM(
            root, sub, max_iterations=2, repl=setup.settings.repl, trace_path=setup.trace_path
        )
        result = rlm.run(example.query, example.context)
        return Outcome(result.answer, result.usage, result.iterations, result.sub_calls)
