"""The turn loop: model reply -> code blocks -> REPL cells -> their output -> next turn.

The loop knows neither the model nor the REPL: it is handed a way to ask the model
(`Ask`), a way to run a block of code (`RunCell`), and the `Wording` of what it says
between turns. A run of the engine gives it the RLM prompts; the codeact baseline gives it
its own. It ends at the first final answer it accepts, or, when the turns run out, after
one forced last turn. An answer it is given a way to judge (`Accept`, a typed answer's
schema) and that is refused goes back to the model with the reason, and the loop goes on.

A conversation that grows past its `Compaction` limit (counted with the project's one
token estimate) has its older turns compacted before the next model call: they leave the
prompt, a short digest of each takes their place in the opening message, and the newest
turns stay whole. The trace keeps them all, since every call and cell was recorded as it
happened.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from deeprlm import prompts
from deeprlm.lm.base import Message
from deeprlm.primitives.search import STOP_WORDS
from deeprlm.repl.base import Cell
from deeprlm.replies import (
    FinalTag,
    Reply,
    is_placeholder,
    led_line,
    parse_reply,
    through_first_block,
)
from deeprlm.textutil import CHARS_PER_TOKEN, estimate_tokens


class Ask(Protocol):
    """(messages, purpose) -> the model's reply text; purpose is "root" or "forced".
    `schema`, when given, is a JSON Schema the reply must follow."""

    def __call__(
        self, messages: list[Message], purpose: str, schema: Mapping[str, Any] | None = None
    ) -> Awaitable[str]: ...


# The forced last reply of a wording that asks for it as JSON (`forced_answer_as_json`).
FORCED_ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1}},
    "required": ["answer"],
    "additionalProperties": False,
}

# (code, iteration) -> the cell it ran as.
RunCell = Callable[[str, int], Awaitable[Cell]]
# Called after each cell; raises to stop the loop (a budget ran out inside the cell).
AfterCell = Callable[[], None]
# A traceback names its cell ("<cell 3>"): the same error in the next cell is the same.
_CELL_NAME = re.compile(r"<cell \d+>")
# A final answer -> None to accept it, or what to tell the model about it; raises when it
# has refused enough.
Accept = Callable[[str], str | None]
# Called when turns were compacted: (first turn, last turn, tokens before, tokens after).
OnCompact = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class Compaction:
    """When the conversation passes `limit_tokens`, older turns are compacted; the newest
    `keep_turns` stay whole (fewer, down to one, if they alone are over the limit)."""

    limit_tokens: int
    keep_turns: int = 2

    @property
    def digest_chars(self) -> int:
        """How long the digest of compacted turns may grow: a quarter of the limit."""
        return max(2_000, self.limit_tokens * CHARS_PER_TOKEN // 4)


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

    def first_move(self) -> str | None:
        """Code to run as the model's first reply, or None to ask the model for it."""
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
    # one): a one-line reply with neither code nor FINAL, after it has seen output, is its
    # answer (`bare_reply_answers`); the same code a third time in a row with the same output,
    # or a second FINAL(answer) naming no answer, ends the turns and asks for the answer at
    # once (`repeat_ends_turns`), as running out of turns does.
    bare_reply_answers: bool
    repeat_ends_turns: bool
    # A small model writes on past its code block, guessing the output and its next step;
    # with `first_block_only` the reply ends where its first code block does.
    first_block_only: bool
    # A literal FINAL none of whose words its code has printed does not come from the
    # context: a small model whose search found nothing copies its worked example's answer.
    # Such an answer is sent back once with a note to look (`answers_need_output`), and so
    # is, once, a FINAL called by a cell that printed: written before the output was read.
    answers_need_output: bool
    # The forced last reply is held to `FORCED_ANSWER_SCHEMA`, {"answer": text}: a small
    # root's free reply there was a code fence begun ("```") or one word ("Label").
    forced_answer_as_json: bool
    # How the question says its answer begins ("Answer:"), if it does. A small root that
    # echoes its output and ends with "Answer: 94" has answered; a reply of several lines
    # is otherwise not taken for an answer.
    answer_lead: str | None
    # The variable the root was taught to leave its answer in (a pairs list), if any: when
    # the turns run out and its code assigned it, that is the answer, without the forced
    # reply (a small root's was a sentence made up beside pairs it had computed).
    answer_variable: str | None


# Words that say nothing about where an answer came from.
_PLAIN_WORDS = STOP_WORDS | {"answer", "not", "none", "yes", "true", "false"}
_WORD = re.compile(r"\w{3,}")
# What a cell printed is kept this far for the check; a small root's outputs are clipped
# to a few thousand characters a turn long before this.
_PRINTED_CHARS = 1_000_000


def assigned_names(code: str) -> set[str]:
    """The names `code` assigns (`x = ...`, `for x in ...`, `with ... as x`, ...)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }


def _declared_variable(code: Sequence[str], dropped: str) -> str | None:
    """The variable a reply named as its answer after its code blocks `code` (`FINAL_VAR("x")`,
    or `FINAL(x)` with `x` assigned by that code), in the part cut off as a guess. The 1.5B
    root wrote its pairs into `listed`, guessed the output and FINAL_VAR("listed"); cut off,
    it then reran the same code until its turns ran out and answered with three pairs."""
    tag = parse_reply(dropped, tag_anywhere=True).final
    if tag is None:
        return None
    name = tag.argument.strip().strip("\"'")
    return name if name.isidentifier() and name in assigned_names("\n".join(code)) else None


def _states_an_answer(reply: str) -> bool:
    """Whether a reply with neither code nor FINAL reads as an answer: one line, with a
    word in it. Replies of several lines were echoes of what the model was told (a
    traceback and the question, output lines and a line of its instructions) or the output
    it expected to see; a line without a letter or digit, or one that opens a code fence,
    was code begun and not written (the 1.5B root replied "```" after its counts, and the
    run answered "```")."""
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    if len(lines) != 1 or lines[0].startswith("```"):
        return False
    return any(char.isalnum() for char in lines[0])


def _json_answer(reply: str) -> str:
    """The answer of a reply held to `FORCED_ANSWER_SCHEMA` (also one cut off by the token
    limit inside its string); the reply as it stands when it is not that object (a model
    that could not be held to it)."""
    for text in (reply, reply.rstrip().rstrip("\\") + '"}'):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        answer = value.get("answer") if isinstance(value, dict) else None
        if isinstance(answer, str) and answer.strip():
            return answer
    return reply


class _Printed:
    """What a run's cells have printed so far, to tell an answer read from it from one
    made up."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._chars = 0

    @property
    def anything(self) -> bool:
        return self._chars > 0

    def add(self, outputs: Iterable[str]) -> None:
        for output in outputs:
            text = output.strip().lower()[: max(0, _PRINTED_CHARS - self._chars)]
            if text:
                self._text.append(text)
                self._chars += len(text)

    def shows(self, answer: str, lead: str | None = None) -> bool:
        """Whether any telling word of `answer` was printed (an answer without such words,
        a letter or a yes, is given the benefit of the doubt). The words of the question's
        lead ("User:") tell nothing: "User: 12345", made up, passed on the word "user"."""
        plain = _PLAIN_WORDS | set(_WORD.findall((lead or "").lower()))
        words = {w for w in _WORD.findall(answer.lower()) if w not in plain}
        if not words:
            return True
        text = "\n".join(self._text)
        return any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text) for w in words)


class TurnLoop:
    def __init__(
        self,
        ask: Ask,
        run_cell: RunCell,
        wording: Wording,
        *,
        max_iterations: int,
        after_cell: AfterCell | None = None,
        compaction: Compaction | None = None,
        on_compact: OnCompact | None = None,
        accept: Accept | None = None,
    ) -> None:
        self._ask_model = ask
        self._run_cell = run_cell
        self._after_cell = after_cell
        self._accept = accept
        self.wording = wording
        self.max_iterations = max_iterations
        self.compaction = compaction
        self._on_compact = on_compact
        self.iterations = 0
        self.last_reply = ""
        self.answer_content = ""  # the REPL's `answer["content"]`, kept even when not ready
        self._opening: list[Message] = []  # as first said, before any digest joined it
        self._digest: list[str] = []  # one entry per compacted turn, oldest first
        self._held_cell_final = False  # a FINAL from a cell that printed was held once
        self._assigned: set[str] = set()  # the variable names the model's code assigned

    def partial(self) -> str:
        """The best answer available if the loop has to stop early."""
        return self.answer_content or self.last_reply

    async def run(self) -> Outcome:
        messages = self.wording.opening()
        self._opening = [dict(m) for m in messages]
        previous: tuple[tuple[str, ...], list[str]] | None = None
        repeats = 0  # turns in a row that reran the last cell with the same output
        placeholders = 0  # FINAL(answer)-like replies so far
        # The code of a reply that named a variable as its answer before seeing its output,
        # and that name.
        declaration: tuple[tuple[str, ...], str] | None = None
        printed = _Printed()
        sent_to_look = False
        first_move = self.wording.first_move()
        for iteration in range(1, self.max_iterations + 1):
            self.iterations = iteration
            if iteration == 1 and first_move:
                text = self.last_reply = f"```repl\n{first_move}\n```"
                messages.append({"role": "assistant", "content": text})
            else:
                text = await self._ask(messages, "root")
            dropped = ""
            if self.wording.first_block_only:
                kept = through_first_block(text)
                dropped = text[len(kept) :]
                text = self.last_reply = kept
                messages[-1] = {"role": "assistant", "content": text}
            reply = parse_reply(text)
            declared = _declared_variable(reply.code, dropped) if dropped else None
            final, cells, notes = await self._act(reply, iteration)
            if declared and final is None and cells and not any(c.error for c in cells):
                notes.append(prompts.declared_answer_note(declared))
                declaration = (reply.code, declared)
            bare = not reply.code and reply.final is None and self.last_reply.strip()
            if bare and printed.anything and self.wording.bare_reply_answers:
                if _states_an_answer(self.last_reply):
                    final = self.last_reply.strip()
                else:
                    final = led_line(self.last_reply, self.wording.answer_lead)
            literal = (
                reply.final is not None and not reply.code and not self._names_variable(reply.final)
            )
            # The 1.5B root once replied FINAL(answer) with no `answer` assigned.
            if final is not None and literal and is_placeholder(final):
                placeholders += 1
                if placeholders > 1 and self.wording.repeat_ends_turns:
                    # Told once, the 1.5B root replied FINAL(answer) again to its last turn,
                    # where the forced reply, held to the answer's form, was right.
                    return await self._force_final(messages)
                notes.append(prompts.placeholder_note(final.strip()))
                final = None
            if (
                final is not None
                and literal
                and not sent_to_look
                and self.wording.answers_need_output
                and not printed.shows(final, self.wording.answer_lead)
            ):
                sent_to_look = True
                notes.append(prompts.unseen_answer_note(final, printed.anything))
                final = None
            printed.add(cell.output for cell in cells)
            if final is not None:
                refused = self._refusal(final)
                if refused is None:
                    return Outcome(final, iteration, forced=False)
                notes.append(refused)
            seen = (reply.code, [_CELL_NAME.sub("<cell>", f"{c.output}{c.error}") for c in cells])
            repeats = repeats + 1 if cells and seen == previous else 0
            if repeats and declaration is not None and declaration[0] == reply.code:
                # Told its output, it reran the code it had named an answer for instead of
                # naming it again (the 1.5B root, to its last turn): the name stands.
                cell = await self._variable_cell(declaration[1], iteration)
                if cell.final is not None and self._refusal(cell.final) is None:
                    return Outcome(cell.final, iteration, forced=False)
            if repeats:
                # Rerunning a cell that printed the same is asking for the answer it already
                # has, or being stuck on the way to it (a chain's next name not searched):
                # told once, the third run asks for the answer. Rerunning one that failed or
                # printed nothing needs the code changed, and a small root asked for its
                # answer then copies the worked example's.
                stuck = any(cell.error or not cell.output.strip() for cell in cells)
                if self.wording.repeat_ends_turns and not stuck and repeats > 1:
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
                if not (self.wording.answers_need_output and cell.output.strip()):
                    return cell.final, cells, notes
                if self._held_cell_final:
                    return cell.final, cells, notes
                # A small root's answer from the cell that printed what it should rest on:
                # written before it read a line of that output. Held once.
                self._held_cell_final = True
                cells.append(cell)
                notes.append(prompts.HELD_FINAL_NOTE)
                return None, cells, notes
            cells.append(cell)
            if cell.error:
                break  # later blocks usually build on this one
        tag = reply.final
        if tag is None:
            return None, cells, notes
        if self._names_variable(tag) and (tag.is_variable or not reply.code):
            cell = await self._variable_cell(tag.argument.strip(), iteration)
            if cell.final is not None:
                return cell.final, cells, notes
            cells.append(cell)
        elif not reply.code:
            return tag.argument, cells, notes
        else:
            notes.append(prompts.HELD_FINAL_NOTE)
        return None, cells, notes

    async def _force_final(self, messages: list[Message]) -> Outcome:
        name = self.wording.answer_variable
        if name and name in self._assigned:
            cell = await self._variable_cell(name, self.iterations)
            answer = cell.final
            if answer and not is_placeholder(answer) and self._refusal(answer) is None:
                return Outcome(answer, self.iterations, forced=True)
        request = self.wording.forced_final()
        if request is None:
            return Outcome(self.last_reply, self.iterations, forced=True)
        schema = FORCED_ANSWER_SCHEMA if self.wording.forced_answer_as_json else None
        while True:
            messages.append({"role": "user", "content": request})
            reply = await self._ask(messages, "forced", schema)
            if schema is not None:
                reply = _json_answer(reply)
                if reply.strip() in self._assigned:
                    # The name of a variable its code assigned, as FINAL(name) would be.
                    reply = f"FINAL({reply.strip()})"
            parsed = parse_reply(reply, tag_anywhere=True)
            answer = None
            if parsed.final is not None:
                answer = None if parsed.final.is_variable else parsed.final.argument
                if self._names_variable(parsed.final):
                    name = parsed.final.argument.strip()
                    cell = await self._variable_cell(name, self.iterations)
                    answer = cell.final if cell.final is not None else answer
            if answer is not None and is_placeholder(answer):
                answer = self.answer_content  # a name for an answer is none
            if answer is None:
                answer = led_line(reply, self.wording.answer_lead)
            if answer is None:
                answer = self.answer_content or reply.strip()
            refused = self._refusal(answer)
            if refused is None:
                return Outcome(answer, self.iterations, forced=True)
            # Bounded by `accept`, which raises once it has refused enough.
            request = f"{refused}\n\n{self.wording.forced_final()}"

    def _names_variable(self, tag: FinalTag) -> bool:
        """FINAL_VAR(name), or FINAL(name) after code that assigned `name`: the 1.5B root
        wrote `answer = "\\n".join(pairs)` then FINAL(answer), and the run answered with
        the word "answer"."""
        return tag.is_variable or tag.argument.strip() in self._assigned

    def _refusal(self, answer: str) -> str | None:
        return None if self._accept is None else self._accept(answer)

    async def _ask(
        self, messages: list[Message], purpose: str, schema: Mapping[str, Any] | None = None
    ) -> str:
        if self.compaction is not None:
            self._compact(messages, self.compaction)
        text = await self._ask_model(messages, purpose, schema)
        messages.append({"role": "assistant", "content": text})
        self.last_reply = text
        return text

    async def _variable_cell(self, name: str, iteration: int) -> Cell:
        """A cell that answers with the variable `name`, as the model's FINAL_VAR would: the
        loop runs one wherever a reply named a variable outside code."""
        return await self._cell(f"FINAL_VAR({name!r})", iteration)

    async def _cell(self, code: str, iteration: int) -> Cell:
        self._assigned |= assigned_names(code)
        cell = await self._run_cell(code, iteration)
        if cell.answer_content:
            self.answer_content = cell.answer_content
        if self._after_cell is not None:
            self._after_cell()
        return cell

    # --- compaction --------------------------------------------------------------------------

    def _compact(self, messages: list[Message], compaction: Compaction) -> None:
        """Compacts older turns in place when the conversation is over the limit."""
        before = _estimate(messages)
        if before <= compaction.limit_tokens:
            return
        opening = len(self._opening)
        tail = messages[opening:]
        # After the opening, each turn is a reply and the message that answered it; a
        # message asking for the forced answer may follow the last one.
        pairs = [tail[i : i + 2] for i in range(0, len(tail) - 1, 2)]
        extra = tail[len(pairs) * 2 :]
        done = len(self._digest)  # turns compacted so far
        chosen: list[Message] | None = None
        lines: list[str] = []
        for keep in range(min(compaction.keep_turns, len(pairs)), 0, -1):
            dropped = pairs[: len(pairs) - keep]
            if not dropped:
                continue  # all of them kept is what is over: keep fewer
            lines = [
                prompts.compacted_turn(done + n, pair[0]["content"], pair[1]["content"])
                for n, pair in enumerate(dropped, 1)
            ]
            kept = [m for pair in pairs[-keep:] for m in pair]
            # Whole recent turns are worth more than the digest of older ones: the digest
            # shrinks only once a single kept turn is all that is left.
            sizes = (compaction.digest_chars,) if keep > 1 else _shrinking(compaction.digest_chars)
            fits = False
            for digest_chars in sizes:
                head = self._opening_with([*self._digest, *lines], digest_chars)
                chosen = [*head, *kept, *extra]
                fits = _estimate(chosen) <= compaction.limit_tokens
                if fits:
                    break
            if fits:
                break
        if chosen is None:
            return
        self._digest.extend(lines)
        messages[:] = chosen
        if self._on_compact is not None:
            self._on_compact(done + 1, len(self._digest), before, _estimate(messages))

    def _opening_with(self, digest: list[str], limit: int) -> list[Message]:
        """The opening messages, the last one followed by the digest (its newest entries,
        as many as fit `limit` characters)."""
        shown: list[str] = []
        size = 0
        for line in reversed(digest):
            # The newest entry is shown even past `limit`, unless `limit` is 0: none.
            if size + len(line) > limit and (shown or not limit):
                break
            shown.append(line)
            size += len(line)
        shown.reverse()
        head = [dict(m) for m in self._opening]
        last = head[-1]
        note = prompts.compacted_turns(shown, omitted=len(digest) - len(shown))
        last["content"] = f"{last['content']}\n\n{note}"
        return head


def _shrinking(chars: int) -> tuple[int, ...]:
    """Digest sizes to try, from `chars` down to none."""
    return (chars, chars // 2, chars // 4, 0)


def _estimate(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) for m in messages)
