"""Pairs questions over records (`PAIRS`, `ORDERED_PAIRS`): the rows labelled, each
user's label counts, the question's condition in code, the pairs; the example's condition
in the form of the question's (`PAIR_CONDITIONS`)."""

from __future__ import annotations

import re

from deeprlm.guides.kind import Kind
from deeprlm.guides.labelling import LABEL_ROWS, LABELLED_OUTPUT, REVIEWS, label_pairs_step
from deeprlm.guides.words import without_quoted

# A question for pairs, and one for ordered pairs (each of the two has a role).
ASKS_PAIRS = re.compile(r"\bpairs?\b", re.IGNORECASE)
# "ordered pairs", or a pair whose form names its roles: "(first user, second user)".
ASKS_ORDERED_PAIRS = re.compile(r"\bordered pairs?\b|\(\s*first\b[^)]*,\s*second\b", re.IGNORECASE)

# The pairs examples' second cell, after the labelling step: each shop's label counts and
# days, then the question's condition. (A phrase book of every condition's code in the
# cell, tried first, was copied whole into each reply, up to the reply's token cap, and
# not read: the root took the example's own condition anyway.)
_PAIR_COUNTS = """from collections import Counter, defaultdict
n = defaultdict(Counter)  # shop -> how many of its reviews have each label
days = defaultdict(list)  # (shop, label) -> the days of those reviews
for r in rows:
    n[int(r["Shop"])][r["label"]] += 1
    days[int(r["Shop"]), r["label"]].append(parse_date(r["Day"]))
"""

# A condition of a pairs question as its example shows it, picked by the question's words
# (quoted labels left out): the words, the condition as a question writes it, and in code,
# over labels {x} and {y}. The first that matches is shown. The 1.5B root copies its
# example's condition whatever its question says ("exactly 2" for "at least one ... dated
# after"), so the example's condition has the question's form and the root changes only
# its labels, numbers and dates.
_DAY = "Mar 01, 2022"
PAIR_CONDITIONS: tuple[tuple[str, str, str], ...] = (
    (r"\bexactly\b", "exactly 2 reviews with the label '{x}'", 'n[s]["{x}"] == 2'),
    (r"\bbefore\b", f"a review with the label '{{x}}' dated before {_DAY}",
     f'any(d < parse_date("{_DAY}") for d in days[s, "{{x}}"])'),
    (r"\bon or after\b", f"a review with the label '{{x}}' dated on or after {_DAY}",
     f'any(d >= parse_date("{_DAY}") for d in days[s, "{{x}}"])'),
    (r"\bafter\b", f"at least one review with the label '{{x}}' dated after {_DAY}",
     f'any(d > parse_date("{_DAY}") for d in days[s, "{{x}}"])'),
    (r"\b(?:none|no)\b", "at least one review with the label '{x}' but none with the label '{y}'",
     'n[s]["{x}"] >= 1 and n[s]["{y}"] == 0'),
    (r"\bor\b", "at least one review with the label '{x}' or the label '{y}'",
     'n[s]["{x}"] >= 1 or n[s]["{y}"] >= 1'),
    (r"", "at least one review with the label '{x}'", 'n[s]["{x}"] >= 1'),
)  # fmt: skip


def pair_condition(words: str, x: str, y: str) -> tuple[str, str]:
    """The example's condition for a question's condition `words`: in words, in code."""
    bare = without_quoted(words)
    for pattern, phrase, code in PAIR_CONDITIONS:
        if re.search(pattern, bare, re.IGNORECASE):
            return phrase.format(x=x, y=y), code.format(x=x, y=y)
    raise AssertionError("the last condition matches anything")


def _condition_sentence(query: str) -> str:
    """The question's sentence that asks for pairs, from its condition on ("where ...")."""
    for sentence in re.split(r"(?<=[.?!])\s+", query):
        if ASKS_PAIRS.search(sentence):
            return re.split(r"\b(?:where|who|whose|such that)\b", sentence, maxsplit=1)[-1]
    return query


def _pair_cell(query: str, ordered: bool) -> tuple[str, str]:
    """The question of a pairs example in the form of `query`'s, and its second cell."""
    words = _condition_sentence(query)
    if not ordered:
        phrase, code = pair_condition(words, "delivery", "quality")
        question = (
            f"List all pairs of shops where both shops have {phrase}. List each pair once, "
            "lower shop first, one per line in the form (shop_1, shop_2)."
        )
        cell = f"""# The question's condition in its own words, then in code:
# "{phrase}"
shops = sorted(s for s in n if {code})
pairs = [f"({{a}}, {{b}})" for i, a in enumerate(shops) for b in shops[i + 1:]]
answer = "\\n".join(pairs)
print(len(shops), "shops,", len(pairs), "pairs:", pairs[:3])"""
        return question, _PAIR_COUNTS + cell
    # Each role's condition from its own part of the sentence ("the first ..., and the
    # second ..."): shown one list of unordered pairs, the root wrote the first role's
    # condition alone.
    parts = re.split(r"\bsecond\b", words, maxsplit=1)
    first_phrase, first_code = pair_condition(parts[0], "delivery", "quality")
    second_phrase, second_code = pair_condition(parts[-1], "quality", "delivery")
    question = (
        "List all ordered pairs of shops (first shop, second shop) where the first shop has "
        f"{first_phrase}, and the second shop has {second_phrase}. List each pair once in the "
        "form (first shop, second shop), one per line."
    )
    cell = f"""# Each role's condition in the question's own words, then in code:
# first: "{first_phrase}"
firsts = sorted(s for s in n if {first_code})
# second: "{second_phrase}"
seconds = sorted(s for s in n if {second_code})
pairs = [f"({{a}}, {{b}})" for a in firsts for b in seconds if a != b]
answer = "\\n".join(pairs)
print(len(firsts), "first,", len(seconds), "second,", len(pairs), "pairs:", pairs[:3])"""
    return question, _PAIR_COUNTS + cell


# Labelling by the records' words, where a run makes no sub-calls.
_LABEL_BY_WORDS = """rows = records(context)
# No field states the label: judge each review by its words.
def label(text):
    text = text.lower()
    if any(w in text for w in ("late", "parcel", "arrived", "courier")):
        return "delivery"
    if any(w in text for w in ("broke", "works", "sturdy", "cheaply made")):
        return "quality"
    return "price and value"
for r in rows:
    r["label"] = label(r["Review"])"""

_PAIRS_OUTPUT = {
    False: "7 shops, 21 pairs: ['(3, 8)', '(3, 12)', '(3, 15)']",
    True: "7 first, 12 second, 80 pairs: ['(3, 5)', '(3, 8)', '(3, 11)']",
}


def pairs_example(query: str, ordered: bool, sub_calls: bool) -> str:
    """A pairs example in the form of `query`: the labelling step and its output, then the
    condition's cell (with sub-calls); labels judged by words, then that cell, in one turn
    (without)."""
    question, cell = _pair_cell(query, ordered)
    if sub_calls:
        steps = f"```repl\n{LABEL_ROWS}\n```\nOutput:\n{LABELLED_OUTPUT}\n```repl\n{cell}\n```"
    else:
        steps = f"```repl\n{_LABEL_BY_WORDS}\n{cell}\n```"
    output = _PAIRS_OUTPUT[ordered]
    return (
        f'Question: {REVIEWS} {question}\n{steps}\nOutput:\n{output}\nReply:\nFINAL_VAR("answer")'
    )


# What a pairs root is told to do when its output is not yet the pairs.
_PAIRS_CODE = (
    "`rows` is ready and each row's 'label' is set; count each user's labels, write the "
    "question's condition in code as the example does, and build the pairs"
)
# After each output of a pairs question, the answer first: told only to write the
# condition's code, the root wrote it again after its pairs were printed, to its last turn.
_PAIRS_FOLLOW_UP = (
    'If the output shows the pairs for the question\'s condition, reply FINAL_VAR("answer") '
    f"now. If not, write code for the condition: {_PAIRS_CODE}"
)
# After the labelled rows: invited to reply FINAL_VAR("answer") if the output showed the
# pairs, the 1.5B root said it did (it showed label counts) and named `answer` before any
# code had assigned it, to its last turn.
_PAIRS_FIRST_FOLLOW_UP = f"Now write code for the question's condition: {_PAIRS_CODE}"


def pairs_kind(name: str, description: str, condition: str, ordered: bool) -> Kind:
    """A kind of pairs question: the rows labelled (the first step, with sub-calls; by their
    words, without), then the users the condition keeps, then the pairs. Its example has the
    question's form (`pairs_example`)."""
    return Kind(
        name,
        description,
        ("records", "parse_date", "llm_classify"),
        "1. Make the records into rows; label their texts with llm_classify if the "
        f"condition needs a class they do not state.\n2. {condition}\n3. Build the pairs in "
        'a variable and reply FINAL_VAR("answer").',
        pairs_example("", ordered, True),
        example_for=lambda shape, query: pairs_example(query, ordered, True),
        first_step=label_pairs_step,
        follow_up=_PAIRS_FOLLOW_UP,
        first_follow_up=_PAIRS_FIRST_FOLLOW_UP,
        # Its pairs computed and printed, the 1.5B root reran the code to its last turn
        # and then wrote a sentence ("There are no pairs ...") as its forced answer.
        answer_variable="answer",
        without_sub_calls=Kind(
            name,
            "",
            ("records", "parse_date"),
            "1. Make the records into rows; decide their texts' classes with code (the words "
            f"they use) if the condition needs a class they do not state.\n2. {condition}\n3. "
            'Build the pairs in a variable and reply FINAL_VAR("answer").',
            pairs_example("", ordered, False),
            example_for=lambda shape, query: pairs_example(query, ordered, False),
            answer_variable="answer",
        ),
    )


PAIRS = pairs_kind(
    "pairs",
    "list all pairs of users, shops or items that meet a condition, e.g. 'List all "
    "pairs of users who both ...'",
    "Count each user's labels, write the question's condition in code as the example "
    "does, and keep the users that meet it.",
    ordered=False,
)


ORDERED_PAIRS = pairs_kind(
    "ordered pairs",
    "list the ordered pairs (first, second) of users where the first meets one "
    "condition and the second another",
    "Count each user's labels and write each role's condition in code as the example "
    "does: keep the users that can come first and those that can come second.",
    ordered=True,
)
