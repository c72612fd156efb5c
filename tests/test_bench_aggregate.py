"""aggregate and pairs: gold answers recomputed from the generated text itself.

The tests parse the lines back (dates, users, questions or written labels) and take each
question's class from the question bank, then answer every kind of question with their own
code, independent of the generator's bookkeeping.
"""

import datetime as dt
import itertools
import re
from collections import Counter, defaultdict

import pytest

from deeprlm_bench.banks.questions import LABELS, bank, label_of
from deeprlm_bench.tasks.aggregate import KINDS, Aggregate
from deeprlm_bench.tasks.pairs import Pairs

LINE = re.compile(
    r"^Date: (\w{3} \d{2}, \d{4}) \|\| User: (\d{5}) \|\| Instance: (.+?)(?: \|\| Label: (.+))?$"
)


def parse(context: str, labelled: bool):
    rows = []
    for line in context.split("\n"):
        m = LINE.match(line)
        assert m, line
        day = dt.datetime.strptime(m.group(1), "%b %d, %Y").date()
        question, written = m.group(3), m.group(4)
        assert (written is not None) == labelled
        label = written if labelled else label_of()[question]
        if labelled:
            assert label == label_of()[question]
        rows.append((day, int(m.group(2)), label))
    return rows


def date(text):
    return dt.datetime.strptime(text, "%b %d, %Y").date()


def relation(a, b):
    return "more common than" if a > b else "less common than" if a < b else "same frequency as"


def test_bank_has_six_classes_and_no_question_in_two():
    assert set(bank()) == set(LABELS)
    assert all(len(questions) >= 50 for questions in bank().values())
    total = sum(len(q) for q in bank().values())
    assert len(label_of()) == total


def examples_of_every_kind(labelled):
    task = Aggregate(labelled=labelled)
    seen = {}
    seed = 0
    while len(seen) < len(KINDS):
        example = task.generate(seed, 4096)
        seen.setdefault(example.info["kind"], example)
        seed += 1
    return seen.values()


@pytest.mark.parametrize("labelled", [False, True])
def test_aggregate_gold_matches_a_recount(labelled):
    for example in examples_of_every_kind(labelled):
        rows = parse(example.context, labelled)
        info, kind = example.info, example.info["kind"]
        if kind.endswith("_in_range"):
            first, last = date(info["first"]), date(info["last"])
            rows = [r for r in rows if first <= r[0] <= last]
        counts = Counter(label for _, _, label in rows)
        if kind in ("most_common", "least_common"):
            ranked = sorted(LABELS, key=lambda lab: counts[lab], reverse=kind == "most_common")
            assert counts[ranked[0]] != counts[ranked[1]], "the answer must be unique"
            assert example.gold == ranked[0]
        elif kind.startswith("count"):
            assert example.gold == counts[info["label"]]
        elif kind.startswith("compare"):
            assert example.gold == relation(counts[info["a"]], counts[info["b"]])
        else:
            per_user = Counter(u for _, u, lab in rows if lab == info["label"]).most_common(2)
            assert per_user[0][1] > per_user[1][1], "the answer must be unique"
            assert example.gold == str(per_user[0][0])


def test_unlabelled_text_never_names_a_class():
    example = Aggregate().generate(7, 8192)
    assert "Label:" not in example.context
    assert "Label:" in Aggregate(labelled=True).generate(7, 8192).context


def test_every_class_occurs_and_class_sizes_differ():
    for seed in range(10):
        rows = parse(Aggregate().generate(seed, 2048).context, labelled=False)
        counts = Counter(label for _, _, label in rows)
        assert set(counts) == set(LABELS)
        assert len(set(counts.values())) == len(LABELS)


def expected_pairs(rows, info):
    table = defaultdict(lambda: defaultdict(list))
    for day, user, label in rows:
        table[user][label].append(day)
    users = sorted(table)
    kind, x, y = info["kind"], info.get("x"), info.get("y")
    if kind == "either":
        ok = [u for u in users if table[u][x] or table[u][y]]
        return set(itertools.combinations(ok, 2))
    if kind == "after":
        ok = [u for u in users if any(d > date(info["day"]) for d in table[u][x])]
        return set(itertools.combinations(ok, 2))
    if kind == "exactly":
        ok = [u for u in users if len(table[u][x]) == info["k"]]
        return set(itertools.combinations(ok, 2))
    if kind == "roles":
        return {
            (a, b) for a in users for b in users if table[a][x] and table[b][y] and not table[b][x]
        }
    cut = date(info["day"])
    return {
        (a, b)
        for a in users
        for b in users
        if a != b and any(d < cut for d in table[a][x]) and any(d >= cut for d in table[b][y])
    }


@pytest.mark.parametrize("labelled", [False, True])
def test_pairs_gold_matches_a_recount(labelled):
    kinds = set()
    for seed in range(25):
        example = Pairs(labelled=labelled).generate(seed, 4096)
        kinds.add(example.info["kind"])
        gold = {tuple(p) for p in example.gold}
        assert gold, "every question has at least one pair"
        assert gold == expected_pairs(parse(example.context, labelled), example.info)
    assert kinds == {"either", "after", "exactly", "roles", "roles_dated"}


def test_pairs_score_is_f1_and_symmetric_pairs_may_come_in_any_order():
    task = Pairs()
    example = next(
        e for e in (task.generate(s, 4096) for s in range(50))
        if e.info["kind"] == "either" and len(e.gold) >= 4
    )  # fmt: skip
    gold = [tuple(p) for p in example.gold]
    swapped = "\n".join(f"({b}, {a})" for a, b in gold)
    assert task.score(example, swapped) == 1.0
    half = gold[: len(gold) // 2]
    recall = len(half) / len(gold)
    assert task.score(example, "\n".join(map(str, half))) == pytest.approx(
        2 * recall / (1 + recall)
    )


def test_user_questions_are_rarely_answered_by_the_busiest_user():
    # Naming the most active user must not be a shortcut past classification.
    shortcut = total = 0
    for seed in range(150):
        example = Aggregate().generate(seed, 4096)
        if example.info["kind"] != "user_most":
            continue
        users = Counter(user for _, user, _ in parse(example.context, labelled=False))
        total += 1
        shortcut += str(users.most_common(1)[0][0]) == example.gold
    assert total >= 10 and shortcut <= total // 2
