"""The decomposition primitives inside a run: llm_map / llm_classify reach the sub-model as
packed, schema-constrained calls in both REPLs; search, chunk_text, records and parse_date
work in the REPL; the trace records the packing; sub-calls off means off."""

from __future__ import annotations

import json
import re

import pytest

from deeprlm import RLM, InputError, ScriptedLM
from deeprlm.trace.events import BatchEnded, BatchStarted, LMCallEnded

from conftest import repl

REPLS = ["inprocess", "sandbox"]

RECORDS = "\n".join(
    f"Date: Jan {day:02d}, 2024 || User: {10 + day % 3} || Instance: {question}"
    for day, question in enumerate(
        ["Who painted it?", "Where is it?", "Who wrote it?", "How tall is it?"] * 10, 1
    )
    if day <= 28
)


def labeller(messages):
    """A sub-model that labels numbered questions by their first word."""
    prompt = messages[-1]["content"]
    items = dict(re.findall(r"^(\d+)\. (.*)$", prompt, re.M))
    first = {"Who": "human being", "Where": "location", "How": "numeric value"}
    return json.dumps({n: first[text.split()[0]] for n, text in items.items()})


# A count of the records labelled 'human being' (14 of 28).
COUNT_CODE = (
    "rows = records(context)\n"
    "labels = llm_classify([r['Instance'] for r in rows], "
    "['human being', 'location', 'numeric value'])\n"
    "print(len(rows), labels.count('human being'))"
)


@pytest.mark.parametrize("kind", REPLS)
def test_a_count_through_llm_classify_in_one_packed_call(kind):
    root = ScriptedLM([repl(COUNT_CODE), "FINAL(done)"])
    sub = ScriptedLM(labeller, name="sub")
    result = RLM(root, sub, repl=kind).run("how many?", RECORDS)
    assert "28 14" in root.calls[1][-1]["content"]
    # 28 records, 4 distinct questions: one call, with the label set as the schema's enum.
    assert result.sub_calls == 1 and len(sub.calls) == 1
    assert sub.schemas[0]["properties"]["1"] == {
        "enum": ["human being", "location", "numeric value"]
    }
    # The run's question travels with the pack: it says what the labels mean.
    assert "<question>\nhow many?\n</question>" in sub.calls[0][-1]["content"]


class InlineLabeller(ScriptedLM):
    """A sub-model that reads a pack's items from its reply schema (as the embedded one
    does), and labels them by their first word."""

    inline_labels = True

    def __init__(self) -> None:
        super().__init__(self.label, name="sub")

    def label(self, messages):
        first = {"Who": "human being", "Where": "location", "How": "numeric value"}
        keys = self.schemas[-1]["properties"]
        return json.dumps({n: first[key["description"].split()[0]] for n, key in keys.items()})


def test_a_sub_model_that_reads_items_inline_gets_them_in_the_schema_not_the_prompt():
    root = ScriptedLM([repl(COUNT_CODE), "FINAL(done)"])
    sub = InlineLabeller()
    events = []
    RLM(root, sub, repl="inprocess", on_event=events.append).run("how many?", RECORDS)
    assert "28 14" in root.calls[1][-1]["content"]
    prompt = sub.calls[0][-1]["content"]
    assert "Who painted it?" not in prompt and "one at a time" in prompt
    described = [key["description"] for key in sub.schemas[0]["properties"].values()]
    assert described == ["Who painted it?", "Where is it?", "Who wrote it?", "How tall is it?"]
    # The trace shows the pack's items all the same.
    (pack,) = [e for e in events if isinstance(e, LMCallEnded) and e.purpose == "sub"]
    assert pack.prompt.startswith(prompt) and "1. Who painted it?\n2. Where is it?" in pack.prompt


@pytest.mark.parametrize("kind", REPLS)
def test_llm_map_over_a_dict_answers_by_key(kind):
    def shout(messages):
        items = dict(re.findall(r"^(\d+)\. (.*)$", messages[-1]["content"], re.M))
        return json.dumps({n: text.upper() for n, text in items.items()})

    code = "out = llm_map('Shout.', {'a.txt': 'hello', 'b.txt': 'bye'})\nprint(out)"
    root = ScriptedLM([repl(code), "FINAL(done)"])
    RLM(root, ScriptedLM(shout), repl=kind).run("q", "ctx")
    assert "{'a.txt': 'HELLO', 'b.txt': 'BYE'}" in root.calls[1][-1]["content"]


def test_the_trace_shows_items_packs_calls_and_reasks():
    asked: list[int] = []

    def forgetful(messages):
        items = dict(re.findall(r"^(\d+)\. (.*)$", messages[-1]["content"], re.M))
        asked.append(len(items))
        # The first reply leaves out its last item.
        keep = list(items)[:-1] if len(asked) == 1 else list(items)
        return json.dumps({n: items[n][::-1] for n in keep})

    events = []
    code = "print(llm_map('Reverse.', [f'w{i}' for i in range(25)]))"
    root = ScriptedLM([repl(code), "FINAL(done)"])
    result = RLM(root, ScriptedLM(forgetful), on_event=events.append).run("q", "ctx")
    started = next(e for e in events if isinstance(e, BatchStarted))
    ended = next(e for e in events if isinstance(e, BatchEnded))
    packs = (8, 8, 8, 1)  # the default pack size for the items' count
    assert (started.kind, started.items, started.unique, started.packs) == ("map", 25, 25, packs)
    assert started.size == 4 and started.instruction == "Reverse."
    assert (ended.calls, ended.reasked, ended.errors) == (5, 1, 0)
    subs = [e for e in events if isinstance(e, LMCallEnded) and e.purpose == "sub"]
    assert len(subs) == 5 and all(e.parent_id == started.id for e in subs)
    assert result.sub_calls == 5
    output = root.calls[1][-1]["content"]
    assert str([f"w{i}"[::-1] for i in range(25)]) in output
    assert asked == [8, 8, 8, 1, 1]  # the item left out is asked again on its own


def test_a_second_run_of_the_same_map_is_answered_from_the_cache():
    code = "print(llm_map('Reverse.', ['ab', 'cd']))"
    sub = ScriptedLM(
        lambda m: json.dumps(
            {n: t[::-1] for n, t in re.findall(r"^(\d+)\. (.*)$", m[-1]["content"], re.M)}
        )
    )
    root = ScriptedLM([repl(code), repl(code), "FINAL(done)"])
    result = RLM(root, sub).run("q", "ctx")
    assert result.sub_calls == 1 and len(sub.calls) == 1
    assert "['ba', 'dc']" in root.calls[2][-1]["content"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("llm_map('Do.', 'a whole text')", "items must be a list"),
        ("llm_map('', ['x'])", "instruction must be a non-empty str"),
        ("llm_classify(['x'], 'yes')", "labels must be a list"),
        ("llm_classify(['x'], ['only'])", "at least two"),
    ],
)
def test_misuse_is_an_error_the_model_reads(code, message):
    root = ScriptedLM([repl(code), "FINAL(done)"])
    RLM(root, ScriptedLM(["{}"])).run("q", "ctx")
    assert message in root.calls[1][-1]["content"]


def test_without_sub_calls_the_map_primitives_refuse_but_the_pure_ones_work():
    code = (
        "print(search('Who', context).total)\n"
        "print(len(chunk_text(context, 200)))\n"
        "print(parse_date(records(context)[0]['Date']))\n"
        "llm_classify(['x', 'y'], ['a', 'b'])"
    )
    root = ScriptedLM([repl(code), "FINAL(done)"])
    sub = ScriptedLM(["{}"])
    RLM(root, sub, allow_sub_calls=False).run("q", RECORDS)
    output = root.calls[1][-1]["content"]
    assert "14" in output and "2024-01-01" in output
    assert "sub-calls are disabled" in output
    assert not sub.calls


def test_user_tools_may_not_take_the_primitives_names():
    for name in ("search", "llm_map", "llm_classify", "records"):
        with pytest.raises(InputError, match="taken by the REPL"):
            RLM(ScriptedLM(["FINAL(x)"]), tools={name: lambda: None})


def test_packs_are_sized_to_the_sub_models_window():
    class SmallWindow(ScriptedLM):
        context_window = 100  # tokens: 200 characters of items per call

    sub = SmallWindow(
        lambda m: json.dumps(
            {n: "ok" for n, _ in re.findall(r"^(\d+)\. (.*)$", m[-1]["content"], re.M)}
        )
    )
    code = "print(llm_map('Check.', ['a' * 90, 'b' * 90, 'c' * 90, 'd' * 300]))"
    root = ScriptedLM([repl(code), "FINAL(done)"])
    events = []
    RLM(root, sub, on_event=events.append).run("q", "ctx")
    started = next(e for e in events if isinstance(e, BatchStarted))
    assert started.packs == (2, 1)  # two 90-character items fit 200, the third goes alone
    output = root.calls[1][-1]["content"]
    assert "['ok', 'ok', 'ok', 'Error: the item has 300 characters" in output


@pytest.mark.parametrize(
    ("context", "query", "kind", "shown"),
    [
        ({f"shop/m{i}.py": "X = 1" for i in range(4)}, "Which module defines X?", "code",
         "search(words, context)"),
        ({f"shop/m{i}.py": "X = 1" for i in range(4)}, "What does `shop.m1.f(2)` return?",
         "run", "run_code(context, expression)"),
        (RECORDS, "List all pairs of users who both asked about a person.", "pairs",
         "llm_classify(texts, labels)"),
        (RECORDS, "How many records are about a person? The labels are not given.", "judge",
         "llm_classify(texts, labels)"),
        (RECORDS.replace("?", "? || Topic: art"), "How many records have the topic art?",
         "count", "records(context)"),
        ("Just some prose.\\nWith lines.\\nAnd more.", "What is the code word?", "lookup",
         "re.finditer(r\"ferro\", context, re.IGNORECASE)"),
        (["Kell Fair\\nIts sponsor was Orm Foods.", "Orm Foods\\nFounded in 1950."],
         "In what year was the sponsor of the 1990 Kell Fair founded?", "chain",
         "print(follow_chain("),
    ],
)  # fmt: skip
def test_a_small_root_is_taught_the_kind_its_context_and_question_show(context, query, kind, shown):
    root = ScriptedLM(["FINAL(done)"])
    root.prompt_family = "small"
    events = []
    RLM(root, ScriptedLM(["{}"]), on_event=events.append).run(query, context)
    system = root.calls[0][0]["content"]
    assert shown in system
    notes = [e.message for e in events if getattr(e, "message", "").startswith("kind of")]
    assert notes and notes[0].startswith(f"kind of question: {kind} (")
    if kind in ("count", "lookup", "code"):
        assert "llm_classify" not in system  # one kind's functions only
    if kind in ("lookup", "chain"):
        assert "- search(" not in system  # the model wrote its own (broken) one


@pytest.mark.parametrize(
    ("context", "shown"),
    [
        (["Kell Fair\\nIts sponsor was Orm Foods.", "Orm Foods\\nFounded in 1950."],
         "for i, doc in enumerate(context):"),  # the example's code is for a list
        ("Kell Fair\\nIts sponsor was Orm Foods.\\n\\nOrm Foods\\nFounded in 1950.",
         "re.finditer(r\"blue hall\", context, re.IGNORECASE)"),
    ],
)  # fmt: skip
def test_without_sub_calls_a_chain_is_walked_with_re_one_search_a_turn(context, shown):
    root = ScriptedLM([repl("print(1)"), "FINAL(done)"])
    root.prompt_family = "small"
    query = "In what year was the sponsor of the 1990 Kell Fair founded?"
    RLM(root, allow_sub_calls=False).run(query, context)
    system = root.calls[0][0]["content"]
    assert shown in system and "follow_chain" not in system
    assert "search for that name now" in root.calls[1][-1]["content"]


HALLS = [
    "Blue Hall\nThe Blue Hall was designed by the architect Omar Lenz (born 1921).",
    "Omar Lenz (born 1950)\nOmar Lenz is a painter born in 1950 in Kest.",
    "Omar Lenz (born 1921)\nOmar Lenz is an architect born in 1921 in Varsel.",
    "Varsel\nVarsel is a town in Norland, on the river Ost.",
]


def hall_reader(messages):
    """A helper model that answers follow_chain's links about the halls."""
    question = messages[-1]["content"].split("\nQuestion: ", 1)[1].split("\n", 1)[0]
    answers = {
        "What is the architect of Blue Hall?": "Omar Lenz",
        "In which country was Omar Lenz (born 1921) born?": "Norland",
    }
    return json.dumps({"answer": answers[question]})


@pytest.mark.parametrize("kind", REPLS)
def test_follow_chain_answers_link_by_link_in_traced_constrained_sub_calls(kind):
    code = 'print(follow_chain("In which country was the architect of the Blue Hall born?"))'
    root = ScriptedLM([repl(code), "FINAL(Norland)"])
    sub = ScriptedLM(hall_reader)
    events = []
    result = RLM(root, sub, repl=kind, on_event=events.append).run("q", HALLS)
    assert result.answer == "Norland"
    assert "Norland" in root.calls[1][-1]["content"]
    assert len(sub.calls) == 2
    enums = [schema["properties"]["answer"]["enum"] for schema in sub.schemas]
    assert "Omar Lenz" in enums[0] and "Norland" in enums[1]
    started = next(e for e in events if isinstance(e, BatchStarted))
    ended = next(e for e in events if isinstance(e, BatchEnded))
    assert started.kind == "chain" and "architect of the Blue Hall" in started.instruction
    assert (ended.calls, ended.errors) == (2, 0)
    calls = [e for e in events if isinstance(e, LMCallEnded) and e.parent_id == started.id]
    assert len(calls) == 2


def test_a_small_roots_chain_opens_with_follow_chain_run_for_it():
    root = ScriptedLM(["FINAL(Answer: Norland)"])
    root.prompt_family = "small"
    events = []
    query = "In which country was the architect of the Blue Hall born? Answer as 'Answer: X'."
    result = RLM(root, ScriptedLM(hall_reader), on_event=events.append).run(query, HALLS)
    assert result.answer == "Answer: Norland" and result.iterations == 2
    (first_call,) = root.calls  # the model's first reply follows the step's output
    assert first_call[-2] == {
        "role": "assistant",
        "content": f"```repl\nprint(follow_chain({query!r}))\n```",
    }
    assert "Norland" in first_call[-1]["content"]
    assert "The output is follow_chain's answer: reply FINAL" in first_call[-1]["content"]
    notes = [e.message for e in events if getattr(e, "message", "")]
    assert any(m.startswith("the first turn runs the kind's first step: print(") for m in notes)


@pytest.mark.parametrize(
    ("query", "allow_sub_calls"),
    [
        ("Where was the architect of the Blue Hall born?", False),  # a chain, walked by hand
        ("Where does Omar Lenz live?", True),  # a look-up
    ],
)
def test_other_small_roots_write_their_first_turn_themselves(query, allow_sub_calls):
    root = ScriptedLM(["FINAL(x)"])
    root.prompt_family = "small"
    RLM(root, allow_sub_calls=allow_sub_calls).run(query, HALLS)
    assert [m["role"] for m in root.calls[0]] == ["system", "user"]


@pytest.mark.parametrize("kind", REPLS)
def test_follow_chain_errors_reach_the_code_and_sub_calls_off_means_off(kind):
    code = (
        "try:\n"
        "    follow_chain('Who was the architect of the Zorbu Tower?')\n"
        "except LookupError as err:\n"
        "    print('lookup:', err)\n"
        "print(follow_chain('Who was the architect of the Blue Hall?'))"
    )
    root = ScriptedLM([repl(code), "FINAL(done)"])
    RLM(root, ScriptedLM(['{"answer": "Frank"}']), repl=kind).run("q", HALLS)
    output = root.calls[1][-1]["content"]
    assert "lookup: follow_chain: nothing in the context matches 'Zorbu Tower'" in output
    assert "'Frank' is not written in the documents found" in output
    root = ScriptedLM([repl("follow_chain('Who was the architect of the Blue Hall?')"), "FINAL(x)"])
    RLM(root, repl=kind, allow_sub_calls=False).run("q", HALLS)
    assert "sub-calls are disabled" in root.calls[1][-1]["content"]


def test_without_sub_calls_a_judging_root_is_shown_no_sub_call_function():
    root = ScriptedLM(["FINAL(done)"])
    root.prompt_family = "small"
    RLM(root, allow_sub_calls=False).run("How many records are about a person?", RECORDS)
    system = root.calls[0][0]["content"]
    assert "llm_classify" not in system and "records(context)" in system


@pytest.mark.parametrize("kind", REPLS)
def test_a_cell_that_defines_a_provided_function_again_uses_the_real_one(kind):
    code = (
        "def search(words, context):\n"
        "    return 'my own search'\n"
        "hits = search(['Who'], context)\n"
        "print(hits.total)"
    )
    root = ScriptedLM([repl(code), "FINAL(done)"])
    RLM(root, repl=kind).run("q", RECORDS)
    output = root.calls[1][-1]["content"]
    assert "search() is already defined in the REPL" in output
    assert "14" in output and "my own search" not in output


@pytest.mark.parametrize("kind", REPLS)
def test_search_and_records_default_to_the_context(kind):
    code = "print(search('Who').total, len(records()), search(context, 'Where').total)"
    root = ScriptedLM([repl(code), "FINAL(done)"])
    RLM(root, repl=kind).run("q", RECORDS)
    assert "14 28 7" in root.calls[1][-1]["content"]


@pytest.mark.parametrize("kind", REPLS)
def test_made_up_data_never_replaces_the_context_nor_a_made_up_final_the_real_one(kind):
    code = (
        "context = ['an example document']\n"
        "def FINAL(answer):\n"
        "    print('pretend', answer)\n"
        "print(len(context))"
    )
    root = ScriptedLM([repl(code), repl("context = context.lower()\nprint(context[:4])"),
                       "FINAL(done)"])  # fmt: skip
    RLM(root, repl=kind).run("q", RECORDS)
    first = root.calls[1][-1]["content"]
    assert "assignment to it was left out" in first and "FINAL() is already defined" in first
    assert str(len(RECORDS)) in first
    assert "date" in root.calls[2][-1]["content"]  # a value made from the context is kept


REVIEWS = "\n".join(
    f"Day: Jan {d:02d}, 2024 || Shop: {d % 5} || Review: {text}"
    for d, text in enumerate(
        [
            "The parcel came two weeks after the promised date.",
            "Far too expensive for what you get in the box.",
            "The handle broke on the second day of use.",
            "Courier left the parcel in the rain at the gate.",
        ]
        * 6,
        1,
    )
)


def review_labeller(messages):
    items = dict(re.findall(r"^(\d+)\. (.*)$", messages[-1]["content"], re.M))
    return json.dumps(
        {
            n: "delivery" if "parcel" in text else "price" if "expensive" in text else "quality"
            for n, text in items.items()
        }
    )


@pytest.mark.parametrize("kind", REPLS)
def test_a_small_roots_judged_count_opens_with_the_rows_labelled_for_it(kind):
    query = (
        "Each review is one of: delivery, price, quality. The labels are not given. "
        "How many reviews have the label 'delivery'?"
    )
    root = ScriptedLM(["FINAL(Answer: 12)"])
    root.prompt_family = "small"
    sub = ScriptedLM(review_labeller)
    result = RLM(root, sub, repl=kind).run(query, REVIEWS)
    assert result.answer == "Answer: 12" and result.iterations == 2
    (first_call,) = root.calls
    step = first_call[-2]["content"]
    assert 'llm_classify([r["Review"] for r in rows], ["delivery", "price", "quality"])' in step
    output = first_call[-1]["content"]
    assert "24 rows; their fields: ['Day', 'Shop', 'Review', 'label']" in output
    assert "labels, most common first: [('delivery', 12), ('price', 6), ('quality', 6)]" in output
    assert "If the output answers the question as it is, reply FINAL(answer)" in output
    assert sub.schemas[0]["properties"]["1"] == {"enum": ["delivery", "price", "quality"]}


def test_a_small_roots_pairs_question_opens_with_the_rows_labelled_and_ends_on_its_variable():
    query = (
        "Each review is one of: delivery, price, quality. List all pairs of shops where both "
        "shops have exactly 3 reviews with the label 'delivery'."
    )
    cell = (
        "from collections import Counter, defaultdict\n"
        "n = defaultdict(Counter)\n"
        "for r in rows:\n"
        '    n[int(r["Shop"])][r["label"]] += 1\n'
        'shops = sorted(s for s in n if n[s]["delivery"] == 3)\n'
        'answer = "\\n".join(f"({a}, {b})" for i, a in enumerate(shops) for b in shops[i + 1:])\n'
        "print(len(shops), answer)"
    )
    root = ScriptedLM([repl(cell), 'FINAL_VAR("answer")'])
    root.prompt_family = "small"
    result = RLM(root, ScriptedLM(review_labeller), repl="inprocess").run(query, REVIEWS)
    # Twelve parcels over five shops: three at shops 1 and 4, two at each other shop.
    assert result.answer == "(1, 4)" and result.iterations == 3
    first_call = root.calls[0]
    assert (
        'llm_classify([r["Review"] for r in rows], ["delivery", "price", "quality"])'
        in (first_call[-2]["content"])
    )
    # After the labelled rows: write the condition (the counts are no answer); after the
    # pairs: name them.
    assert "Now write code for the question's condition" in first_call[-1]["content"]
    assert "If the output shows the pairs" not in first_call[-1]["content"]
    assert "If the output shows the pairs" in root.calls[1][-1]["content"]
    assert 'n[s]["delivery"] == 2' in first_call[0]["content"]  # the example says "exactly"


def test_a_pairs_run_whose_turns_end_answers_with_its_answer_variable():
    query = (
        "Each review is one of: delivery, price, quality. List all pairs of shops where both "
        "shops have exactly 3 reviews with the label 'delivery'."
    )
    cell = repl('answer = "(1, 4)"\nprint(1, "pairs")')
    root = ScriptedLM([cell, cell, cell, '{"answer": "There are no such pairs."}'])
    root.prompt_family = "small"
    result = RLM(root, ScriptedLM(review_labeller), repl="inprocess").run(query, REVIEWS)
    assert result.forced and result.answer == "(1, 4)"
    assert len(root.calls) == 3  # the forced reply was not asked for
    # A run that never assigned it is asked, as before.
    other = ScriptedLM([repl("print(2)")] * 3 + ['{"answer": "(2, 3)"}'])
    other.prompt_family = "small"
    result = RLM(other, ScriptedLM(review_labeller), repl="inprocess").run(query, REVIEWS)
    assert result.forced and result.answer == "(2, 3)" and len(other.calls) == 4


def test_a_small_root_is_told_which_of_the_questions_choices_its_output_names():
    files = {
        "shop/mailer/send.py": 'def configure_mail(config):\n    config["mail.retries"] = 3\n',
        "shop/mailer/queue.py": 'def read_retries(config):\n    return config["mail.retries"]\n',
        "shop/auth/session.py": "def load(config):\n    return config\n",
    }
    query = (
        "Which function writes the config key `mail.retries`?\nA) shop.auth.session.load\n"
        "B) shop.mailer.send.configure_mail\nC) shop.mailer.queue.read_retries\n"
        "D) shop.mailer\nGive your final answer in the form 'Answer: <letter>'."
    )
    root = ScriptedLM([repl('print(search("mail.retries", context))'), "FINAL(Answer: B)"])
    root.prompt_family = "small"
    assert RLM(root, repl="inprocess").run(query, files).answer == "Answer: B"
    told = root.calls[1][-1]["content"]
    assert "in shop.mailer.send.configure_mail]" in told
    # Named whole only: shop.mailer (D) is a prefix of what the hits name, not named.
    assert (
        "Of the question's choices, the output names: B) shop.mailer.send.configure_mail, "
        "C) shop.mailer.queue.read_retries." in told
    )


@pytest.mark.parametrize(
    ("family", "reply", "answer"),
    [
        ("small", "shop.mailer.send.configure_mail", "Answer: B"),
        ("small", "FINAL(Answer: C)", "Answer: C"),  # a letter given stands
        ("default", "FINAL(shop.mailer.send.configure_mail)", "shop.mailer.send.configure_mail"),
    ],
)
def test_a_small_roots_answer_naming_one_choice_is_given_as_its_letter(family, reply, answer):
    files = {"shop/mailer/send.py": 'def configure_mail(config):\n    config["m.r"] = 3\n'}
    query = (
        "Which function writes the config key `m.r`?\nA) shop.auth.load\n"
        "B) shop.mailer.send.configure_mail\nC) shop.mailer.queue.read\n"
        "Give your final answer in the form 'Answer: <letter>'."
    )
    root = ScriptedLM([repl('print(search("m.r", context))'), reply])
    root.prompt_family = family
    assert RLM(root, repl="inprocess").run(query, files).answer == answer
