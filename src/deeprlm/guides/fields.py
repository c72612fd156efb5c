"""Reading the records' fields from the context's description (`deeprlm.shape`): the one
that holds free text (`text_field`) and one the question names that takes a few values
(`stated_field`)."""

from __future__ import annotations

import re

from deeprlm.context import ContextInfo

_FIELD = re.compile(r"([A-Za-z][\w .'/-]{0,30}?): <([^>]*)>")
_CHOICES = "one of: "


def text_field(info: ContextInfo) -> str | None:
    """The one field of the records that holds free text (what a label is judged from), by
    the name the records give it; None when there is no such field or more than one."""
    if not info.structure.startswith("One record per line"):
        return None
    texts = [name for name, kind in _FIELD.findall(info.structure) if _free_text(kind)]
    return texts[0] if len(texts) == 1 else None


def _free_text(kind: str) -> bool:
    # A short sample of varied texts reads as a few choices: "<one of: ...>" is text when
    # its values are sentences rather than words.
    if kind == "text":
        return True
    if not kind.startswith(_CHOICES):
        return False
    values = kind[len(_CHOICES) :].split(", ")
    return sum(len(value.split()) >= 4 for value in values) * 2 > len(values)


def stated_field(query: str, structure: str) -> str | None:
    """A field of the records that takes a few values (a label, a category) and that the
    question names, by the field's name or by one of its values."""
    lowered = query.lower()
    for name, kind in _FIELD.findall(structure):
        if not kind.startswith(_CHOICES) or _free_text(kind):
            continue
        values = [v.strip() for v in kind[len(_CHOICES) :].split(",")]
        named = re.search(rf"\b{re.escape(name.lower())}s?\b", lowered)
        if named or any(len(v) > 2 and v.lower() in lowered for v in values):
            return name
    return None
