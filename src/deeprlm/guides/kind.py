"""What a kind of question is (`Kind`): the functions, steps and worked example a small
root is taught for it, what it is told after each output, and the first step the engine
runs for it; and the REPL functions as a small root is told of them (`FUNCTIONS`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deeprlm.context import ContextInfo
from deeprlm.repl.functions import REPL_FUNCTIONS

FOLLOW_UP = "If the output answers it, reply FINAL(answer). If not, write different code"


@dataclass(frozen=True)
class Kind:
    name: str
    # What the router reads to recognise the kind.
    description: str
    # The REPL functions the prompt shows (keys of `FUNCTIONS`), in order.
    functions: tuple[str, ...]
    steps: str
    example: str
    # Taught in the plain words of the look-up prompt (see `deeprlm.prompts`) rather than
    # the kinds' template.
    plain: bool = False
    # The example for the context's shape ("str", "list", "dict") and the question's words,
    # where its code or its condition follows them; else `example`.
    example_for: Callable[[str, str], str] | None = None
    # What a small root is told after each output, below the question.
    follow_up: str = FOLLOW_UP
    # What it is told after its first turn's output instead, where that differs (the
    # first step's output is never the answer): words, or made from the question.
    first_follow_up: str | Callable[[str], str] | None = None
    # How the kind is taught when a run allows no sub-calls, if not as above minus the
    # functions that make them.
    without_sub_calls: Kind | None = None
    # The code of the root's first turn, from the question and the context's description,
    # for a kind whose first step is always the same (None where the question does not say
    # enough to write it): it runs for the root, which reads its output and goes on.
    first_step: Callable[[str, ContextInfo], str | None] | None = None
    # The variable the kind's example leaves its answer in: a run whose turns end without
    # a final answer answers with it, if its code assigned it.
    answer_variable: str | None = None


def taught(kind: Kind, sub_calls: bool) -> Kind:
    """The kind as a run with (or without) sub-calls teaches it."""
    return kind if sub_calls or kind.without_sub_calls is None else kind.without_sub_calls


FUNCTIONS: dict[str, str] = {
    "search": "search(words, context) -> hits: the lines holding the words (any case), each "
    "with where it is (key, line) and the lines around it. print(hits) to read them.",
    "records": "records(context) -> rows: one dict per line, keyed by field name.",
    "parse_date": "parse_date(text) -> a date you can compare; it reads 'Mar 04, 2023', "
    "'2023-03-04' and other forms.",
    "run_code": "run_code(context, expression) -> the value of a Python expression such as "
    "'pkg.mod.f(2)', run with the files of `context` importable as modules.",
    "llm_classify": "llm_classify(texts, labels) -> one label per text, in order: a helper "
    "model reads each text and picks its label.",
    "llm_map": "llm_map(instruction, texts) -> one answer per text, in order: a helper "
    "model follows the instruction for each text.",
    "llm_query": "llm_query(prompt) -> str: asks a helper model. It cannot see `context`, so "
    "put the text it should read into the prompt.",
    "follow_chain": "follow_chain(question) -> str: the answer to a question that goes "
    "through other things ('the birthplace of the architect of X'): it searches `context` for "
    "each link in turn and a helper model reads what it finds.",
}
# The functions that make sub-calls, as the REPL-function table marks them.
SUB_CALL_FUNCTIONS = frozenset(f.name for f in REPL_FUNCTIONS if f.sub_call)
