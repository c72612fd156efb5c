"""Reading a question's words: its quoted labels left out (`without_quoted`), the label
set it lists (`question_labels`), and its lettered choices (`lettered_choices`,
`choices_named`, `as_choice_letter`)."""

from __future__ import annotations

import re

from deeprlm.replies import answer_lead

# A quoted label, its quotes not inside a word: "the label 'most recent'" but not the
# apostrophe of "instance's", which paired with a later quote took a question's dates.
_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'(?!\w)|\"[^\"\n]*\"")


def without_quoted(words: str) -> str:
    """`words` without the labels they quote: a label's own words ('before or after',
    'most common') must not pick a form."""
    return _QUOTED.sub("", words)


# "... labelled with exactly one of these classes, by the kind of answer it asks for: a, b,
# c." The label set a question gives: after "one of" (or "labels", "classes", "categories")
# and a colon, to the sentence's end.
_LABEL_LIST = re.compile(
    r"\b(?:one of|labels|classes|categories)\b[^:.\n]{0,120}?:\s*([^\n]+?)(?:\.(?:\s|$)|\n|$)",
    re.I,
)
# A label the question asks about: "the label 'location'".
_NAMED_LABEL = re.compile(r"\b(?:label|class|category)\s+['\"‘“]([^'\"’”\n]{1,60})['\"’”]", re.I)


def question_labels(query: str) -> tuple[str, ...] | None:
    """The labels a question lists as the ones to choose from, or None when it lists none
    (or lists some that the labels it asks about are not among)."""
    for match in _LABEL_LIST.finditer(query):
        parts = [part.strip() for part in re.split(r"[,;]", match.group(1))]
        if len(parts) > 1 and re.search(r"\s+or\s+", parts[-1]):
            parts[-1:] = re.split(r"\s+or\s+", parts[-1])  # "a, b or c"
        labels = [_bare_label(part) for part in parts]
        labels = [label for label in labels if label]
        if not 2 <= len(labels) <= 30 or any(len(label) > 60 for label in labels):
            continue
        known = {label.lower() for label in labels}
        if len(known) != len(labels):
            continue
        if all(named.lower() in known for named in _NAMED_LABEL.findall(query)):
            return tuple(labels)
    return None


def _bare_label(part: str) -> str:
    return re.sub(r"^(?:and|or)\s+", "", part, flags=re.I).strip(" '\"‘’“”")


# Lettered choices, one per line: "A) ...", "(b) ...", "C. ...".
_CHOICES_LINE = re.compile(r"^[ \t]*\(?([A-Ha-h])[).][ \t]+(\S[^\n]*?)[ \t]*$", re.MULTILINE)


def lettered_choices(query: str) -> list[tuple[str, str]]:
    """The question's lettered choices, (letter, text), when it has two or more."""
    found = [(letter.upper(), text) for letter, text in _CHOICES_LINE.findall(query)]
    return found if len(found) >= 2 else []


def choices_named(query: str, output: str) -> list[tuple[str, str]]:
    """The question's choices that `output` names whole (`pkg.mod` is not named by
    `pkg.mod.func`): the small root read hits that named a choice and did not tell which
    letter that was."""
    return [
        (letter, text)
        for letter, text in lettered_choices(query)
        if len(text) > 2
        and re.search(rf"(?<![\w.]){re.escape(text)}(?![\w.]*\w)", output, re.IGNORECASE)
    ]


def as_choice_letter(query: str, answer: str) -> str | None:
    """`answer` in the question's lettered form, where it names one of the question's
    choices whole and no letter of them: the small root, having found the module a
    question asked for, replied with its name ("pkg.search.limits_2") instead of its letter
    ("Answer: B"). None where there is nothing to change."""
    choices = lettered_choices(query)
    if not choices or re.search(rf"\b[{''.join(letter for letter, _ in choices)}]\b", answer):
        return None
    named = choices_named(query, answer)
    if len(named) != 1:
        return None
    lead = answer_lead(query)
    return f"{lead} {named[0][0]}" if lead else named[0][0]
