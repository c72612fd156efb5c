"""Picking the kind of a question (`pick_kind`) from the context's structure and the
question's words."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deeprlm.context import ContextInfo
from deeprlm.guides.fields import stated_field
from deeprlm.guides.kinds import DEFAULT_KIND
from deeprlm.guides.pairs import ASKS_ORDERED_PAIRS, ASKS_PAIRS

SOURCE_SUFFIXES = (
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".go", ".rs", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".rb", ".php", ".cs", ".kt", ".swift", ".scala", ".sh", ".lua", ".pl", ".m",
)  # fmt: skip
# A call written in the question, such as `pkg.mod.f(2)`: a question for running code.
_CALL = re.compile(r"\b[A-Za-z_][\w.]*\.[A-Za-z_]\w*\([^()]*\)")
# "the founder of the sponsor of ...": a thing described through another, which may take
# more than one look-up. A question without it ("Where is the spare key?") is a look-up.
_RELATION = re.compile(r"\bof (?:the|its|their|his|her)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Pick:
    kind: str
    why: str  # for the trace


def pick_kind(query: str, info: ContextInfo) -> Pick:
    """The kind of question, from the context's structure and the question's words."""
    if info.kind == "dict" and _mostly_source(info.keys):
        if _CALL.search(query):
            return Pick("run", "source files, and the question names a call")
        return Pick("code", "the context is source files")
    if info.structure.startswith("One record per line"):
        if ASKS_ORDERED_PAIRS.search(query):
            return Pick("ordered pairs", "records, and the question asks for ordered pairs")
        if ASKS_PAIRS.search(query):
            return Pick("pairs", "records, and the question asks for pairs")
        stated = stated_field(query, info.structure)
        if stated:
            return Pick("count", f"records, and the question names their field {stated!r}")
        return Pick("judge", "records, and no field of theirs states what the question asks")
    if _RELATION.search(query):
        return Pick("chain", "the question describes what it asks through another thing")
    return Pick(DEFAULT_KIND, "text without a record format or source files")


def _mostly_source(keys: Sequence[str]) -> bool:
    code = sum(key.lower().endswith(SOURCE_SUFFIXES) for key in keys)
    return bool(keys) and code * 2 >= len(keys)
