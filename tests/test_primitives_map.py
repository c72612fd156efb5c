"""`map_items` / `classify_items` over a scripted sub-call: packing, reading numbered replies,
asking again for what is missing, input order, per-item errors, the label set."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from deeprlm.errors import LMError, SubCallLimitError
from deeprlm.primitives import packing
from deeprlm.primitives.mapping import PackLimits, classify_items, map_items, match_label


class Sub:
    """A scripted sub-call: answers each numbered item with `answer(item)` (None leaves it
    out of the reply), and records every prompt, schema and reply-token limit."""

    def __init__(self, answer=lambda item: item.upper(), *, reply=None):
        self.answer = answer
        self.reply = reply
        self.prompts: list[str] = []
        self.schemas: list[dict] = []
        self.tokens: list[int | None] = []

    async def __call__(self, prompt, schema, tokens):
        self.prompts.append(prompt)
        self.schemas.append(schema)
        self.tokens.append(tokens)
        items = items_of(prompt)
        if self.reply is not None:
            return self.reply(items)
        answers = {}
        for number, item in items.items():
            value = self.answer(item)
            if isinstance(value, Exception):
                raise value
            if value is not None:
                answers[str(number)] = value
        return json.dumps(answers)


def items_of(prompt: str) -> dict[int, str]:
    body = prompt.split("Items:\n", 1)[1].rsplit("\n\nReply with", 1)[0]
    if body.startswith("### Item"):
        parts = re.split(r"^### Item (\d+)\n", body, flags=re.M)[1:]
        return {int(n): text.strip() for n, text in zip(parts[::2], parts[1::2], strict=True)}
    return {int(n): text for n, text in re.findall(r"^(\d+)\. (.*)$", body, re.M)}


def run(coro):
    return asyncio.run(coro)


def test_items_are_packed_and_answers_come_back_in_input_order():
    sub = Sub()
    items = [f"item {i}" for i in range(45)]
    report = run(map_items(sub, "Shout it.", items, limits=PackLimits(max_items=20)))
    assert report.answers == [f"ITEM {i}" for i in range(45)]
    assert report.packs == [20, 20, 5]
    assert report.calls == 3 and report.errors == 0
    # Every pack starts with the instruction (a shared prefix) and numbers its items from 1.
    assert all(p.startswith("Shout it.") for p in sub.prompts)
    assert items_of(sub.prompts[2]) == {n: f"item {40 + n - 1}" for n in range(1, 6)}


def test_pack_size_follows_the_character_budget():
    sub = Sub()
    items = [f"{i:03d}" + "y" * 397 for i in range(10)]
    report = run(map_items(sub, "Do.", items, limits=PackLimits(max_items=50, max_chars=1000)))
    assert report.packs == [2, 2, 2, 2, 2]
    assert report.answers == [item.upper() for item in items]


def test_reply_tokens_bound_the_pack_size():
    sub = Sub()
    limits = PackLimits(max_items=50, answer_tokens=24, max_reply_tokens=104)
    report = run(map_items(sub, "Do.", [str(i) for i in range(9)], limits=limits))
    assert report.packs == [3, 3, 3]  # (104 - 8) // (24 + 8) items fit one reply
    assert all(tokens is not None and tokens <= 104 for tokens in sub.tokens)


def test_the_schema_asks_for_every_number_of_the_pack():
    sub = Sub()
    run(map_items(sub, "Do.", ["a", "b", "c"]))
    schema = sub.schemas[0]
    assert schema["required"] == ["1", "2", "3"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["2"]["type"] == "string"


def test_items_missing_from_a_reply_are_asked_again_in_smaller_packs():
    dropped = {"item 3", "item 7"}
    seen: dict[str, int] = {}

    def answer(item):
        seen[item] = seen.get(item, 0) + 1
        if item in dropped and seen[item] == 1:
            return None  # left out the first time only
        return item.upper()

    sub = Sub(answer)
    items = [f"item {i}" for i in range(10)]
    report = run(map_items(sub, "Do.", items, limits=PackLimits(max_items=10)))
    assert report.answers == [i.upper() for i in items]
    assert report.reasked == 2
    assert report.calls == 2
    assert set(items_of(sub.prompts[1]).values()) == dropped


def test_an_item_never_answered_becomes_an_error_value_in_its_place():
    sub = Sub(lambda item: None if item == "bad" else item.upper())
    report = run(map_items(sub, "Do.", ["a", "bad", "c"], limits=PackLimits(rounds=2)))
    assert report.answers[0] == "A" and report.answers[2] == "C"
    assert report.answers[1].startswith("Error: ")
    assert report.errors == 1
    assert report.calls == 3  # the first pack, then "bad" asked twice more


def test_a_failed_pack_costs_only_its_own_items():
    def answer(item):
        return LMError("server down") if item.startswith("b") else item.upper()

    sub = Sub(answer)
    items = ["a1", "a2", "b1", "b2"]
    limits = PackLimits(max_items=2, rounds=1)
    report = run(map_items(sub, "Do.", items, limits=limits))
    assert report.answers[:2] == ["A1", "A2"]
    assert all(a.startswith("Error: LMError: server down") for a in report.answers[2:])


def test_a_budget_that_runs_out_keeps_the_answers_made_and_asks_nothing_again():
    def answer(item):
        return SubCallLimitError("sub-call budget reached") if item.startswith("b") else "ok"

    sub = Sub(answer)
    limits = PackLimits(max_items=2, rounds=2)
    report = run(map_items(sub, "Do.", ["a1", "a2", "b1", "b2"], limits=limits))
    assert report.answers[:2] == ["ok", "ok"]
    assert all(
        a.startswith("Error: SubCallLimitError: sub-call budget reached")
        for a in report.answers[2:]
    )
    assert len(sub.prompts) == 2 and report.reasked == 0  # no second round


def test_equal_items_are_asked_once_and_a_cache_spares_a_second_map():
    sub = Sub()
    cache: dict = {}
    items = ["same", "other", "same", "same"]
    report = run(map_items(sub, "Do.", items, cache=cache))
    assert report.answers == ["SAME", "OTHER", "SAME", "SAME"]
    assert report.unique == 2 and report.packs == [2]
    again = run(map_items(sub, "Do.", ["other", "new"], cache=cache))
    assert again.answers == ["OTHER", "NEW"]
    assert again.cached == 1
    assert items_of(sub.prompts[-1]) == {1: "new"}
    # Another instruction is another question.
    run(map_items(sub, "Do otherwise.", ["same"], cache=cache))
    assert items_of(sub.prompts[-1]) == {1: "same"}


def test_an_item_too_long_for_one_call_is_an_error_value_and_is_not_sent():
    sub = Sub()
    report = run(map_items(sub, "Do.", ["short", "z" * 500], limits=PackLimits(max_chars=100)))
    assert report.answers[0] == "SHORT"
    assert report.answers[1].startswith("Error: the item has 500 characters")
    assert all("zzz" not in p for p in sub.prompts)


def test_multi_line_items_get_a_heading_each():
    sub = Sub(lambda item: str(item.count("\n") + 1))
    report = run(map_items(sub, "Count lines.", ["a\nb", "c", "d\ne\nf"]))
    assert report.answers == ["2", "1", "3"]
    assert "### Item 3" in sub.prompts[0]


@pytest.mark.parametrize(
    "reply",
    [
        '{"1": "A", "2": "B", "3": "C"}',
        '```json\n{"1": "A", "2": "B", "3": "C"}\n```',
        'Sure! {"item 1": "A", "item 2": "B", "item 3": "C"}',
        '["A", "B", "C"]',
        "1: A\n2. B\n3) C",
    ],
)
def test_replies_are_read_in_every_shape_models_write(reply):
    assert packing.parse_numbered(reply, 3) == {1: "A", 2: "B", 3: "C"}


def test_a_truncated_json_reply_keeps_the_answers_it_holds():
    assert packing.parse_numbered('{"1": "A", "2": "B", "3": "C', 3) == {1: "A", 2: "B"}


def test_numbers_outside_the_pack_are_ignored():
    assert packing.parse_numbered('{"1": "A", "9": "Z", "0": "Y"}', 2) == {1: "A"}


def test_classify_holds_answers_to_the_labels():
    labels = ["human being", "location", "numeric value"]

    said = {"who": "Human Being", "where": "location.", "how many": "numeric", "odd": "a place"}
    sub = Sub(lambda item: said[item])
    report = run(classify_items(sub, ["who", "where", "how many", "odd"], labels))
    assert report.answers[:3] == ["human being", "location", "numeric value"]
    assert report.answers[3].startswith("Error: ")  # "a place" names no label
    assert sub.schemas[0]["properties"]["1"] == {"enum": labels}
    assert "human being; location; numeric value" in sub.prompts[0]


def test_classify_refuses_a_label_set_it_cannot_use():
    with pytest.raises(ValueError, match="at least two"):
        run(classify_items(Sub(), ["a"], ["only"]))
    with pytest.raises(ValueError, match="differ"):
        run(classify_items(Sub(), ["a"], ["Yes", "yes"]))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("entity", "entity"),
        ('"ENTITY"', "entity"),
        ("numeric", "numeric value"),
        ("numeric value (a count)", "numeric value"),
        ("human", None),  # could be "human being" or "humane" below: unclear
        ("", None),
    ],
)
def test_label_matching(answer, expected):
    labels = ["entity", "numeric value", "human being", "humane"]
    assert match_label(answer, labels) == expected


def test_pack_limits_are_checked():
    with pytest.raises(ValueError, match="max_items"):
        PackLimits(max_items=0)
    with pytest.raises(ValueError, match="rounds"):
        PackLimits(rounds=-1)
