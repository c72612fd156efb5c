"""The first step of a question over records' labels, which the engine writes for a small
root: every record made a row and labelled (by the helper model, or from the field that
states it), and that step as the examples show it (`LABEL_ROWS`, `LABELLED_OUTPUT`), set
in a world of shop reviews (`REVIEWS`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from deeprlm.context import ContextInfo
from deeprlm.guides.fields import stated_field, text_field
from deeprlm.guides.words import question_labels

REVIEWS = """Each line is a review: a day, a shop and the review's text. Each review can be \
labelled with one of: delivery, price and value, quality. The labels are not given: judge \
each review by its text."""


def _literal(value: object) -> str:
    """`value` as Python source, strings in double quotes as the examples write them."""
    return json.dumps(value, ensure_ascii=False)


def label_rows_code(field: str, labels: Sequence[str]) -> str:
    """Every record made a row and labelled from its `field` by the helper model; the
    counts printed most common first. The fields are printed without a row: shown one
    row with its label, the 1.5B root answered "which label is most common?" with that
    row's label, over counts that had the right one first."""
    return (
        "from collections import Counter\n"
        "rows = records(context)\n"
        f"labels = llm_classify([r[{_literal(field)}] for r in rows], {_literal(list(labels))})\n"
        "for r, label in zip(rows, labels):\n"
        '    r["label"] = label\n'
        'print(len(rows), "rows; their fields:", list(rows[0]))\n'
        'print("labels, most common first:", Counter(labels).most_common())'
    )


# The first cell of the judge example is the kind's first step (see `label_rows_step`),
# which a run writes for the root: the root's own code starts after it.
LABEL_ROWS = label_rows_code("Review", ["delivery", "price and value", "quality"])
LABELLED_OUTPUT = """2210 rows; their fields: ['Day', 'Shop', 'Review', 'label']
labels, most common first: [('quality', 901), ('delivery', 788), ('price and value', 521)]"""


def label_rows_step(query: str, info: ContextInfo) -> str | None:
    """The first step of a question over labels the records do not state: every record
    made a row and labelled by the helper model with the question's own labels. Writing it
    for the small root keeps the labels whole ("description and abstract concept" was
    split into two) and the field right; the root's code starts from the labelled rows."""
    labels = question_labels(query)
    field = text_field(info)
    if labels is None or field is None:
        return None
    return label_rows_code(field, labels)


def label_pairs_step(query: str, info: ContextInfo) -> str | None:
    """A pairs question opens like a judged count, with every row labelled; where a field
    of the records states the labels, each row's label is that field's value (nothing to
    judge, and the example's next cell reads `r["label"]` either way)."""
    stated = stated_field(query, info.structure)
    if stated:
        return stated_rows_code(stated)
    return label_rows_step(query, info)


def stated_rows_code(field: str) -> str:
    """Every record made a row whose label is its `field`; the counts as `label_rows_code`
    prints them."""
    return (
        "from collections import Counter\n"
        "rows = records(context)\n"
        "for r in rows:\n"
        f'    r["label"] = r[{_literal(field)}]\n'
        'print(len(rows), "rows; their fields:", list(rows[0]))\n'
        'print("labels, most common first:", Counter(r["label"] for r in rows).most_common())'
    )
