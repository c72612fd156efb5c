"""The OOLONG-style record table behind `aggregate` and `pairs`.

One record per line: `Date: Mar 04, 2023 || User: 48213 || Instance: <a question>`, plus
`|| Label: <class>` in the labelled variants. The table is kept in columns (dates as day
numbers, users, labels, questions) because a 10M-token context has some 400,000 records and
columns are what keeps that fast and small; lines are rendered once, at the end.

Class frequencies are deliberately unequal and user activity is skewed (a few heavy users,
many with a handful of records), so that "most common", "least common" and "which user"
questions have clear answers and pair conditions select some users but not all.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter
from dataclasses import dataclass

from deeprlm_bench.banks import questions as qbank

FIRST_DAY = dt.date(2021, 1, 1)
DAYS = (dt.date(2024, 12, 31) - FIRST_DAY).days + 1

_BLOCK = 4096
# Class weights are a shuffle of these: far enough apart that the order of class sizes is
# clear, close enough that every class has records even in short contexts.
_CLASS_WEIGHTS = (1.0, 1.35, 1.8, 2.4, 3.1, 4.0)


def day_text(day: int) -> str:
    return (FIRST_DAY + dt.timedelta(days=day)).strftime("%b %d, %Y")


def day_of(text: str) -> int:
    return (dt.datetime.strptime(text, "%b %d, %Y").date() - FIRST_DAY).days


_DAY_TEXTS = tuple(day_text(d) for d in range(DAYS))


def render_line(day: int, user: int, question: str, label: str | None) -> str:
    line = f"Date: {_DAY_TEXTS[day]} || User: {user} || Instance: {question}"
    return line if label is None else f"{line} || Label: {label}"


# Length of everything in a line but the question (and the label) — dates render at a fixed
# width and user IDs have five digits.
_FIXED_CHARS = len(render_line(0, 10000, "", None))
_LABEL_CHARS = len(" || Label: ")


@dataclass(frozen=True)
class Records:
    days: list[int]
    users: list[int]
    labels: list[str]
    questions: list[str]
    labelled: bool

    def __len__(self) -> int:
        return len(self.days)

    def lines(self) -> list[str]:
        labelled = self.labelled
        return [
            render_line(d, u, q, lab if labelled else None)
            for d, u, q, lab in zip(self.days, self.users, self.questions, self.labels, strict=True)
        ]

    def text(self) -> str:
        return "\n".join(self.lines())

    def label_counts(self, first_day: int = 0, last_day: int = DAYS - 1) -> Counter[str]:
        if first_day <= 0 and last_day >= DAYS - 1:
            counts = Counter(self.labels)
        else:
            counts = Counter(
                lab
                for d, lab in zip(self.days, self.labels, strict=True)
                if first_day <= d <= last_day
            )
        return Counter({label: counts.get(label, 0) for label in qbank.LABELS})

    def relabel(self, index: int, label: str, rng: random.Random) -> None:
        """Gives record `index` a question of another class (used to break ties)."""
        self.labels[index] = label
        self.questions[index] = qbank.sample_question(rng, label)


def user_count(lines: int) -> int:
    """Users grow with the square root of the record count, so that pair answers grow
    about linearly with length instead of exploding at millions of tokens."""
    return max(8, min(300, int(3 * math.sqrt(lines))))


def generate(rng: random.Random, target_chars: int, *, labelled: bool) -> Records:
    """Records until the rendered text (lines joined by newlines) is as close to
    `target_chars` as whole lines allow, never over it."""
    label_chars = {label: _LABEL_CHARS + len(label) if labelled else 0 for label in qbank.LABELS}
    mean_line = _FIXED_CHARS + 40 + (_LABEL_CHARS + 12 if labelled else 0)
    n_users = user_count(max(1, target_chars // mean_line))
    users = rng.sample(range(10000, 100000), n_users)
    user_weights = [1 / (rank + 1) ** 0.9 for rank in range(n_users)]
    labels = list(qbank.LABELS)
    weights = list(_CLASS_WEIGHTS)
    rng.shuffle(weights)
    bank = qbank.bank()

    days: list[int] = []
    user_col: list[int] = []
    label_col: list[str] = []
    question_col: list[str] = []
    total = -1  # the first line has no newline before it
    while True:
        block_labels = rng.choices(labels, weights, k=_BLOCK)
        block_users = rng.choices(users, user_weights, k=_BLOCK)
        block_picks = [rng.random() for _ in range(_BLOCK)]
        block_days = [rng.randrange(DAYS) for _ in range(_BLOCK)]
        for label, user, pick, day in zip(
            block_labels, block_users, block_picks, block_days, strict=True
        ):
            pool = bank[label]
            question = pool[int(pick * len(pool))]
            size = 1 + _FIXED_CHARS + len(question) + label_chars[label]
            if total + size > target_chars:
                return Records(days, user_col, label_col, question_col, labelled)
            total += size
            days.append(day)
            user_col.append(user)
            label_col.append(label)
            question_col.append(question)


def separate_label_counts(records: Records, rng: random.Random) -> None:
    """Moves single records between classes until no two classes are equally common, so
    that most / least common have one answer. Each move raises the sum of squared counts,
    so the loop ends."""
    index_by_label: dict[str, list[int]] = {label: [] for label in qbank.LABELS}
    for i, label in enumerate(records.labels):
        index_by_label[label].append(i)
    # First give every class at least one record: a class that never occurs makes "least
    # common" a question about absence.
    for label in qbank.LABELS:
        largest = max(qbank.LABELS, key=lambda lab: len(index_by_label[lab]))
        if not index_by_label[label] and len(index_by_label[largest]) > 1:
            i = index_by_label[largest].pop(rng.randrange(len(index_by_label[largest])))
            records.relabel(i, label, rng)
            index_by_label[label].append(i)
    while True:
        counts = {label: len(index_by_label[label]) for label in qbank.LABELS}
        seen: dict[int, str] = {}
        tie = None
        for label in qbank.LABELS:
            if counts[label] in seen:
                tie = (seen[counts[label]], label)
                break
            seen[counts[label]] = label
        if tie is None:
            return
        source, target = tie
        if not index_by_label[source]:
            source, target = target, source
        if not index_by_label[source]:
            return  # two empty classes: too short a context to separate them
        i = index_by_label[source].pop(rng.randrange(len(index_by_label[source])))
        records.relabel(i, target, rng)
        index_by_label[target].append(i)


def preamble(labelled: bool) -> str:
    """What the query says about the data before asking its question."""
    labels = ", ".join(qbank.LABELS)
    text = (
        "The context has one record per line: a date, a user ID and an instance, which is a "
        "short general-knowledge question. Every instance can be labelled with exactly one "
        f"of these classes, by the kind of answer the question asks for: {labels}. "
    )
    if labelled:
        return text + "Each record states its instance's label after 'Label:'."
    return (
        text + "The labels are not given: work out each instance's label from the meaning of "
        "its question."
    )
