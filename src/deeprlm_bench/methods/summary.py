"""`summary`: an iterative summarisation agent. The input is cut into chunks that fit the
window; the model reads them in order, each time rewriting its running notes with what
matters for the question; the last call answers from the notes alone. An input that fits
in one chunk is answered directly, as `base` would.
"""

from __future__ import annotations

import asyncio

from deeprlm.errors import LimitError
from deeprlm.textutil import CHARS_PER_TOKEN, estimate_tokens
from deeprlm_bench.example import Example
from deeprlm_bench.methods import direct
from deeprlm_bench.methods.common import REPLY_RESERVE, Calls, Outcome, Setup, TooLong

# When the window is unknown, chunks are this many tokens.
DEFAULT_CHUNK_TOKENS = 32_000

_NOTES = """Question: {query}

Your notes so far (from parts 1 to {done} of {total}):
{notes}

Part {part} of {total} of the text:
<<<
{chunk}
>>>

Rewrite your notes so that they keep everything from the old notes and from this part that \
could help answer the question: exact values, names, IDs, dates and running counts. Leave \
out what cannot matter. Reply with the notes only."""

_ANSWER = """Question: {query}

Your notes on the whole text, read part by part:
{notes}

Answer the question from these notes."""


def chunks(text: str, chunk_chars: int) -> list[str]:
    """Pieces of at most `chunk_chars`, cut at line breaks where there are any."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind("\n", start + chunk_chars // 2, end)
            end = cut + 1 if cut != -1 else end
        pieces.append(text[start:end])
        start = end
    return pieces


class Summary:
    name = "summary"

    def run(self, example: Example, setup: Setup) -> Outcome:
        return asyncio.run(self._run(example, setup))

    async def _run(self, example: Example, setup: Setup) -> Outcome:
        calls = Calls(setup)
        text = example.text()
        window = setup.window
        # Half the window for the chunk leaves room for the notes, the prompt and the reply.
        chunk_tokens = (window - REPLY_RESERVE) // 2 if window else DEFAULT_CHUNK_TOKENS
        try:
            if estimate_tokens(text) <= chunk_tokens:
                answer = await calls.complete(direct.prompt(example))
                return Outcome(answer, calls.usage(), iterations=1)
            parts = chunks(text, chunk_tokens * CHARS_PER_TOKEN)
            notes = "(none yet)"
            for i, chunk in enumerate(parts, 1):
                request = _NOTES.format(
                    query=example.query,
                    done=i - 1,
                    total=len(parts),
                    notes=notes,
                    part=i,
                    chunk=chunk,
                )
                notes = await calls.complete([{"role": "user", "content": request}])
            final = _ANSWER.format(query=example.query, notes=notes)
            answer = await calls.complete([{"role": "user", "content": final}])
        except (TooLong, LimitError) as err:
            return Outcome("", calls.usage(), iterations=calls.count, error=str(err))
        return Outcome(answer, calls.usage(), iterations=calls.count)
