"""What the engine writes for a small root from the question and the context's shape: the
label set a question lists, the records' free-text field, and the labelling first step."""

from __future__ import annotations

import pytest

from deeprlm import guides
from deeprlm.context import describe

OOLONG = (
    "Every instance can be labelled with exactly one of these classes, by the kind of answer "
    "the question asks for: description and abstract concept, entity, human being, numeric "
    "value, location, abbreviation. The labels are not given."
)
REVIEWS = "\n".join(
    f"Day: Jan {d:02d}, 2024 || Shop: {d % 4} || Review: {text}"
    for d, text in enumerate(
        [
            "The parcel came two weeks after the promised date.",
            "Far too expensive for what you get in the box.",
            "The handle broke on the second day of use.",
            "Courier left it in the rain at the gate.",
        ]
        * 6,
        1,
    )
    if d <= 28
)


@pytest.mark.parametrize(
    ("query", "labels"),
    [
        (f"{OOLONG}\n\nHow many records have the label 'location'?",
         ("description and abstract concept", "entity", "human being", "numeric value",
          "location", "abbreviation")),
        ("Label each review with one of: delivery, price and value, or quality. Which label "
         "is most common?", ("delivery", "price and value", "quality")),
        ("Each ticket is one of the following categories: 'bug'; 'feature'; 'question'.\n"
         "How many tickets are in the category 'bug'?", ("bug", "feature", "question")),
        ("Classify every line as one of: spam, ham or unknown", ("spam", "ham", "unknown")),
        ("The possible labels are: positive, negative, neutral. Which is most common?",
         ("positive", "negative", "neutral")),
    ],
)  # fmt: skip
def test_the_labels_a_question_lists_are_read_whole(query, labels):
    assert guides.question_labels(query) == labels


@pytest.mark.parametrize(
    "query",
    [
        "How many records are about sport?",  # no list
        "Each record is one of: art. How many?",  # one label is no choice
        # The label asked about is not among those read: the list was read wrongly.
        "Pick one of: red, green, blue. How many have the label 'yellow'?",
        "It is one of: a, a. Count them.",  # the same label twice
    ],
)
def test_a_question_without_a_clear_label_list_gives_none(query):
    assert guides.question_labels(query) is None


def test_the_free_text_field_is_found_by_its_name_and_only_when_it_is_one():
    assert guides.text_field(describe(REVIEWS)) == "Review"
    two_texts = REVIEWS.replace(" || Review:", " || Note: nothing to add here at all || Review:")
    assert guides.text_field(describe(two_texts)) is None
    assert guides.text_field(describe("Just prose.\nMore prose.\nAnd more.")) is None


def test_a_judged_count_opens_with_every_row_labelled_by_the_questions_labels():
    query = "Each review is one of: delivery, price and value, quality. How many are late?"
    step = guides.first_step_of("judge", True, query, describe(REVIEWS))
    assert step is not None
    labels = '["delivery", "price and value", "quality"]'
    assert f'llm_classify([r["Review"] for r in rows], {labels})' in step
    assert 'r["label"] = label' in step and "Counter(labels).most_common()" in step
    # Pairs are left to the root: opened with the labelled rows, it copied the example's
    # next cell whole, conditions and all.
    assert guides.first_step_of("pairs", True, query, describe(REVIEWS)) is None
    # Without sub-calls the root labels by hand, and without a label list it writes it all.
    assert guides.first_step_of("judge", False, query, describe(REVIEWS)) is None
    assert guides.first_step_of("judge", True, "How many are slow?", describe(REVIEWS)) is None
    assert guides.first_step_of("lookup", True, query, describe(REVIEWS)) is None


def test_the_labelling_step_is_code_the_repl_runs():
    query = 'Each review is one of: "late", it\'s fine. How many are late?'
    step = guides.label_rows_step(query, describe(REVIEWS))
    assert step is not None
    compile(step, "<step>", "exec")  # quotes in labels are written as Python strings
