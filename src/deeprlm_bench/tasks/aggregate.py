"""`aggregate` (OOLONG style): questions whose answer depends on every record of the context.

Question kinds: the most and least common class, the count of a class, class A against
class B, the user with most records of a class, and a count and a comparison restricted to
a date range. Answers are scored the OOLONG way (see `deeprlm_bench.scoring`). The labelled
variant writes each record's class on its line, which leaves pure aggregation.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from deeprlm_bench import scoring
from deeprlm_bench.banks import questions as qbank
from deeprlm_bench.example import Example
from deeprlm_bench.tasks import records as rec
from deeprlm_bench.tokens import chars_for

KINDS = (
    "most_common",
    "least_common",
    "count",
    "compare",
    "user_most",
    "count_in_range",
    "compare_in_range",
)

_FORM_LABEL = "Give your final answer in the form 'Label: <label>'."
_FORM_NUMBER = "Give your final answer in the form 'Answer: <number>'."
_FORM_USER = "Give your final answer in the form 'User: <user ID>'."


def _form_relation(a: str, b: str) -> str:
    return (
        f"Give your final answer in the form 'Answer: {a} is <relation> {b}', where "
        f"<relation> is one of: {', '.join(scoring.COMPARISONS)}."
    )


def relation(count_a: int, count_b: int) -> str:
    if count_a > count_b:
        return scoring.COMPARISONS[0]
    if count_a < count_b:
        return scoring.COMPARISONS[1]
    return scoring.COMPARISONS[2]


@dataclass(frozen=True)
class Aggregate:
    labelled: bool = False

    @property
    def name(self) -> str:
        return "aggregate-labelled" if self.labelled else "aggregate"

    @property
    def description(self) -> str:
        what = "labelled records" if self.labelled else "records whose class must be inferred"
        return f"OOLONG-style aggregation over {what} (linear in the context)"

    def generate(self, seed: int, length: int) -> Example:
        rng = random.Random(seed)
        records = rec.generate(rng, chars_for(length), labelled=self.labelled)
        rec.separate_label_counts(records, rng)
        kind = KINDS[rng.randrange(len(KINDS))]
        question, gold, info = _ask(kind, records, rng)
        info = {"kind": kind, "labelled": self.labelled, **info}
        return Example(
            task=self.name,
            length=length,
            seed=seed,
            context=records.text(),
            query=f"{rec.preamble(self.labelled)}\n\n{question}",
            gold=gold,
            info=info,
        )

    def score(self, example: Example, answer: str) -> float:
        kind = example.info["kind"]
        if kind in ("count", "count_in_range"):
            return scoring.oolong_numeric(example.gold, answer)
        if kind in ("compare", "compare_in_range"):
            return scoring.oolong_comparison(example.gold, answer)
        return scoring.oolong_exact(str(example.gold), answer)


def _date_range(rng: random.Random) -> tuple[int, int]:
    span = rng.randrange(60, 400)
    first = rng.randrange(rec.DAYS - span)
    return first, first + span


def _ask(kind: str, records: rec.Records, rng: random.Random) -> tuple[str, object, dict]:
    labels = qbank.LABELS
    if kind in ("most_common", "least_common"):
        counts = records.label_counts()
        most = kind == "most_common"
        pick = max(labels, key=counts.__getitem__) if most else min(labels, key=counts.__getitem__)
        word = "most" if most else "least"
        return f"Which label is the {word} common across all records? {_FORM_LABEL}", pick, {}
    if kind == "count":
        label = rng.choice(labels)
        question = f"How many records have the label '{label}'? {_FORM_NUMBER}"
        return question, records.label_counts()[label], {"label": label}
    if kind == "compare":
        a, b = rng.sample(labels, 2)
        counts = records.label_counts()
        question = (
            f"Is the label '{a}' more common than, less common than, or the same frequency as "
            f"the label '{b}'? {_form_relation(a, b)}"
        )
        return question, relation(counts[a], counts[b]), {"a": a, "b": b}
    if kind == "user_most":
        label = _label_not_led_by_busiest_user(records, rng)
        user = _unique_top_user(records, label)
        question = f"Which user has the most records with the label '{label}'? {_FORM_USER}"
        return question, str(user), {"label": label}
    first, last = _date_range(rng)
    between = f"dated from {rec.day_text(first)} to {rec.day_text(last)} (both inclusive)"
    dates = {"first": rec.day_text(first), "last": rec.day_text(last)}
    counts = records.label_counts(first, last)
    if kind == "count_in_range":
        # A class present in the range when there is one: a zero count is a degenerate
        # question in a short context.
        present = [label for label in labels if counts[label]] or list(labels)
        label = rng.choice(present)
        question = f"How many records {between} have the label '{label}'? {_FORM_NUMBER}"
        return question, counts[label], {"label": label, **dates}
    a, b = rng.sample(labels, 2)
    question = (
        f"Among the records {between}, is the label '{a}' more common than, less common "
        f"than, or the same frequency as the label '{b}'? {_form_relation(a, b)}"
    )
    return question, relation(counts[a], counts[b]), {"a": a, "b": b, **dates}


def _label_not_led_by_busiest_user(records: rec.Records, rng: random.Random) -> str:
    """A class whose leading user is not the most active user overall, where there is one:
    otherwise naming the busiest user would answer the question without classifying."""
    busiest = Counter(records.users).most_common(1)[0][0]
    order = rng.sample(qbank.LABELS, len(qbank.LABELS))
    for label in order:
        counts = Counter(u for u, lab in zip(records.users, records.labels, strict=True)
                         if lab == label)  # fmt: skip
        if counts.most_common(1)[0][0] != busiest:
            return label
    return order[0]


def _unique_top_user(records: rec.Records, label: str) -> int:
    """The user with most records of `label`; a tie at the top is broken by moving one such
    record from the runner-up to the leader, so the answer is unique."""
    counts = Counter(
        u for u, lab in zip(records.users, records.labels, strict=True) if lab == label
    )
    ranked = counts.most_common(2)
    leader = ranked[0][0]
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        runner_up = ranked[1][0]
        for i, (user, lab) in enumerate(zip(records.users, records.labels, strict=True)):
            if user == runner_up and lab == label:
                records.users[i] = leader
                break
    return leader
