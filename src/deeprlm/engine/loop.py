"""The turn loop: model reply -> code blocks -> REPL cells -> their output -> next turn.

The loop knows neither the model nor the REPL: it is handed a way to ask the model
(`Ask`), a way to run a block of code (`RunCell`), and the `Wording` of what it says
between turns. A run of the engine gives it the RLM prompts; the codeact baseline gives it
its own. It ends at the first final answer it accepts, or, when the turns run out, after
one forced last turn. An answer it is given a way to judge (`Accept`, a typed answer's
schema) and that is refused goes back to the model with the reason, and the loop goes on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from deeprlm import prompts
from deeprlm.lm.base import Message
from deeprlm.repl.base import Cell
from deeprlm.replies import Reply, parse_reply

# (messages, purpose) -> the model's reply text; purpose is "root" or "forced".
Ask = Callable[[list[Message], str], Awaitable[str]]
# (code, iteration) -> the cell it ran as.
RunCell = Callable[[str, int], Awaitable[Cell]]
# Called after each cell; raises to stop the loop (a budget ran out inside the cell).
AfterCell = Callable[[], None]
# A traceback names its cell ("<cell 3>"): the same error in the next cell is the same.
_CELL_NAME = re.compile(r"<cell \d+>")
# A final answer -> None to accept it, or what to tell the model about it; raises when it
# has refused enough.
Accept = Callable[[str], str | None]


@dataclass(frozen=True)
class Outcome:
    answer: str
    iterations: int
    forced: bool  # the turns ran out before a final answer
    value: Any = None  # a typed answer's parsed value (`answer` is then its JSON)


class Wording(Protocol):
    """What the loop says to the model."""

    def opening(self) -> list[Message]:
        """The first messages: the system prompt and the question."""
        ...

    def after_cells(self, cells: Sequence[Cell], notes: Sequence[str], iteration: int) -> str:
        """The message after a turn that ran code: its output, and notes from the loop."""
        ...

    def no_code(self) -> str:
        """The message after a turn with neither code nor a final answer."""
        ...

    def forced_final(self) -> str | None:
        """The message asking for an answer when the turns are used up; None ends the loop
        on the last reply instead."""
        ...

    # How the loop treats a model that does not say FINAL when it has its answer (a small
    # one): a reply with neither code nor FINAL, after it has seen output, is its answer
    # (`bare_reply_answers`); the same code again with the same output ends the turns
    # and asks for the answer at once (`repeat_ends_turns`), as running out of turns does.
    bare_reply_answers: bool
    repeat_ends_turns: bool


class TurnLoop:
    def __init__(
        self,
        ask: Ask,
        run_cell: RunCell,
        wording: Wording,
        *,
        max_iterations: int,
        after_cell: AfterCell | None = None,
        accept: Accept | None = None,
    ) -> None:
        self._ask_model = ask
        self._run_cell = run_cell
        self._after_cell = after_cell
        self._accept = accept
        self.wording = wording
        self.max_iterations = max_iterations
        self.iterations = 0
        self.last_reply = ""
        self.answer_content = ""  # the REPL's `answer["content"]`, kept even when not ready

    def partial(self) -> str:
        """The best answer available if the loop has to stop early."""
        return self.answer_content or self.last_reply

    async def run(self) -> Outcome:
        messages = self.wording.opening()
        previous: tuple[tuple[str, ...], list[str]] | None = None
        seen_output = False
        for iteration in range(1, self.max_iterations + 1):
            self.iterations = iteration
            reply = parse_reply(await self._ask(messages, "root"))
            final, cells, notes = await self._act(reply, iteration)
            bare = not reply.code and reply.final is None and self.last_reply.strip()
            if bare and seen_output and self.wording.bare_reply_answers:
                final = self.last_reply.strip()
            seen_output = seen_output or bool(cells)
            if final is not None:
                refused = self._refusal(final)
                if refused is None:
                    return Outcome(final, iteration, forced=False)
                notes.append(refused)
            seen = (reply.code, [_CELL_NAME.sub("<cell>", f"{c.output}{c.error}") for c in cells])
            if cells and seen == previous:
                if self.wording.repeat_ends_turns:
                    return await self._force_final(messages)
                notes.append(prompts.REPEATED_NOTE)
            previous = seen
            if not cells and not notes:
                content = self.wording.no_code()
            else:
                content = self.wording.after_cells(cells, notes, iteration)
            messages.append({"role": "user", "content": content})
        return await self._force_final(messages)

    async def _act(self, reply: Reply, iteration: int) -> tuple[str | None, list[Cell], list[str]]:
        """Runs a reply's code blocks and resolves its final tag. Returns the final answer
        (if the reply ended the run), the cells that ran and notes for the model."""
        cells: list[Cell] = []
        notes: list[str] = []
        for code in reply.code:
            cell = await self._cell(code, iteration)
            if cell.final is not None:
                return cell.final, cells, notes
            cells.append(cell)
            if cell.error:
                break  # later blocks usually build on this one
        tag = reply.final
        if tag is None:
            return None, cells, notes
        if tag.is_variable:
            cell = await self._cell(f"FINAL_VAR({tag.argument!r})", iteration)
            if cell.final is not None:
                return cell.final, cells, notes
            cells.append(cell)
        elif not reply.code:
            return tag.argument, cells, notes
        else:
            notes.append(prompts.HELD_FINAL_NOTE)
        return None, cells, notes

    async def _force_final(self, messages: list[Message]) -> Outcome:
        request = self.wording.forced_final()
        if request is None:
            return Outcome(self.last_reply, self.iterations, forced=True)
        while True:
            messages.append({"role": "user", "content": request})
            reply = await self._ask(messages, "forced")
            parsed = parse_reply(reply, tag_anywhere=True)
            answer = None
            if parsed.final is not None and parsed.final.is_variable:
                cell = await self._cell(f"FINAL_VAR({parsed.final.argument!r})", self.iterations)
                answer = cell.final
            elif parsed.final is not None:
                answer = parsed.final.argument
            if answer is None:
                answer = self.answer_content or reply.strip()
            refused = self._refusal(answer)
            if refused is None:
                return Outcome(answer, self.iterations, forced=True)
            # Bounded by `accept`, which raises once it has refused enough.
            request = f"{refused}\n\n{self.wording.forced_final()}"

    def _refusal(self, answer: str) -> str | None:
        return None if self._accept is None else self._accept(answer)

    async def _ask(self, messages: list[Message], purpose: str) -> str:
        text = await self._ask_model(messages, purpose)
        messages.append({"role": "assistant", "content": text})
        self.last_reply = text
        return text

    async def _cell(self, code: str, iteration: int) -> Cell:
        cell = await self._run_cell(code, iteration)
        if cell.answer_content:
            self.answer_content = cell.answer_content
        if self._after_cell is not None:
            self._after_cell()
        return cell
