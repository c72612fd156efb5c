"""`codeact`: a code-executing agent (CodeAct in a ReAct loop) that reads the input in its
prompt, with a BM25 retriever over chunks of the input as a tool.

Unlike an RLM it does not offload the input: the text is in the prompt. When the text is
too long for the window, the prompt keeps as much of its beginning as fits (half the
window, leaving the rest for the turns) and says so; `search` still reaches all of it.
The agent's code runs in the same in-process REPL the engine uses, without sub-calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from deeprlm.errors import LimitError
from deeprlm.lm.base import Message
from deeprlm.repl.base import REPLSettings
from deeprlm.repl.inprocess import InProcessREPL
from deeprlm.replies import parse_reply
from deeprlm.textutil import CHARS_PER_TOKEN, estimate_tokens
from deeprlm_bench.example import Example
from deeprlm_bench.methods.common import REPLY_RESERVE, Caller, Outcome, Setup, TooLong
from deeprlm_bench.methods.summary import chunks

CHUNK_CHARS = 1_500
AGENT_OUTPUT_CHARS = 4_000
CELL_TIMEOUT_S = 120.0
# Tokens kept free for the turns of the loop when the text fills the prompt.
TURN_ROOM = 4_096

SYSTEM = """You answer a question about a text. You can run Python: put code in ```python \
blocks and you will see what it prints (at most {output_chars:,} characters). Variables \
persist between blocks. One function is ready to use:
- search(query, k=5) -> str: BM25 keyword search over the text, which is cut into {chunks:,} \
chunks; returns the k best chunks with their numbers.
{shown}
When you know the answer, reply with FINAL(your answer) on its own line, outside code."""

_SHOWN_ALL = "The whole text is in the user's message."
_SHOWN_HEAD = (
    "The text is too long to show: the user's message holds only its first {shown:,} of "
    "{total:,} characters. Use search to reach the rest."
)


class BM25Index:
    """BM25 over the chunks of a text (the `bm25s` library), as the agent's `search`."""

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


class _NoSubCalls:
    """The REPL's host: this agent has no sub-model."""

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        raise RuntimeError("there is no sub-model here")

    async def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        raise RuntimeError("there is no sub-model here")

    async def rlm_query(self, query: str, context: Any = None) -> str:
        raise RuntimeError("there is no sub-model here")

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        raise RuntimeError("there is no sub-model here")


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
        caller = Caller(setup)
        text = example.text()
        pieces = chunks(text, CHUNK_CHARS)
        index = await asyncio.to_thread(BM25Index, pieces)
        repl = InProcessREPL()
        await repl.start(
            "",
            _NoSubCalls(),
            REPLSettings(max_output_chars=AGENT_OUTPUT_CHARS, tools={"search": index.search}),
        )
        messages = self._messages(example, text, setup, len(pieces))
        last = ""
        try:
            for turn in range(1, setup.limits.max_iterations + 1):
                last = await asyncio.to_thread(caller.complete, messages)
                messages.append({"role": "assistant", "content": last})
                reply = parse_reply(last)
                outputs = []
                for code in reply.code:
                    cell = await repl.run(code, self._cell_timeout(caller))
                    if cell.final is not None:
                        return Outcome(cell.final, caller.usage.report(), iterations=turn)
                    outputs.append(f"{cell.output}\n{cell.error or ''}".strip())
                    if cell.error:
                        break
                if reply.final is not None and not reply.code:
                    return Outcome(reply.final.argument, caller.usage.report(), iterations=turn)
                if not reply.code:
                    note = "Write ```python code to look further, or reply with FINAL(answer)."
                else:
                    note = "\n\n".join(o or "(nothing printed)" for o in outputs)
                messages.append({"role": "user", "content": note})
            return Outcome(
                last, caller.usage.report(), iterations=setup.limits.max_iterations,
                error="no FINAL answer within the iteration limit",
            )  # fmt: skip
        except (TooLong, LimitError) as err:
            return Outcome(last, caller.usage.report(), iterations=caller.calls, error=str(err))
        finally:
            await repl.close()

    @staticmethod
    def _cell_timeout(caller: Caller) -> float:
        left = caller.budget.remaining_s()
        return CELL_TIMEOUT_S if left is None else max(1.0, min(CELL_TIMEOUT_S, left))
