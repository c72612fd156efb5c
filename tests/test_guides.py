"""What the engine writes for a small root from the question and the context's shape: the
label set a question lists, the records' free-text field, and the labelling first step."""

from __future__ import annotations

import contextlib
import io
from collections import Counter

import pytest

from deeprlm import guides, prompts
from deeprlm.context import describe
from deeprlm.primitives.records import parse_date, records
from deeprlm.primitives.search import search

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
    # A pairs question opens the same way, unless a field of the records states the labels.
    pairs = "Each review is one of: delivery, price and value, quality. List all pairs ..."
    assert guides.first_step_of("pairs", True, pairs, describe(REVIEWS)) == step
    stated = REVIEWS.replace(" || Review:", " || Kind: delivery || Review:")
    stated_pairs = pairs + " Each review states its kind."
    stated_step = guides.first_step_of("pairs", True, stated_pairs, describe(stated))
    assert 'r["label"] = r["Kind"]' in stated_step and "llm_classify" not in stated_step
    namespace = {"records": records, "context": stated}
    exec(stated_step, namespace)
    assert {r["label"] for r in namespace["rows"]} == {"delivery"}
    assert guides.first_step_of("pairs", False, pairs, describe(REVIEWS)) is None
    # Without sub-calls the root labels by hand, and without a label list it writes it all.
    assert guides.first_step_of("judge", False, query, describe(REVIEWS)) is None
    assert guides.first_step_of("judge", True, "How many are slow?", describe(REVIEWS)) is None
    assert guides.first_step_of("lookup", True, query, describe(REVIEWS)) is None


def test_the_labelling_step_is_code_the_repl_runs():
    query = 'Each review is one of: "late", it\'s fine. How many are late?'
    step = guides.label_rows_step(query, describe(REVIEWS))
    assert step is not None
    compile(step, "<step>", "exec")  # quotes in labels are written as Python strings


# Labelled reviews around the pairs examples' day (Mar 01, 2022): (day, shop, label).
LABELLED = [
    ("Feb 20, 2022", 1, "delivery"),
    ("Mar 05, 2022", 1, "delivery"),
    ("Feb 25, 2022", 0, "delivery"),
    ("Feb 28, 2022", 0, "delivery"),
    ("Mar 02, 2022", 2, "delivery"),
    ("Mar 03, 2022", 3, "quality"),
    ("Feb 01, 2022", 2, "price"),
]


def labelled_rows():
    rows = records("\n".join(f"Day: {d} || Shop: {s} || Review: text" for d, s, _ in LABELLED))
    for row, (_, _, label) in zip(rows, LABELLED, strict=True):
        row["label"] = label
    return {"records": records, "parse_date": parse_date, "rows": rows}


@pytest.mark.parametrize(
    ("condition", "ordered", "answer"),
    [
        ("both have exactly 2 records with the label 'delivery'", False, "(0, 1)"),
        ("both have at least one record with the label 'delivery'", False,
         "(0, 1)\n(0, 2)\n(1, 2)"),
        ("both have a record with the label 'delivery' dated after Mar 01, 2022", False,
         "(1, 2)"),
        ("both have a record with the label 'delivery' dated before Mar 01, 2022", False,
         "(0, 1)"),
        ("both have the label 'delivery' or the label 'quality'", False,
         "(0, 1)\n(0, 2)\n(0, 3)\n(1, 2)\n(1, 3)\n(2, 3)"),
        ("the first has exactly 2 with the label 'delivery', and the second has one with the "
         "label 'quality' but none with the label 'delivery'", True, "(0, 3)\n(1, 3)"),
        ("the first has a record with the label 'delivery' dated after Mar 01, 2022, and the "
         "second has one with the label 'quality' dated on or after Mar 01, 2022", True,
         "(1, 3)\n(2, 3)"),
    ],
)  # fmt: skip
def test_a_pairs_example_has_the_questions_condition_and_its_cell_runs(condition, ordered, answer):
    """The example's condition has the question's form (its labels and day the example's
    own, which these questions use too), and its cell gives the question's pairs."""
    kind = "ordered pairs" if ordered else "pairs"
    query = f"{OOLONG} Every one has exactly one label. List all {kind} of shops where {condition}."
    example = guides.pairs_example(query, ordered, True)
    first, cell = (part.split("\n```")[0] for part in example.split("```repl\n")[1:])
    assert "llm_classify" in first
    namespace = labelled_rows()
    exec(cell, namespace)
    assert namespace["answer"] == answer
    # Without sub-calls the same cell follows labelling by words, in one turn.
    plain = guides.pairs_example(query, ordered, False)
    assert "llm_classify" not in plain and cell in plain


def test_a_pairs_condition_is_read_from_the_words_outside_its_labels():
    assert (
        "exactly 2"
        in guides.pair_condition("exactly 1 with the label 'before or after'", "a", "b")[0]
    )
    assert guides.pair_condition("at least one with the label 'x or y'", "a", "b") == (
        "at least one review with the label 'a'",
        'n[s]["a"] >= 1',
    )


def test_a_question_for_ordered_pairs_is_taught_with_two_lists():
    info = describe(REVIEWS)
    ordered = "List all ordered pairs of shops (first shop, second shop) where ..."
    assert guides.pick_kind(ordered, info).kind == "ordered pairs"
    roles = "List the pairs where ... in the form (first user, second user)."
    assert guides.pick_kind(roles, info).kind == "ordered pairs"
    assert guides.pick_kind("List all pairs of shops where both ...", info).kind == "pairs"
    assert "for a in firsts for b in seconds" in guides.KINDS["ordered pairs"].example
    # The system prompt's example follows the question's words.
    setup = prompts.PromptSetup(
        family="small",
        kind="pairs",
        query="List all pairs where both "
        "have a review with the label 'x' dated before May 02, 2022.",
    )
    assert 'any(d < parse_date("Mar 01, 2022")' in prompts.system_prompt(setup)


@pytest.mark.parametrize(
    ("question", "printed", "reply"),
    [
        ("Is the label 'delivery' more common than, less common than, or the same frequency "
         "as the label 'quality'?", "5 1 more common than", "Answer: delivery is"),
        ("Among the records dated from Feb 03, 2022 to Mar 10, 2022 (both inclusive), is the "
         "label 'delivery' more common than the label 'quality'?", "7 6\n5 1 more common than",
         "Answer: delivery is"),
        ("Which user has the most records with the label 'delivery'?",
         "[('1', 2), ('0', 2), ('2', 1)]", "Shop: "),
        ("Which shop has the most records with the label 'delivery' dated from Feb 03, 2022 "
         "to Mar 10, 2022?", "7 6\n[('1', 2), ('0', 2), ('2', 1)]", "Shop: "),
        ("How many records dated from 2022-02-03 to 2022-03-10 have the label 'delivery'?",
         "7 6\nCounter({'delivery': 5, 'quality': 1})", "Answer: "),
        ("Which label is the least common among records dated from Feb 03, 2022 to Mar 10, "
         "2022?", "7 6\nleast common: ('quality', 1)", "Label: "),
        ("Which label is the least common?", "least common: ('price', 1)",
         "Label: price and value"),
        ("Which label is the most common across all records?", "most common: ('delivery', 5)",
         "Label: quality"),
    ],
)  # fmt: skip
def test_a_judged_count_example_computes_the_questions_form_of_answer(question, printed, reply):
    """Past the labels' counts, the example's second cell computes what the question asks
    (a relation, the top owner, the least or most common, a count in a range) and prints it; the
    cell runs on rows."""
    example = guides.judge_example(f"{OOLONG} {question}")
    cells = [part.split("\n```")[0] for part in example.split("```repl\n")[1:]]
    assert len(cells) == 2 and "llm_classify" in cells[0]
    namespace = {**labelled_rows(), "Counter": Counter}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(cells[1], namespace)
    assert out.getvalue().strip() == printed
    assert example.rsplit("Reply:\nFINAL(", 1)[1].startswith(reply)


@pytest.mark.parametrize(
    ("question", "cells", "reply"),
    [
        ("How many records have the label 'delivery'?", 1, "FINAL(Answer: 788)"),
        # A label's own words ('most recent') do not make the question another form.
        ("How many records have the label 'most recent' or 'less than one'?", 1,
         "FINAL(Answer: 788)"),
    ],
)  # fmt: skip
def test_a_count_the_labels_answer_is_replied_from_their_counts(question, cells, reply):
    example = guides.judge_example(f"{OOLONG} {question}")
    assert example.count("```repl") == cells
    assert example.endswith(reply)


def test_an_apostrophe_does_not_hide_the_questions_words_from_the_form():
    query = (
        "Each record states its instance's label after 'Label:'.\n\nWhich user has the most "
        "records with the label 'location'? Give your final answer in the form 'User: <ID>'."
    )
    assert guides.without_quoted(query).endswith(
        "Which user has the most records with the label ? Give your final answer in the form ."
    )
    assert 'Counter(r["Shop"] for r in rows if r["Payment"] == "card")' in guides.count_example(
        query
    )


def test_a_stated_count_example_has_the_questions_form_in_one_cell():
    example = guides.count_example(
        "Among the records dated from May 26, 2022 to Mar 02, 2023 (both inclusive), is the "
        "label 'x' more common than, less common than, or the same frequency as the label 'y'?"
    )
    assert example.count("```repl") == 1
    assert 'x, y = "card", "cash"' in example and "picked = [r for r in rows" in example
    assert example.endswith("FINAL(Answer: card is more common than cash)")
    setup = prompts.PromptSetup(
        family="small", kind="count", query="Which user has the most records with label 'z'?"
    )
    assert 'Counter(r["Shop"] for r in rows if r["Payment"] == "card")' in prompts.system_prompt(
        setup
    )


def test_a_code_question_with_lettered_choices_is_taught_to_name_the_choice():
    choices = (
        "Which module defines the constant `SPARE`?\nA) pkg.network.shards\nB) pkg.billing\n"
        "C) pkg.storage.routes_2\nD) pkg.catalog.limits\nGive your final answer in the form "
        "'Answer: <letter>'."
    )
    setup = prompts.PromptSetup(family="small", kind="code", query=choices)
    prompt = prompts.system_prompt(setup)
    assert "is choice B.\nFINAL(Answer: B)" in prompt
    # The example's output is what search prints for such a file.
    source = 'def configure_mail(config):\n    config["mail.retries"] = 3\n'
    printed = str(search("mail.retries", {"shop/mailer/send.py": source}))
    assert "['shop/mailer/send.py', line 2, in shop.mailer.send.configure_mail]" in printed
    assert "['shop/mailer/send.py', line 8, in shop.mailer.send.configure_mail]" in prompt
    plain = prompts.PromptSetup(family="small", kind="code", query="What is TIMEOUT in mailer?")
    assert "FINAL(12)" in prompts.system_prompt(plain)


def test_after_the_labelled_rows_a_question_needing_more_is_told_to_write_it():
    compare = f"{OOLONG} Is the label 'a' more common than, less common than, or as common as 'b'?"
    told = guides.follow_up_of("judge", True, first=True, query=compare)
    assert told.startswith("Now write the code the example writes next")
    plain = f"{OOLONG} How many records have the label 'a'?"
    assert guides.follow_up_of("judge", True, first=True, query=plain).startswith(
        "If the output answers the question as it is, reply FINAL(answer)"
    )
    # Later turns, and a run without sub-calls (no labelled rows first), are told the same.
    assert guides.follow_up_of("judge", True, query=compare).startswith("If the output answers")
    assert guides.follow_up_of("judge", False, first=True, query=compare) == guides.FOLLOW_UP
