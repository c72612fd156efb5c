"""`codeact`: a code-executing agent (CodeAct in a ReAct loop) that reads the input in its
prompt, with a BM25 retriever over chunks of the input as a tool.

Unlike an RLM it does not offload the input: the text is in the prompt. When the text is
too long for the window, the prompt keeps as much of its beginning as fits (half the
window, leaving the rest for the turns) and says so; `bm25_search` still reaches all of it.

It is the engine with other words: the same turn loop, metered calls and budget, and the
same in-process REPL, with `bm25_search` as its one tool (not the REPL's own `search`: a
baseline keeps to what it brings) and no sub-calls. Only what the model
is told differs (`CodeActWording`), and the loop ends on the last reply, without a forced
final turn, when the turns run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from deeprlm.engine import Run
from deeprlm.errors import LimitError
from deeprlm.lm.base import Message
from deeprlm.repl.base import Cell
from deeprlm.textutil import CHARS_PER_TOKEN, estimate_tokens
from deeprlm.trace.jsonl import JsonlSink
from deeprlm_bench.example import Example
from deeprlm_bench.methods.common import REPLY_RESERVE, Outcome, Setup, TooLong, shared_state
from deeprlm_bench.methods.summary import chunks

CHUNK_CHARS = 1_500
AGENT_OUTPUT_CHARS = 4_000
CELL_TIMEOUT_S = 120.0
# Tokens kept free for the turns of the loop when the text fills the prompt.
TURN_ROOM = 4_096

SYSTEM = """You answer a question about a text. You can run Python: put code in ```python \
blocks and you will see what it prints (at most {output_chars:,} characters). Variables \
persist between blocks. One function is ready to use:
- bm25_search(query, k=5) -> str: BM25 keyword search over the text, which is cut into {chunks:,} \
chunks; returns the k best chunks with their numbers.
{shown}
When you know the answer, reply with FINAL(your answer) on its own line, outside code."""

_SHOWN_ALL = "The whole text is in the user's message."
_SHOWN_HEAD = (
    "The text is too long to show: the user's message holds only its first {shown:,} of "
    "{total:,} characters. Use bm25_search to reach the rest."
)


class BM25Index:
    """BM25 over the chunks of a text (the `bm25s` library), as the agent's `bm25_search`."""

    def __init__(self, pieces: Sequence[str]) -> None:
        import bm25s

        self.pieces = list(pieces)
        self.retriever = bm25s.BM25()
        self.retriever.index(
            bm25s.tokenize(self.pieces, stopwords="en", show_progress=False),
            show_progress=False,
        )
        self._tokenize = bm25s.tokenize

    def search(self, query: str, k: int = 5) -> str:
        """The k chunks that best match the query, best first, each with its number."""
        k = max(1, min(int(k), len(self.pieces)))
        tokens = self._tokenize([str(query)], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return "(no searchable words in the query)"
        ids, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        found = [
            f"[chunk {int(i)}]\n{self.pieces[int(i)]}"
            for i, score in zip(ids[0], scores[0], strict=True)
            if score > 0
        ]
        return "\n\n".join(found) or "(no chunk matches)"


class CodeActWording:
    """What the agent is told: the text and the question first, then the plain output of
    its code after each turn."""

    def __init__(self, opening: list[Message]) -> None:
        self._opening = opening

    def opening(self) -> list[Message]:
        return list(self._opening)

    def first_move(self) -> None:
        return None

    def after_cells(self, cells: Sequence[Cell], notes: Sequence[str], iteration: int) -> str:
        outputs = [f"{c.output}\n{c.error or ''}".strip() or "(nothing printed)" for c in cells]
        return "\n\n".join([*outputs, *notes])

    def no_code(self) -> str:
        return "Write ```python code to look further, or reply with FINAL(answer)."

    def forced_final(self) -> None:
        return None

    # The baseline keeps the plain loop: FINAL ends it, the turns bound it.
    bare_reply_answers = False
    answer_lead: str | None = None
    answer_variable: str | None = None
    forced_answer_as_json = False
    first_block_only = False
    repeat_ends_turns = False
    answers_need_output = False


class CodeAct:
    name = "codeact"

    def run(self, example: Example, setup: Setup) -> Outcome:
        return asyncio.run(self._run(example, setup))

    def _messages(self, example: Example, text: str, setup: Setup, n_chunks: int) -> list[Message]:
        frame = SYSTEM.format(output_chars=AGENT_OUTPUT_CHARS, chunks=n_chunks, shown="")
        fixed = estimate_tokens(frame) + estimate_tokens(example.query) + REPLY_RESERVE + TURN_ROOM
        shown = _SHOWN_ALL
        if setup.window is not None and estimate_tokens(text) + fixed > setup.window:
            keep = max(0, setup.window // 2) * CHARS_PER_TOKEN
            shown = _SHOWN_HEAD.format(shown=min(keep, len(text)), total=len(text))
            text = text[:keep]
        system = SYSTEM.format(output_chars=AGENT_OUTPUT_CHARS, chunks=n_chunks, shown=shown)
        user = f"Text:\n<<<\n{text}\n>>>\n\nQuestion: {example.query}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    async def _run(self, example: Example, setup: Setup) -> Outcome:
        text = example.text()
        pieces = chunks(text, CHUNK_CHARS)
        index = await asyncio.to_thread(BM25Index, pieces)
        settings = replace(
            setup.settings,
            repl="inprocess",
            allow_sub_calls=False,
            cell_timeout_s=CELL_TIMEOUT_S,
            max_output_chars=AGENT_OUTPUT_CHARS,
        )
        trace = JsonlSink(setup.trace_path) if setup.trace_path is not None else None
        shared = shared_state(setup, settings, trace, tools={"bm25_search": index.search})
        wording = CodeActWording(self._messages(example, text, setup, len(pieces)))
        # The text is in the prompt, not in the REPL: `context` there is empty.
        run = Run(shared, example.query, "", wording=wording)
        try:
            outcome = await run.execute()
        except (TooLong, LimitError) as err:
            usage = shared.usage.report()
            return Outcome(run.partial(), usage, iterations=run.iterations, error=str(err))
        finally:
            if trace is not None:
                trace.close()
        usage = shared.usage.report()
        if outcome.forced:
            error = "no FINAL answer within the iteration limit"
            return Outcome(outcome.answer, usage, iterations=outcome.iterations, error=error)
        return Outcome(outcome.answer, usage, iterations=outcome.iterations)
