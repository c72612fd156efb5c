"""Count questions over records: a label the records state (`COUNT`, one cell) or one
judged from their text by the helper model (`JUDGE`, after the labelling step), each
example in the question's form of answer (`COUNT_FORMS`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deeprlm.guides.kind import Kind
from deeprlm.guides.labelling import LABEL_ROWS, LABELLED_OUTPUT, REVIEWS, label_rows_step
from deeprlm.guides.words import without_quoted
from deeprlm.shape import DATE_PATTERN

# The 1.5B root reads a printed Counter badly when the answer needs a step more: shown
# "numeric value: 77, entity: 202" it answered that 'numeric value' is more common. So a
# count question's example computes the question's own form of answer in code (a relation,
# the top owner, the least common) and prints it, and the root's reply copies what is
# printed. The form is picked by the question's words, as the pairs condition is.


@dataclass(frozen=True)
class CountWorld:
    """Where a count example is set: its records, the value counted, and the counts its
    outputs show, over every record and over the example's date range (most common
    first)."""

    noun: str  # what a record is
    value: str  # a row's counted value, in code
    what: str  # what the values are called
    form: str  # the word of the answer's form
    phrase: str  # the records of one value, in words
    has: str  # what the records of one value have, in words
    x: str
    y: str
    counts: tuple[tuple[str, int], ...]
    in_range: tuple[tuple[str, int], ...]


_STATED = CountWorld(
    "orders", 'r["Payment"]', "payment method", "Payment", "orders paid by {}",
    "were paid by {}", "card", "cash",
    (("card", 1210), ("cash", 745), ("voucher", 255)),
    (("card", 57), ("cash", 31), ("voucher", 8)),
)  # fmt: skip
_JUDGED = CountWorld(
    "reviews", 'r["label"]', "label", "Label", "reviews with the label '{}'",
    "have the label '{}'", "delivery", "quality",
    (("quality", 901), ("delivery", 788), ("price and value", 521)),
    (("delivery", 41), ("quality", 33), ("price and value", 22)),
)  # fmt: skip
_FROM, _TO = "Feb 03, 2022", "Mar 10, 2022"
_RANGE_WORDS = f" dated from {_FROM} to {_TO} (both inclusive)"
_RANGE_CODE = f"""start, end = parse_date("{_FROM}"), parse_date("{_TO}")
picked = [r for r in rows if start <= parse_date(r["Day"]) <= end]
print(len(rows), len(picked))
"""
# Two dates in a question ("from Mar 02, 2021 to ...", "between 2021-03-02 and ..."): its
# records are those of a range.
_DATE = re.compile(rf"\b(?:{DATE_PATTERN})\b", re.IGNORECASE)
_RELATIONS = (
    '"more common than" if n[x] > n[y] else "less common than" if n[x] < n[y] '
    'else "same frequency as"'
)


@dataclass(frozen=True)
class CountForm:
    """A form of count question: the words that pick it (quoted labels left out), whether
    its answer needs a step past the labels' counts, and the example's question, its code
    over `{rows}` (every row, or those of the range), what that prints and the reply."""

    words: str
    past_counts: bool
    question: str
    code: str
    output: str
    reply: str


# The first that matches is shown; the last matches anything.
COUNT_FORMS: tuple[CountForm, ...] = (
    CountForm(
        r"\b(?:more|less|fewer)\b[^?]*\bthan\b",
        True,
        "Among the {noun}{range}, are {of_x} more common than, less common than, or the same "
        "frequency as {of_y}? Give your final answer in the form 'Answer: {x} is <relation> "
        "{y}', where <relation> is one of: more common than, less common than, same "
        "frequency as.",
        'n = Counter({value} for r in {rows})\nx, y = "{x}", "{y}"\nrelation = '
        + _RELATIONS
        + "\nprint(n[x], n[y], relation)",
        "{n_x} {n_y} {relation}",
        "Answer: {x} is {relation} {y}",
    ),
    CountForm(
        r"\bwhich\s+(?!label|class|category|kind|type)\w+\s+(?:has|have|had)\b[^?]*\bmost\b",
        True,
        "Which shop has the most {of_x}{range}? Give your final answer in the form "
        "'Shop: <shop ID>'.",
        'top = Counter(r["Shop"] for r in {rows} if {value} == "{x}").most_common(3)\nprint(top)',
        "[('12', 9), ('31', 7), ('4', 6)]",
        "Shop: 12",
    ),
    # The least and the most common are past the counts too: told that the labels' counts,
    # most common first, answered its question, the 1.5B root replied with the first for
    # "least common" and with the second for "most common" (aggregate 32k).
    CountForm(
        r"\b(?:least|fewest)\b",
        True,
        "Which {what} is the least common among the {noun}{range}? Give your final answer in "
        "the form '{form}: <{what}>'.",
        'n = Counter({value} for r in {rows})\nprint("least common:", n.most_common()[-1])',
        "least common: ('{last}', {n_last})",
        "{form}: {last}",
    ),
    CountForm(
        r"\bmost\b",
        True,
        "Which {what} is the most common among the {noun}{range}? Give your final answer in "
        "the form '{form}: <{what}>'.",
        'n = Counter({value} for r in {rows})\nprint("most common:", n.most_common(1)[0])',
        "most common: ('{first}', {n_first})",
        "{form}: {first}",
    ),
    CountForm(
        r"",
        False,
        "How many {noun}{range} {has_x}? Give your final answer in the form 'Answer: <number>'.",
        "print(Counter({value} for r in {rows}))",
        "{counter}",
        "Answer: {n_x}",
    ),
)


def _form_of(query: str) -> tuple[CountForm, bool]:
    """The form of a count question, and whether it asks about a date range."""
    bare = without_quoted(query)
    form = next(f for f in COUNT_FORMS if re.search(f.words, bare, re.IGNORECASE))
    return form, len(_DATE.findall(bare)) >= 2


def needs_step(query: str) -> bool:
    """Whether a count question needs code past the labels' counts: a range, a relation,
    an owner."""
    form, ranged = _form_of(query)
    return ranged or form.past_counts


def count_form(query: str, world: CountWorld) -> tuple[str, str, str, str]:
    """A count example in the form of `query`, set in `world`: its question, the code after
    the rows are made, what that prints, and the reply."""
    form, ranged = _form_of(query)
    counts = dict(world.in_range if ranged else world.counts)
    ranked = list(world.in_range if ranged else world.counts)
    n_x, n_y = counts[world.x], counts[world.y]
    values = {
        "noun": world.noun,
        "what": world.what,
        "form": world.form,
        "value": world.value,
        "x": world.x,
        "y": world.y,
        "of_x": world.phrase.format(world.x),
        "of_y": world.phrase.format(world.y),
        "has_x": world.has.format(world.x),
        "range": _RANGE_WORDS if ranged else "",
        "rows": "picked" if ranged else "rows",
        "counter": f"Counter({{{', '.join(f'{k!r}: {v}' for k, v in ranked)}}})",
        "n_x": n_x,
        "n_y": n_y,
        "relation": "more common than"
        if n_x > n_y
        else "less common than"
        if n_x < n_y
        else "same frequency as",
        "first": ranked[0][0],
        "n_first": ranked[0][1],
        "last": ranked[-1][0],
        "n_last": ranked[-1][1],
    }
    total = sum(count for _, count in world.counts)
    shown = f"{total} {sum(counts.values())}\n" if ranged else ""
    return (
        form.question.format(**values),
        (_RANGE_CODE if ranged else "") + form.code.format(**values),
        shown + form.output.format(**values),
        form.reply.format(**values),
    )


def count_example(query: str) -> str:
    """A count over a field the records state, in the form of `query`: one cell."""
    question, code, output, reply = count_form(query, _STATED)
    return (
        f"Question: {question}\n"
        f"```repl\nfrom collections import Counter\nrows = records(context)\n{code}\n```\n"
        f"Output:\n{output}\nReply:\nFINAL({reply})"
    )


def judge_example(query: str) -> str:
    """A count over a class judged from the records' text, in the form of `query`: the
    labelling step (which a run writes for the root) and its output, then, where the
    question needs more than the labels' counts, the code that computes its answer. (Shown
    a second cell that kept a date range for a question over every record, the 1.5B root
    wrote one with dates of its own and reran it to the end of its turns.)"""
    question, code, output, reply = count_form(query, _JUDGED)
    steps = f"```repl\n{LABEL_ROWS}\n```\nOutput:\n{LABELLED_OUTPUT}\n"
    if needs_step(query):
        steps += f"```repl\n{code}\n```\nOutput:\n{output}\n"
    return f"Question: {REVIEWS} {question}\n{steps}Reply:\nFINAL({reply})"


_JUDGE_EXAMPLE_NO_SUB = f"""Question: {REVIEWS} How many reviews dated from Feb 03, 2022 to \
Mar 10, 2022 (both inclusive) have the label 'delivery'? Give your final answer in the form \
'Answer: <number>'.
```repl
from collections import Counter
rows = records(context)
# No field states the label: judge each review by its words.
def label(text):
    text = text.lower()
    if any(w in text for w in ("late", "parcel", "arrived", "courier")):
        return "delivery"
    if any(w in text for w in ("price", "cheap", "expensive", "cost")):
        return "price and value"
    return "quality"
labels = [label(r["Review"]) for r in rows]
start, end = parse_date("Feb 03, 2022"), parse_date("Mar 10, 2022")
print(Counter(label for r, label in zip(rows, labels) if start <= parse_date(r["Day"]) <= end))
```
Output:
Counter({{'delivery': 41, 'quality': 33, 'price and value': 22}})
Reply:
FINAL(Answer: 41)"""

# After the labelled rows, what a small root is told, the action first: it echoed a
# follow-up that began with what was done ("The rows are labelled ...") instead of acting.
_JUDGED_FOLLOW_UP = (
    "If the output answers the question as it is, reply FINAL(answer) in its form now. If "
    "the question compares two labels or asks about some rows only (dates, users), write the "
    "code the example writes for it: `rows` is ready and each row's 'label' is set"
)


def _judged_first_follow_up(query: str) -> str:
    """After the labelled rows: where the question needs a step past their counts (a
    relation, an owner, a date range), that step. Told to reply if the counts answered
    it, the 1.5B root answered a comparison from them at once, and read it backwards
    (96 against 78 as "less common")."""
    if needs_step(query):
        return (
            "Now write the code the example writes next, for the question's form: `rows` is "
            "ready and each row's 'label' is set"
        )
    return _JUDGED_FOLLOW_UP


COUNT = Kind(
    "count",
    "count, compare or rank records by a label or category that is written in each "
    "record, e.g. 'Each record states its label. Which label is most common?'",
    ("records", "parse_date"),
    "1. Make the records into rows and keep those the question is about.\n2. Count "
    "with Counter, compute what the question asks as the example does, and print "
    "it.\n3. Reply FINAL(answer) in the question's form.",
    count_example(""),
    example_for=lambda shape, query: count_example(query),
)


JUDGE = Kind(
    "judge",
    "count, compare or rank records by a class that is NOT written in them and must "
    "be judged from the meaning of each record's text, e.g. 'The labels are not "
    "given. How many records are about sport?'",
    ("records", "parse_date", "llm_classify"),
    "1. Make the records into rows and label their texts with llm_classify, using "
    "the question's labels exactly as it writes them.\n2. Count the labels of the "
    "rows the question is about (its dates, its users) with Counter, compute what "
    "the question asks as the example does, and print it.\n3. Reply FINAL(answer) "
    "in the question's form.",
    judge_example(""),
    example_for=lambda shape, query: judge_example(query),
    first_step=label_rows_step,
    follow_up=_JUDGED_FOLLOW_UP,
    first_follow_up=_judged_first_follow_up,
    without_sub_calls=Kind(
        "judge",
        "",
        ("records", "parse_date"),
        "1. Make the records into rows and label their texts with code (the words they "
        "use).\n2. Count the labels of the rows the question is about with Counter, "
        "and print the counts.\n3. Read them and reply FINAL(answer) in the question's "
        "form.",
        _JUDGE_EXAMPLE_NO_SUB,
    ),
)
