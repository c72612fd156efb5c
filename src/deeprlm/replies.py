"""Reading a model's reply: the code blocks to run and the final-answer tag, if any.

Code is what sits in ```repl or ```python fences (also ```py / ```python3), in order; a
fence left open at the end of the reply still counts, so truncated code reaches the REPL
and its error reaches the model. `FINAL(...)` / `FINAL_VAR(...)` on their own line outside
code end the run. Inside code they are ordinary function calls, except that a FINAL line
whose argument is not valid Python (`FINAL(the answer is 42)`, common with small models)
is lifted out of the code and treated as the tag it was meant to be.

A question may say how its answer begins ("in the form 'Answer: <number>'"): `answer_lead`
reads that lead, and `led_line` finds a reply's line that begins with it and gives a value.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_FENCE = re.compile(
    r"```[ \t]*(repl|python3?|py)[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL | re.IGNORECASE
)
_ANY_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
# `Final(...)` too, outside code: small models write it so.
_TAG = re.compile(r"^[ \t>*]*(FINAL_VAR|FINAL|Final_var|Final)\((.*)$", re.MULTILINE | re.DOTALL)
_TAG_ANYWHERE = re.compile(r"\b(FINAL_VAR|FINAL|Final_var|Final)\((.*)$", re.DOTALL)
_CODE_TAG_LINE = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)\((.*)\)[ \t;]*$")
# What the prompts write inside FINAL(...) as a placeholder, and small models copy.
_PLACEHOLDER = re.compile(
    r"^<?(your |the )?(final[ _]|best )?answer>?$|^result$|^\.\.\.$", re.IGNORECASE
)
# `FINAL(answer): Paris`: what follows a copied placeholder after a separator is the answer;
# words without one ("FINAL(answer) in its form") are the instruction's own, echoed.
_AFTER_PLACEHOLDER = re.compile(r"^[ \t]*[:=-]+[ \t]*(\S.*)")
# "... in the form 'Label: <label>'": the words before the first placeholder.
_STATED_FORM = re.compile(r"\bin the (?:form|format) ['\"]([^'\"<]*?)\s*<", re.IGNORECASE)


@dataclass(frozen=True)
class FinalTag:
    kind: str  # FINAL | FINAL_VAR
    argument: str  # the answer text, or the variable name for FINAL_VAR

    @property
    def is_variable(self) -> bool:
        return self.kind == "FINAL_VAR"


@dataclass(frozen=True)
class Reply:
    code: tuple[str, ...]
    final: FinalTag | None


def through_first_block(text: str) -> str:
    """The reply up to the end of its first code block (all of it if it has none). What a
    model writes after a block, before seeing the block's output, is a guess at that output
    and at its own next step: a small model's guesses then run as code."""
    for match in _FENCE.finditer(text):
        if match.group(2).strip():
            return text[: match.end()]
    return text


def parse_reply(text: str, *, tag_anywhere: bool = False) -> Reply:
    """`tag_anywhere` also accepts a FINAL tag in the middle of a line, for the forced last
    turn, where any answer is better than none."""
    blocks: list[str] = []
    lifted: FinalTag | None = None
    for match in _FENCE.finditer(text):
        code, tag = _lift_text_final(match.group(2))
        if code.strip():
            blocks.append(code)
        lifted = lifted or tag
    outside = _ANY_FENCE.sub("\n", text)
    pattern = _TAG_ANYWHERE if tag_anywhere else _TAG
    return Reply(code=tuple(blocks), final=_find_tag(outside, pattern) or lifted)


def _find_tag(text: str, pattern: re.Pattern[str]) -> FinalTag | None:
    match = pattern.search(text)
    if match is None:
        return None
    kind, rest = match.group(1).upper(), match.group(2)
    close = _matching_paren(rest)
    argument = rest[:close] if close is not None else rest.rstrip().removesuffix(")")
    if kind == "FINAL" and close is not None and is_placeholder(argument):
        after = _AFTER_PLACEHOLDER.match(rest[close + 1 :].split("\n", 1)[0])
        if after:
            return FinalTag(kind, _unquote(after.group(1).strip()))
    return FinalTag(kind, _unquote(argument.strip()))


def is_placeholder(answer: str) -> bool:
    """Whether an answer is a name for one ("answer", "your answer", "...") rather than one."""
    return bool(_PLACEHOLDER.match(answer.strip().strip("\"'`")))


def _matching_paren(text: str) -> int | None:
    """Index of the ')' closing an already-open '(' (quotes respected), else the last ')'."""
    depth, quote = 1, ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    last = text.rfind(")")
    return last if last >= 0 else None


def _unquote(argument: str) -> str:
    """`"42"` -> `42`: a literal argument means its value; anything else is taken as text."""
    try:
        value = ast.literal_eval(argument)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return argument
    return value if isinstance(value, str) else str(value)


def _lift_text_final(code: str) -> tuple[str, FinalTag | None]:
    try:
        ast.parse(code)
        return code, None
    except SyntaxError:
        pass
    kept: list[str] = []
    tag: FinalTag | None = None
    for line in code.splitlines():
        match = _CODE_TAG_LINE.match(line)
        if match and not _is_expression(match.group(2)):
            tag = FinalTag(match.group(1), match.group(2).strip())
            continue
        kept.append(line)
    return "\n".join(kept), tag


def _is_expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
        return True
    except SyntaxError:
        return False


def answer_lead(question: str) -> str | None:
    """The words a question says its answer begins with ("Answer:" of "in the form 'Answer:
    <number>'"), or None when it does not say."""
    found = _STATED_FORM.search(question)
    lead = found.group(1).strip() if found else ""
    return lead if any(char.isalnum() for char in lead) else None


def led_line(reply: str, lead: str | None) -> str | None:
    """The last line of `reply` that begins with `lead` (markdown emphasis aside) and gives
    a value after it: not nothing, not the form's own placeholder."""
    if not lead:
        return None
    for line in reversed(reply.splitlines()):
        text = line.strip().strip("*_`").strip()
        if not text.lower().startswith(lead.lower()):
            continue
        value = text[len(lead) :].strip()
        if any(char.isalnum() for char in value) and not value.startswith("<"):
            return text
    return None
