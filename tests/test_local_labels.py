"""The embedded model's fast path for packs of labels (`deeprlm.local.labels`), over a
word-level tokenizer and a scorer that prefers a scripted label per item."""

from __future__ import annotations

import json
import re
import threading

import pytest

from deeprlm.local.labels import LabelObject, decode_labels, label_object
from deeprlm.primitives import packing


class Words:
    """Tokens are words, runs of spaces and single marks; the scorer favours the next
    token of the label wanted for the item being written."""

    def __init__(self, wanted: list[str]) -> None:
        self.wanted = wanted
        self.ids: dict[str, int] = {}
        self.texts: dict[int, str] = {}
        self.fed: list[int] = []
        self.steps = 0

    def tokenize(self, text: str) -> list[int]:
        out = []
        for piece in re.findall(r"\w+|\s+|[^\w\s]", text):
            if piece not in self.ids:
                self.ids[piece] = len(self.ids)
                self.texts[self.ids[piece]] = piece
            out.append(self.ids[piece])
        return out

    def text(self, tokens: list[int]) -> str:
        return "".join(self.texts[t] for t in tokens)

    def step(self, tokens: list[int]):
        self.fed += tokens
        self.steps += 1
        written = self.text(self.fed)
        item = written.count('": "') - 1
        so_far = written.rsplit('": "', 1)[1]
        target = self.tokenize(json.dumps(self.wanted[item])[1:] + ",")
        best = target[len(self.tokenize(so_far))] if so_far else target[0]
        return lambda token: 1.0 if token == best else 0.0


def run(labels: list[str], wanted: list[str], *, limit: int = 500, cancel=None):
    model = Words(wanted)
    shape = label_object(packing.reply_schema(len(wanted), {"enum": labels}))
    assert shape is not None
    tokens, reason = decode_labels(
        shape, model.tokenize, model.step, limit, cancel or threading.Event()
    )
    return model.text(tokens), reason, model


def test_each_item_gets_the_label_the_model_scores_highest_and_only_choices_cost_a_step():
    labels = ["human being", "human rights", "place", "number"]
    wanted = ["place", "human rights", "number", "human being"]
    text, reason, model = run(labels, wanted)
    assert reason == "stop"
    assert json.loads(text) == dict(zip("1234", wanted, strict=True))
    # One choice among first words per item, and a second one after "human".
    assert model.steps == 4 + 2
    # Everything written was evaluated but the closing text after the last choice.
    assert text.startswith(model.text(model.fed))


def test_a_label_that_begins_another_is_chosen_by_the_text_that_follows_it():
    labels = ["human", "human being"]
    text, reason, _ = run(labels, ["human", "human being", "human"])
    assert reason == "stop"
    assert json.loads(text) == {"1": "human", "2": "human being", "3": "human"}


def test_one_label_costs_no_step_and_labels_are_written_as_json_strings():
    text, _, model = run(['say "hi"'], ['say "hi"', 'say "hi"'])
    assert json.loads(text) == {"1": 'say "hi"', "2": 'say "hi"'}
    assert model.steps == 0


def test_a_reply_cut_by_its_token_limit_or_a_cancel_says_so():
    text, reason, _ = run(["yes", "no"], ["yes", "no", "yes"], limit=9)
    assert reason == "length" and text.startswith('{"1": "yes"')
    cancel = threading.Event()
    cancel.set()
    text, reason, model = run(["yes", "no"], ["yes", "no"], cancel=cancel)
    assert reason == "cancelled" and model.steps == 0 and text == ""


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": ["a", "b"]},
        packing.reply_schema(2, {"type": "string"}),
        {**packing.reply_schema(2, {"enum": ["a"]}), "additionalProperties": True},
        {**packing.reply_schema(2, {"enum": ["a"]}), "required": ["1"]},
        packing.reply_schema(2, {"enum": []}),
        packing.reply_schema(2, {"enum": ["a", 3]}),
        packing.reply_schema(2, {"enum": ["a"], "description": "x"}),
        {**packing.reply_schema(2, {"enum": ["a"]}), "title": "t"},
        None,
    ],
)
def test_other_schemas_are_left_to_the_grammar(schema):
    assert label_object(schema) is None


def test_a_pack_schema_is_read_as_its_keys_and_labels():
    shape = label_object(packing.reply_schema(2, {"enum": ["b", "a", "b"]}))
    assert shape == LabelObject(("1", "2"), (("b", "a"), ("b", "a")))
