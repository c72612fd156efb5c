"""The embedded model's fast path for packs of labels (`deeprlm.local.labels`), over a
word-level tokenizer and a scorer that prefers a scripted label per item."""

from __future__ import annotations

import json
import re
import threading

import pytest

from deeprlm.local.labels import (
    CONTENT_FREE,
    NEUTRAL_ITEMS,
    LabelObject,
    decode_labels,
    label_object,
    neutral_items,
)
from deeprlm.primitives import packing


class Words:
    """Tokens are words, runs of spaces and single marks; the scorer favours the next
    token of the label wanted for the item being written (by its position in the reply, or
    by the item it has read when `by_item` maps items to labels), and notes what it had
    read before each choice. With `copies`, it is a model that repeats the last label it
    read."""

    def __init__(self, wanted: list[str], by_item=None, copies=False, lean=None, words=None):
        self.wanted = wanted
        self.by_item = by_item or {}
        self.copies = copies
        self.lean = lean or {}  # the prompt's pull towards a label's first word, any item
        self.words = words or {}  # the pull of an item of random words (several, no sense)
        self.ids: dict[str, int] = {}
        self.texts: dict[int, str] = {}
        self.fed: list[int] = []
        self.reads: list[str] = []  # what it had read at each choice
        self.steps = 0
        self.rewinds = 0

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
        self.reads.append(written)
        keys = [json.loads(key) for key in re.findall(r'(?:\{|, )("(?:[^"\\]|\\.)*"): "', written)]
        labelled = re.findall(r'": "((?:[^"\\]|\\.)*)"', written)
        so_far = written.rsplit('": "', 1)[1]
        lean = {self.ids.get(word): pull for word, pull in self.lean.items()}
        if self.copies and labelled:
            wanted = labelled[-1]
        elif keys[-1] in self.by_item:
            wanted = self.by_item[keys[-1]]
        elif self.by_item:  # an item that says nothing
            if " " in keys[-1]:
                for word, pull in self.words.items():
                    lean[self.ids.get(word)] = lean.get(self.ids.get(word), 0.0) + pull
            return lambda token: lean.get(token, 0.0)
        else:
            wanted = self.wanted[len(keys) - 1]
        target = self.tokenize(json.dumps(wanted)[1:])
        best = target[len(self.tokenize(so_far))] if so_far else target[0]
        return lambda token: (1.0 if token == best else 0.0) + lean.get(token, 0.0)

    def rewind(self) -> None:
        self.rewinds += 1
        self.fed = []


def run(
    labels,
    wanted,
    *,
    limit=500,
    cancel=None,
    items=None,
    copies=False,
    lean=None,
    leans=None,
    words=None,
):
    by_item = dict(zip(items, wanted, strict=True)) if items else {}
    model = Words(wanted, by_item, copies, lean, words)
    for label in labels:  # every label's words known, as a real vocabulary's are
        model.tokenize(label)
    schema = packing.reply_schema(len(wanted), {"enum": labels})
    for key, item in zip(schema["properties"], items or (), strict=False):
        schema["properties"][key]["description"] = item
    shape = label_object(schema)
    assert shape is not None
    decoded = decode_labels(
        shape, model.tokenize, model.step, model.rewind, limit, cancel or threading.Event(), leans
    )
    return decoded, decoded.text(shape), model


def test_each_item_gets_the_label_the_model_scores_highest_and_only_choices_cost_a_step():
    labels = ["human being", "human rights", "place", "number"]
    wanted = ["place", "human rights", "number", "human being"]
    decoded, text, model = run(labels, wanted)
    assert decoded.reason == "stop" and decoded.labels == wanted
    assert json.loads(text) == dict(zip("1234", wanted, strict=True))
    # One choice among first words per item, and a second one after "human".
    assert model.steps == 4 + 2
    # The model read the reply as it is written, up to the last choice.
    assert text.startswith(model.text(model.fed))
    assert decoded.reply_tokens == len(model.tokenize(text)) - 1  # all but the closing brace
    assert decoded.read_tokens == 0


def test_a_label_that_begins_another_is_chosen_by_the_quote_that_follows_it():
    decoded, text, _ = run(["human", "human being"], ["human", "human being", "human"])
    assert decoded.reason == "stop"
    assert json.loads(text) == {"1": "human", "2": "human being", "3": "human"}


def test_one_label_costs_no_step_and_labels_are_written_as_json_strings():
    _, text, model = run(['say "hi"'], ['say "hi"', 'say "hi"'])
    assert json.loads(text) == {"1": 'say "hi"', "2": 'say "hi"'}
    assert model.steps == 0


def test_items_in_the_schema_are_read_each_alone_just_before_its_label():
    items = ["Where is Paris?", "How many legs has a spider?"]
    decoded, text, model = run(["place", "number"], ["place", "number"], items=items)
    assert json.loads(text) == {"1": "place", "2": "number"}  # the reply holds labels only
    # Each choice saw its own item as the first key, and nothing of the other item.
    assert model.reads == ['{"Where is Paris?": "', '{"How many legs has a spider?": "']
    assert model.rewinds == 2
    assert decoded.read_tokens == len(model.tokenize("".join(model.reads)))


def test_a_label_read_alone_does_not_copy_the_label_before_it():
    # A model that repeats the last label it read labels a pack read in one run with its
    # first label throughout; read alone, each item gets its own.
    items = ["Where is Paris?", "How many legs has a spider?", "Where is Rome?"]
    wanted = ["place", "number", "place"]
    decoded, _, _ = run(["place", "number"], wanted, items=items, copies=True)
    assert decoded.labels == wanted
    decoded, _, model = run(["place", "number"], wanted, copies=True)
    assert decoded.labels == ["place", "place", "place"] and model.rewinds == 0


def test_a_lean_the_prompt_gives_every_item_is_measured_on_neutral_items_and_half_taken_back():
    # The prompt pulls every item towards "place" by 1.5: an item the model scores 1 higher
    # for "number" goes to "place" unless the pull, as read on items that say nothing, is
    # taken back (half of it: 1 - 1.5 + 0.75 > 0).
    items = ["Where is Paris?", "How many legs has a spider?", "How old is Rome?"]
    wanted = ["place", "number", "number"]
    lean = {"place": 1.5}
    decoded, _, _ = run(["place", "number"], wanted, items=items, lean=lean)
    assert decoded.labels == ["place", "place", "place"]  # no measure of the lean kept
    leans: dict = {}
    decoded, _, model = run(["place", "number"], wanted, items=items, lean=lean, leans=leans)
    assert decoded.labels == wanted
    neutral = neutral_items(items)
    assert len(neutral) == NEUTRAL_ITEMS and all(
        word in " ".join(items).split() for text in neutral for word in text.split()
    )
    neutral = [*CONTENT_FREE, *neutral]  # empty items, then the items' words
    assert model.reads[: len(neutral)] == ["{" + json.dumps(text) + ': "' for text in neutral]
    assert len(model.reads) == len(neutral) + len(items)
    # Kept for the prompt: the next pack reads no neutral item.
    decoded, _, model = run(["place", "number"], wanted, items=items, lean=lean, leans=leans)
    assert decoded.labels == wanted and len(model.reads) == len(items)


def test_the_lean_is_the_mean_of_what_empty_items_and_random_words_read_as():
    # Random words read as "number" (0.8 more than empty items do) on top of the prompt's
    # pull to "place": measured on them alone, the lean takes too much from "number" and an
    # item that prefers it by 1 goes to "place"; with empty items in the measure it does not.
    items = ["Where is Paris?", "How many legs has a spider?", "How old is Rome?"]
    wanted = ["place", "number", "number"]
    decoded, _, model = run(
        ["place", "number"],
        wanted,
        items=items,
        lean={"place": 1.5},
        words={"number": 0.8},
        leans={},
    )
    assert decoded.labels == wanted
    assert model.reads[: len(CONTENT_FREE)] == ["{" + json.dumps(t) + ': "' for t in CONTENT_FREE]


def test_neutral_items_are_as_long_as_an_item_and_the_same_each_time():
    items = ["one two three", "four five six seven", "eight nine"]
    neutral = neutral_items(items)
    assert neutral == neutral_items(items)
    assert all(len(text.split()) == 3 for text in neutral)
    assert neutral_items(["", " "]) == [""]


def test_a_reply_cut_by_its_token_limit_or_a_cancel_keeps_the_labels_chosen():
    decoded, text, _ = run(["yes", "no"], ["yes", "no", "yes"], limit=9)
    assert decoded.reason == "length" and decoded.labels == ["yes"] and text == '{"1": "yes"}'
    cancel = threading.Event()
    cancel.set()
    decoded, text, model = run(["yes", "no"], ["yes", "no"], cancel=cancel)
    assert decoded.reason == "cancelled" and model.steps == 0 and text == "{}"


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": ["a", "b"]},
        packing.reply_schema(2, {"type": "string"}),
        {**packing.reply_schema(2, {"enum": ["a"]}), "additionalProperties": True},
        {**packing.reply_schema(2, {"enum": ["a"]}), "required": ["1"]},
        packing.reply_schema(2, {"enum": []}),
        packing.reply_schema(2, {"enum": ["a", 3]}),
        packing.reply_schema(2, {"enum": ["a"], "title": "x"}),
        {**packing.reply_schema(2, {"enum": ["a"]}), "title": "t"},
        None,
    ],
)
def test_other_schemas_are_left_to_the_grammar(schema):
    assert label_object(schema) is None


def test_a_pack_schema_is_read_as_its_keys_labels_and_items():
    shape = label_object(packing.reply_schema(2, {"enum": ["b", "a", "b"]}))
    assert shape == LabelObject(("1", "2"), (("b", "a"), ("b", "a")))
    schema = packing.reply_schema(2, {"enum": ["a", "b"]})
    schema["properties"]["1"]["description"] = "first"
    assert label_object(schema).items is None  # items only when every key has one
    schema["properties"]["2"]["description"] = "second"
    assert label_object(schema).items == ("first", "second")
