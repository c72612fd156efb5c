"""`pairs` (OOLONG-Pairs style): list every pair of users that meets a condition, which
relates records to each other (quadratic in the context). Scored by F1 over the pairs.

Conditions: both users have a record of class X or Y; both have a record of class X dated
after a day; both have exactly k records of class X; and two with asymmetric roles, where
the answer lists ordered pairs (first user, second user).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass

from deeprlm_bench import scoring
from deeprlm_bench.banks import questions as qbank
from deeprlm_bench.example import Example
from deeprlm_bench.tasks import records as rec
from deeprlm_bench.tokens import chars_for

KINDS = ("either", "after", "exactly", "roles", "roles_dated")
ORDERED = frozenset({"roles", "roles_dated"})

_FORM_UNORDERED = (
    "List each pair once, lower user ID first, one pair per line in the form "
    "(user_1, user_2). List only the pairs."
)
_FORM_ORDERED = (
    "List each pair once in the form (first user, second user), one per line. List only the pairs."
)


@dataclass(frozen=True)
class Pairs:
    labelled: bool = False

    @property
    def name(self) -> str:
        return "pairs-labelled" if self.labelled else "pairs"

    @property
    def description(self) -> str:
        return "OOLONG-Pairs-style pair listing over the aggregate records (quadratic)"

    def generate(self, seed: int, length: int) -> Example:
        rng = random.Random(seed)
        records = rec.generate(rng, chars_for(length), labelled=self.labelled)
        drawn = KINDS[rng.randrange(len(KINDS))]
        kind, condition, gold, params = _pick_condition(drawn, records, rng)
        form = _FORM_ORDERED if kind in ORDERED else _FORM_UNORDERED
        return Example(
            task=self.name,
            length=length,
            seed=seed,
            context=records.text(),
            query=f"{rec.preamble(self.labelled)}\n\n{condition} {form}",
            gold=sorted(gold),
            info={"kind": kind, "labelled": self.labelled, **params},
        )

    def score(self, example: Example, answer: str) -> float:
        ordered = example.info["kind"] in ORDERED
        gold = {tuple(pair) for pair in example.gold}
        return scoring.f1(gold, scoring.parse_pairs(answer, ordered=ordered))


def user_days(records: rec.Records) -> dict[int, dict[str, list[int]]]:
    """user -> label -> days of that user's records of that label."""
    table: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for day, user, label in zip(records.days, records.users, records.labels, strict=True):
        table[user][label].append(day)
    return table


def gold_pairs(kind: str, table: dict, params: dict) -> set[tuple[int, int]]:
    """The pairs meeting a condition, from the user table (shared with the oracle check)."""
    users = sorted(table)
    x, y = params.get("x"), params.get("y")
    if kind == "either":
        chosen = [u for u in users if table[u].get(x) or table[u].get(y)]
        return set(itertools.combinations(chosen, 2))
    if kind == "after":
        after = rec.day_of(params["day"])
        chosen = [u for u in users if any(d > after for d in table[u].get(x, ()))]
        return set(itertools.combinations(chosen, 2))
    if kind == "exactly":
        chosen = [u for u in users if len(table[u].get(x, ())) == params["k"]]
        return set(itertools.combinations(chosen, 2))
    if kind == "roles":
        firsts = [u for u in users if table[u].get(x)]
        seconds = [u for u in users if table[u].get(y) and not table[u].get(x)]
        return {(a, b) for a in firsts for b in seconds}
    # roles_dated: the first user has an x record before the day, the second a y record
    # on or after it.
    day = rec.day_of(params["day"])
    firsts = [u for u in users if any(d < day for d in table[u].get(x, ()))]
    seconds = [u for u in users if any(d >= day for d in table[u].get(y, ()))]
    return {(a, b) for a in firsts for b in seconds if a != b}


def _condition_text(kind: str, params: dict) -> str:
    x, y = params.get("x"), params.get("y")
    if kind == "either":
        return (
            "List all pairs of user IDs where both users have at least one record with the "
            f"label '{x}' or the label '{y}'."
        )
    if kind == "after":
        return (
            "List all pairs of user IDs where both users have at least one record with the "
            f"label '{x}' dated after {params['day']}."
        )
    if kind == "exactly":
        return (
            f"List all pairs of user IDs where both users have exactly {params['k']} "
            f"record{'s' if params['k'] > 1 else ''} with the label '{x}'."
        )
    if kind == "roles":
        return (
            "List all ordered pairs of user IDs (first user, second user) where the first "
            f"user has at least one record with the label '{x}', and the second user has at "
            f"least one record with the label '{y}' but none with the label '{x}'."
        )
    return (
        "List all ordered pairs of different user IDs (first user, second user) where the "
        f"first user has a record with the label '{x}' dated before {params['day']}, and "
        f"the second user has a record with the label '{y}' dated on or after {params['day']}."
    )


def _pick_condition(
    kind: str, records: rec.Records, rng: random.Random
) -> tuple[str, str, set[tuple[int, int]], dict]:
    """The first condition, in a seeded order, that some pair meets: of the drawn kind if
    any, else of the next kinds (in a long context every user has many records, and no two
    may have exactly one of a class)."""
    table = user_days(records)
    start = KINDS.index(kind)
    for candidate in KINDS[start:] + KINDS[:start]:
        for _ in range(30):
            x, y = rng.sample(qbank.LABELS, 2)
            params: dict = {"x": x}
            if candidate in ("either", "roles", "roles_dated"):
                params["y"] = y
            if candidate in ("after", "roles_dated"):
                params["day"] = rec.day_text(rng.randrange(rec.DAYS // 4, rec.DAYS * 3 // 4))
            if candidate == "exactly":
                params["k"] = rng.choice((1, 1, 2))
            gold = gold_pairs(candidate, table, params)
            if gold:
                return candidate, _condition_text(candidate, params), gold, params
    raise AssertionError("no user pair meets any condition; the context is too short")
