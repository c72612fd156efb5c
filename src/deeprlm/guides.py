"""How a small root model is taught: one kind of question, one worked example.

A 1.5B model copies a worked example far better than it follows rules, and mixes two
examples into one wrong program (a second example once cost it needles it had found). So
the engine first picks the kind of question it faces (`pick_kind`), and the root then sees
the functions, steps and example of that kind only. Each kind's example is set in a world
unlike any benchmark's (orders, reviews, lighthouses, a mail service), so the model learns
the pattern, not an answer.

The pick reads the context's structure, not the model: a dict of source files is code; a
text of records is a count over a field the records state, a count over a class that must
be judged from their text, or a list of pairs (ordered pairs, where each of the two has a
role, apart); a question naming a call in source code is answered by running it; a question
that describes what it asks through another thing ("the founder of the sponsor of ...")
follows a chain of look-ups, one search a turn; anything else is a look-up. Asking the 1.5B
model itself, in a call held to the kinds' names, picked the expected kind for 5 of 7 task
families on three tuning seeds (and fewer with longer descriptions), which is why the
structure decides.

Within a kind, the example takes the question's form where the root would otherwise copy
the wrong one: a count's form of answer (`COUNT_FORMS`), a pairs condition
(`PAIR_CONDITIONS`), lettered choices for a code question.

`KINDS` is the one table: each kind's functions, steps and example come from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deeprlm.context import ContextInfo
from deeprlm.repl.functions import REPL_FUNCTIONS
from deeprlm.replies import answer_lead
from deeprlm.shape import DATE_PATTERN

FOLLOW_UP = "If the output answers it, reply FINAL(answer). If not, write different code"


@dataclass(frozen=True)
class Kind:
    name: str
    # What the router reads to recognise the kind.
    description: str
    # The REPL functions the prompt shows (keys of `FUNCTIONS`), in order.
    functions: tuple[str, ...]
    steps: str
    example: str
    # Taught in the plain words of the look-up prompt (see `deeprlm.prompts`) rather than
    # the kinds' template.
    plain: bool = False
    # The example for the context's shape ("str", "list", "dict") and the question's words,
    # where its code or its condition follows them; else `example`.
    example_for: Callable[[str, str], str] | None = None
    # What a small root is told after each output, below the question.
    follow_up: str = FOLLOW_UP
    # What it is told after its first turn's output instead, where that differs (the
    # first step's output is never the answer): words, or made from the question.
    first_follow_up: str | Callable[[str], str] | None = None
    # How the kind is taught when a run allows no sub-calls, if not as above minus the
    # functions that make them.
    without_sub_calls: Kind | None = None
    # The code of the root's first turn, from the question and the context's description,
    # for a kind whose first step is always the same (None where the question does not say
    # enough to write it): it runs for the root, which reads its output and goes on.
    first_step: Callable[[str, ContextInfo], str | None] | None = None
    # The variable the kind's example leaves its answer in: a run whose turns end without
    # a final answer answers with it, if its code assigned it.
    answer_variable: str | None = None


def taught(kind: Kind, sub_calls: bool) -> Kind:
    """The kind as a run with (or without) sub-calls teaches it."""
    return kind if sub_calls or kind.without_sub_calls is None else kind.without_sub_calls


FUNCTIONS: dict[str, str] = {
    "search": "search(words, context) -> hits: the lines holding the words (any case), each "
    "with where it is (key, line) and the lines around it. print(hits) to read them.",
    "records": "records(context) -> rows: one dict per line, keyed by field name.",
    "parse_date": "parse_date(text) -> a date you can compare; it reads 'Mar 04, 2023', "
    "'2023-03-04' and other forms.",
    "run_code": "run_code(context, expression) -> the value of a Python expression such as "
    "'pkg.mod.f(2)', run with the files of `context` importable as modules.",
    "llm_classify": "llm_classify(texts, labels) -> one label per text, in order: a helper "
    "model reads each text and picks its label.",
    "llm_map": "llm_map(instruction, texts) -> one answer per text, in order: a helper "
    "model follows the instruction for each text.",
    "llm_query": "llm_query(prompt) -> str: asks a helper model. It cannot see `context`, so "
    "put the text it should read into the prompt.",
    "follow_chain": "follow_chain(question) -> str: the answer to a question that goes "
    "through other things ('the birthplace of the architect of X'): it searches `context` for "
    "each link in turn and a helper model reads what it finds.",
}
# The functions that make sub-calls, as the REPL-function table marks them.
SUB_CALL_FUNCTIONS = frozenset(f.name for f in REPL_FUNCTIONS if f.sub_call)

# Plain `re`, not `search`: shown `search(...)` among its functions, the 1.5B model wrote
# its own `def search` (a broken one) instead of calling it, on needle questions it had
# answered with this example before the functions existed.
_LOOKUP_EXAMPLE = """Question: In which year did the keeper of the Ferro lighthouse retire?
```repl
import re
hits = [m.start() for m in re.finditer(r"ferro", context, re.IGNORECASE)]
print(len(hits))
for h in hits[:5]:
    print(context[max(0, h - 150):h + 150])
```
Output:
2
...The Ferro lighthouse was painted white in 1951...
...Ines Brandt, keeper of the Ferro lighthouse, retired in 1987 and moved inland...
Reply:
FINAL(1987)"""

_REVIEWS = """Each line is a review: a day, a shop and the review's text. Each review can be \
labelled with one of: delivery, price and value, quality. The labels are not given: judge \
each review by its text."""


def _literal(value: object) -> str:
    """`value` as Python source, strings in double quotes as the examples write them."""
    return json.dumps(value, ensure_ascii=False)


def label_rows_code(field: str, labels: Sequence[str]) -> str:
    """Every record made a row and labelled from its `field` by the helper model; the
    counts printed most common first. The fields are printed without a row: shown one
    row with its label, the 1.5B root answered "which label is most common?" with that
    row's label, over counts that had the right one first."""
    return (
        "from collections import Counter\n"
        "rows = records(context)\n"
        f"labels = llm_classify([r[{_literal(field)}] for r in rows], {_literal(list(labels))})\n"
        "for r, label in zip(rows, labels):\n"
        '    r["label"] = label\n'
        'print(len(rows), "rows; their fields:", list(rows[0]))\n'
        'print("labels, most common first:", Counter(labels).most_common())'
    )


# The first cell of the judge example is the kind's first step (see `label_rows_step`),
# which a run writes for the root: the root's own code starts after it.
_LABEL_ROWS = label_rows_code("Review", ["delivery", "price and value", "quality"])
_LABELLED_OUTPUT = """2210 rows; their fields: ['Day', 'Shop', 'Review', 'label']
labels, most common first: [('quality', 901), ('delivery', 788), ('price and value', 521)]"""


# A quoted label, its quotes not inside a word: "the label 'most recent'" but not the
# apostrophe of "instance's", which paired with a later quote took a question's dates.
_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'(?!\w)|\"[^\"\n]*\"")


def without_quoted(words: str) -> str:
    """`words` without the labels they quote: a label's own words ('before or after',
    'most common') must not pick a form."""
    return _QUOTED.sub("", words)


# --- counts: the example in the question's form ------------------------------------------
# The 1.5B root reads a printed Counter badly when the answer needs a step more: shown
# "numeric value: 77, entity: 202" it answered that 'numeric value' is more common. So a
# count question's example computes the question's own form of answer in code (a relation,
# the top owner, the least common) and prints it, and the root's reply copies what is
# printed. The form is picked by the question's words, as the pairs condition is.


@dataclass(frozen=True)
class CountWorld:
    """Where a count example is set: its records, the value counted, and the counts its
    outputs show, over every record and over the example's date range (most common
    first)."""

    noun: str  # what a record is
    value: str  # a row's counted value, in code
    what: str  # what the values are called
    form: str  # the word of the answer's form
    phrase: str  # the records of one value, in words
    has: str  # what the records of one value have, in words
    x: str
    y: str
    counts: tuple[tuple[str, int], ...]
    in_range: tuple[tuple[str, int], ...]


_STATED = CountWorld(
    "orders", 'r["Payment"]', "payment method", "Payment", "orders paid by {}",
    "were paid by {}", "card", "cash",
    (("card", 1210), ("cash", 745), ("voucher", 255)),
    (("card", 57), ("cash", 31), ("voucher", 8)),
)  # fmt: skip
_JUDGED = CountWorld(
    "reviews", 'r["label"]', "label", "Label", "reviews with the label '{}'",
    "have the label '{}'", "delivery", "quality",
    (("quality", 901), ("delivery", 788), ("price and value", 521)),
    (("delivery", 41), ("quality", 33), ("price and value", 22)),
)  # fmt: skip
_FROM, _TO = "Feb 03, 2022", "Mar 10, 2022"
_RANGE_WORDS = f" dated from {_FROM} to {_TO} (both inclusive)"
_RANGE_CODE = f"""start, end = parse_date("{_FROM}"), parse_date("{_TO}")
picked = [r for r in rows if start <= parse_date(r["Day"]) <= end]
print(len(rows), len(picked))
"""
# Two dates in a question ("from Mar 02, 2021 to ...", "between 2021-03-02 and ..."): its
# records are those of a range.
_DATE = re.compile(rf"\b(?:{DATE_PATTERN})\b", re.IGNORECASE)
_RELATIONS = (
    '"more common than" if n[x] > n[y] else "less common than" if n[x] < n[y] '
    'else "same frequency as"'
)


@dataclass(frozen=True)
class CountForm:
    """A form of count question: the words that pick it (quoted labels left out), whether
    its answer needs a step past the labels' counts, and the example's question, its code
    over `{rows}` (every row, or those of the range), what that prints and the reply."""

    words: str
    past_counts: bool
    question: str
    code: str
    output: str
    reply: str


# The first that matches is shown; the last matches anything.
COUNT_FORMS: tuple[CountForm, ...] = (
    CountForm(
        r"\b(?:more|less|fewer)\b[^?]*\bthan\b",
        True,
        "Among the {noun}{range}, are {of_x} more common than, less common than, or the same "
        "frequency as {of_y}? Give your final answer in the form 'Answer: {x} is <relation> "
        "{y}', where <relation> is one of: more common than, less common than, same "
        "frequency as.",
        'n = Counter({value} for r in {rows})\nx, y = "{x}", "{y}"\nrelation = '
        + _RELATIONS
        + "\nprint(n[x], n[y], relation)",
        "{n_x} {n_y} {relation}",
        "Answer: {x} is {relation} {y}",
    ),
    CountForm(
        r"\bwhich\s+(?!label|class|category|kind|type)\w+\s+(?:has|have|had)\b[^?]*\bmost\b",
        True,
        "Which shop has the most {of_x}{range}? Give your final answer in the form "
        "'Shop: <shop ID>'.",
        'top = Counter(r["Shop"] for r in {rows} if {value} == "{x}").most_common(3)\nprint(top)',
        "[('12', 9), ('31', 7), ('4', 6)]",
        "Shop: 12",
    ),
    CountForm(
        r"\b(?:least|fewest)\b",
        False,
        "Which {what} is the least common among the {noun}{range}? Give your final answer in "
        "the form '{form}: <{what}>'.",
        'n = Counter({value} for r in {rows})\nprint("least common:", n.most_common()[-1])',
        "least common: ('{last}', {n_last})",
        "{form}: {last}",
    ),
    CountForm(
        r"\bmost\b",
        False,
        "Which {what} is the most common among the {noun}{range}? Give your final answer in "
        "the form '{form}: <{what}>'.",
        'n = Counter({value} for r in {rows})\nprint("most common:", n.most_common(1)[0])',
        "most common: ('{first}', {n_first})",
        "{form}: {first}",
    ),
    CountForm(
        r"",
        False,
        "How many {noun}{range} {has_x}? Give your final answer in the form 'Answer: <number>'.",
        "print(Counter({value} for r in {rows}))",
        "{counter}",
        "Answer: {n_x}",
    ),
)


def _form_of(query: str) -> tuple[CountForm, bool]:
    """The form of a count question, and whether it asks about a date range."""
    bare = without_quoted(query)
    form = next(f for f in COUNT_FORMS if re.search(f.words, bare, re.IGNORECASE))
    return form, len(_DATE.findall(bare)) >= 2


def needs_step(query: str) -> bool:
    """Whether a count question needs code past the labels' counts: a range, a relation,
    an owner."""
    form, ranged = _form_of(query)
    return ranged or form.past_counts


def count_form(query: str, world: CountWorld) -> tuple[str, str, str, str]:
    """A count example in the form of `query`, set in `world`: its question, the code after
    the rows are made, what that prints, and the reply."""
    form, ranged = _form_of(query)
    counts = dict(world.in_range if ranged else world.counts)
    ranked = list(world.in_range if ranged else world.counts)
    n_x, n_y = counts[world.x], counts[world.y]
    values = {
        "noun": world.noun,
        "what": world.what,
        "form": world.form,
        "value": world.value,
        "x": world.x,
        "y": world.y,
        "of_x": world.phrase.format(world.x),
        "of_y": world.phrase.format(world.y),
        "has_x": world.has.format(world.x),
        "range": _RANGE_WORDS if ranged else "",
        "rows": "picked" if ranged else "rows",
        "counter": f"Counter({{{', '.join(f'{k!r}: {v}' for k, v in ranked)}}})",
        "n_x": n_x,
        "n_y": n_y,
        "relation": "more common than"
        if n_x > n_y
        else "less common than"
        if n_x < n_y
        else "same frequency as",
        "first": ranked[0][0],
        "n_first": ranked[0][1],
        "last": ranked[-1][0],
        "n_last": ranked[-1][1],
    }
    total = sum(count for _, count in world.counts)
    shown = f"{total} {sum(counts.values())}\n" if ranged else ""
    return (
        form.question.format(**values),
        (_RANGE_CODE if ranged else "") + form.code.format(**values),
        shown + form.output.format(**values),
        form.reply.format(**values),
    )


def count_example(query: str) -> str:
    """A count over a field the records state, in the form of `query`: one cell."""
    question, code, output, reply = count_form(query, _STATED)
    return (
        f"Question: {question}\n"
        f"```repl\nfrom collections import Counter\nrows = records(context)\n{code}\n```\n"
        f"Output:\n{output}\nReply:\nFINAL({reply})"
    )


def judge_example(query: str) -> str:
    """A count over a class judged from the records' text, in the form of `query`: the
    labelling step (which a run writes for the root) and its output, then, where the
    question needs more than the labels' counts, the code that computes its answer. (Shown
    a second cell that kept a date range for a question over every record, the 1.5B root
    wrote one with dates of its own and reran it to the end of its turns.)"""
    question, code, output, reply = count_form(query, _JUDGED)
    steps = f"```repl\n{_LABEL_ROWS}\n```\nOutput:\n{_LABELLED_OUTPUT}\n"
    if needs_step(query):
        steps += f"```repl\n{code}\n```\nOutput:\n{output}\n"
    return f"Question: {_REVIEWS} {question}\n{steps}Reply:\nFINAL({reply})"


_JUDGE_EXAMPLE_NO_SUB = f"""Question: {_REVIEWS} How many reviews dated from Feb 03, 2022 to \
Mar 10, 2022 (both inclusive) have the label 'delivery'? Give your final answer in the form \
'Answer: <number>'.
```repl
from collections import Counter
rows = records(context)
# No field states the label: judge each review by its words.
def label(text):
    text = text.lower()
    if any(w in text for w in ("late", "parcel", "arrived", "courier")):
        return "delivery"
    if any(w in text for w in ("price", "cheap", "expensive", "cost")):
        return "price and value"
    return "quality"
labels = [label(r["Review"]) for r in rows]
start, end = parse_date("Feb 03, 2022"), parse_date("Mar 10, 2022")
print(Counter(label for r, label in zip(rows, labels) if start <= parse_date(r["Day"]) <= end))
```
Output:
Counter({{'delivery': 41, 'quality': 33, 'price and value': 22}})
Reply:
FINAL(Answer: 41)"""

# A question for pairs, and one for ordered pairs (each of the two has a role).
_PAIRS = re.compile(r"\bpairs?\b", re.IGNORECASE)
# "ordered pairs", or a pair whose form names its roles: "(first user, second user)".
_ORDERED_PAIRS = re.compile(r"\bordered pairs?\b|\(\s*first\b[^)]*,\s*second\b", re.IGNORECASE)

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
        if _PAIRS.search(sentence):
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
        steps = f"```repl\n{_LABEL_ROWS}\n```\nOutput:\n{_LABELLED_OUTPUT}\n```repl\n{cell}\n```"
    else:
        steps = f"```repl\n{_LABEL_BY_WORDS}\n{cell}\n```"
    output = _PAIRS_OUTPUT[ordered]
    return (
        f'Question: {_REVIEWS} {question}\n{steps}\nOutput:\n{output}\nReply:\nFINAL_VAR("answer")'
    )


# A chain is followed with plain `re`, in code for the context's shape: shown `search()`,
# the 1.5B model wrote its own search() and FINAL() over a made-up context, every time.
_CHAIN_STEPS = (
    ("Blue Hall", "blue hall", 212, "Blue Hall\nThe Blue Hall was designed by the architect "
     "Omar Lenz (born 1921) and opened in 1960.",
     "The architect is Omar Lenz (born 1921). Next: his birthplace."),
    ("Omar Lenz", "omar lenz", 48, "Omar Lenz (born 1950)\nOmar Lenz is a painter born in "
     "1950 in Kest.", ""),
    ("Omar Lenz", "omar lenz", 301, "Omar Lenz (born 1921)\nOmar Lenz is an architect born "
     "in 1921 in Varsel.",
     "The architect was born in 1921, so he is the second Omar Lenz, born in Varsel. Next: "
     "the country of Varsel."),
    ("Varsel", "varsel", 94, "Varsel\nVarsel is a town in Norland, on the river Ost. It was "
     "founded in 1388.", "FINAL(Norland)"),
)  # fmt: skip
_CHAIN_CODE = {
    "str": """import re
for m in re.finditer(r"{pattern}", context, re.IGNORECASE):
    print(context[max(0, m.start() - 150):m.start() + 150])""",
    "list": """import re
for i, doc in enumerate(context):
    if re.search(r"{pattern}", doc, re.IGNORECASE):
        print(i, doc[:300])""",
    "dict": """import re
for key, doc in context.items():
    if re.search(r"{pattern}", doc, re.IGNORECASE):
        print(key, doc[:300])""",
}


def _chain_example(shape: str) -> str:
    """The chain example in code for a `shape` context ("str", "list" or "dict")."""
    shape = shape if shape in _CHAIN_CODE else "str"
    parts = ["Question: In which country is the birthplace of the architect of the Blue Hall?"]
    shown: list[str] = []
    for _, pattern, where, doc, reply in _CHAIN_STEPS:
        if not shown:
            parts.append(f"```repl\n{_CHAIN_CODE[shape].format(pattern=pattern)}\n```")
        if shape == "str":
            shown.append(f"...{doc.replace(chr(10), ' ')}...")
        else:
            key = where if shape == "list" else f"halls/{where}.txt"
            shown.append(f"{key} {doc}")
        if reply:
            parts.append("Output:\n" + "\n".join(shown) + f"\nReply:\n{reply}")
            shown = []
    return "\n".join(parts)


_CHAIN_DESCRIPTION = (
    "a fact about something the question does not name but describes through another "
    "thing, so it takes two or more look-ups in a row, e.g. 'In what year was the sponsor of "
    "the 1990 Kell Fair founded?' (find the fair's sponsor, then when that company was "
    "founded)"
)

# With sub-calls, follow_chain walks the links: the 1.5B root, shown how to walk them
# itself with `re`, stopped at the first link's answer in every variant tried.
_FOLLOW_EXAMPLE = """Question: In which country is the birthplace of the architect of the Blue \
Hall? Give your final answer in the form 'Answer: <answer>'.
```repl
print(follow_chain("In which country is the birthplace of the architect of the Blue Hall?"))
```
Output:
Norland
Reply:
FINAL(Answer: Norland)"""

_CODE_EXAMPLE = """Question: What is the value of TIMEOUT in the mailer service?
```repl
print(search("TIMEOUT =", context))
```
Output:
3 hits for 'TIMEOUT =' (case-insensitive)
['shop/auth/session.py', line 5]
TIMEOUT = 30
['shop/mailer/send.py', line 7]
TIMEOUT = 12
['shop/mailer/queue.py', line 3]
from shop.mailer.send import TIMEOUT
Reply:
The mailer service is the folder shop/mailer/; its send.py sets TIMEOUT.
FINAL(12)"""

# A question with lettered choices: the hits name each place as the choices do
# (`pkg.mod.func`), and the reply says which choice that is. Shown only the value example,
# the 1.5B root searched well, then reran its search to the end of its turns and guessed a
# letter (codeqa 128k: 2 of 5 right).
_CHOICE_EXAMPLE = """Question: Which function writes the config key `mail.retries`?
A) shop.auth.session.load_retries
B) shop.mailer.send.configure_mail
C) shop.mailer.queue.read_retries
D) shop.billing.tax.configure_tax
Give your final answer in the form 'Answer: <letter>'.
```repl
print(search("mail.retries", context))
```
Output:
2 hits for 'mail.retries' (case-insensitive)
['shop/mailer/send.py', line 8, in shop.mailer.send.configure_mail]
def configure_mail(config):
    config["mail.retries"] = 3
['shop/mailer/queue.py', line 14, in shop.mailer.queue.read_retries]
def read_retries(config):
    return config.get("mail.retries", 5)
Reply:
shop.mailer.send.configure_mail writes it (config["mail.retries"] = 3); read_retries only \
reads it. shop.mailer.send.configure_mail is choice B.
FINAL(Answer: B)"""
# Lettered choices, one per line: "A) ...", "(b) ...", "C. ...".
_CHOICES_LINE = re.compile(r"^[ \t]*\(?([A-Ha-h])[).][ \t]+(\S[^\n]*?)[ \t]*$", re.MULTILINE)


def lettered_choices(query: str) -> list[tuple[str, str]]:
    """The question's lettered choices, (letter, text), when it has two or more."""
    found = [(letter.upper(), text) for letter, text in _CHOICES_LINE.findall(query)]
    return found if len(found) >= 2 else []


def choices_named(query: str, output: str) -> list[tuple[str, str]]:
    """The question's choices that `output` names whole (`pkg.mod` is not named by
    `pkg.mod.func`): the small root read hits that named a choice and did not tell which
    letter that was."""
    return [
        (letter, text)
        for letter, text in lettered_choices(query)
        if len(text) > 2
        and re.search(rf"(?<![\w.]){re.escape(text)}(?![\w.]*\w)", output, re.IGNORECASE)
    ]


def as_choice_letter(query: str, answer: str) -> str | None:
    """`answer` in the question's lettered form, where it names one of the question's
    choices whole and no letter of them: the small root, having found the module a
    question asked for, replied with its name ("pkg.search.limits_2") instead of its letter
    ("Answer: B"). None where there is nothing to change."""
    choices = lettered_choices(query)
    if not choices or re.search(rf"\b[{''.join(letter for letter, _ in choices)}]\b", answer):
        return None
    named = choices_named(query, answer)
    if len(named) != 1:
        return None
    lead = answer_lead(query)
    return f"{lead} {named[0][0]}" if lead else named[0][0]


def code_example(query: str) -> str:
    """The code example in the form of `query`: with lettered choices or without."""
    return _CHOICE_EXAMPLE if lettered_choices(query) else _CODE_EXAMPLE


_RUN_EXAMPLE = """Question: What does `shop.mailer.send.retry_delay(3)` return?
A) 4
B) 9
C) 12
D) 27
Give your final answer in the form 'Answer: <letter>'.
```repl
print(run_code(context, "shop.mailer.send.retry_delay(3)"))
```
Output:
12
Reply:
12 is option C.
FINAL(Answer: C)"""

# --- the first step of a question over judged labels ----------------------------------

# "... labelled with exactly one of these classes, by the kind of answer it asks for: a, b,
# c." The label set a question gives: after "one of" (or "labels", "classes", "categories")
# and a colon, to the sentence's end.
_LABEL_LIST = re.compile(
    r"\b(?:one of|labels|classes|categories)\b[^:.\n]{0,120}?:\s*([^\n]+?)(?:\.(?:\s|$)|\n|$)",
    re.I,
)
# A label the question asks about: "the label 'location'".
_NAMED_LABEL = re.compile(r"\b(?:label|class|category)\s+['\"‘“]([^'\"’”\n]{1,60})['\"’”]", re.I)


def question_labels(query: str) -> tuple[str, ...] | None:
    """The labels a question lists as the ones to choose from, or None when it lists none
    (or lists some that the labels it asks about are not among)."""
    for match in _LABEL_LIST.finditer(query):
        parts = [part.strip() for part in re.split(r"[,;]", match.group(1))]
        if len(parts) > 1 and re.search(r"\s+or\s+", parts[-1]):
            parts[-1:] = re.split(r"\s+or\s+", parts[-1])  # "a, b or c"
        labels = [_bare_label(part) for part in parts]
        labels = [label for label in labels if label]
        if not 2 <= len(labels) <= 30 or any(len(label) > 60 for label in labels):
            continue
        known = {label.lower() for label in labels}
        if len(known) != len(labels):
            continue
        if all(named.lower() in known for named in _NAMED_LABEL.findall(query)):
            return tuple(labels)
    return None


def _bare_label(part: str) -> str:
    return re.sub(r"^(?:and|or)\s+", "", part, flags=re.I).strip(" '\"‘’“”")


def text_field(info: ContextInfo) -> str | None:
    """The one field of the records that holds free text (what a label is judged from), by
    the name the records give it; None when there is no such field or more than one."""
    if not info.structure.startswith("One record per line"):
        return None
    texts = [name for name, kind in _FIELD.findall(info.structure) if _free_text(kind)]
    return texts[0] if len(texts) == 1 else None


def _free_text(kind: str) -> bool:
    # A short sample of varied texts reads as a few choices: "<one of: ...>" is text when
    # its values are sentences rather than words.
    if kind == "text":
        return True
    if not kind.startswith(_CHOICES):
        return False
    values = kind[len(_CHOICES) :].split(", ")
    return sum(len(value.split()) >= 4 for value in values) * 2 > len(values)


def label_rows_step(query: str, info: ContextInfo) -> str | None:
    """The first step of a question over labels the records do not state: every record
    made a row and labelled by the helper model with the question's own labels. Writing it
    for the small root keeps the labels whole ("description and abstract concept" was
    split into two) and the field right; the root's code starts from the labelled rows."""
    labels = question_labels(query)
    field = text_field(info)
    if labels is None or field is None:
        return None
    return label_rows_code(field, labels)


def label_pairs_step(query: str, info: ContextInfo) -> str | None:
    """A pairs question opens like a judged count, with every row labelled; where a field
    of the records states the labels, each row's label is that field's value (nothing to
    judge, and the example's next cell reads `r["label"]` either way)."""
    stated = _stated_field(query, info.structure)
    if stated:
        return stated_rows_code(stated)
    return label_rows_step(query, info)


def stated_rows_code(field: str) -> str:
    """Every record made a row whose label is its `field`; the counts as `label_rows_code`
    prints them."""
    return (
        "from collections import Counter\n"
        "rows = records(context)\n"
        "for r in rows:\n"
        f'    r["label"] = r[{_literal(field)}]\n'
        'print(len(rows), "rows; their fields:", list(rows[0]))\n'
        'print("labels, most common first:", Counter(r["label"] for r in rows).most_common())'
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

# After the labelled rows, what a small root is told, the action first: it echoed a
# follow-up that began with what was done ("The rows are labelled ...") instead of acting.
_JUDGED_FOLLOW_UP = (
    "If the output answers the question as it is, reply FINAL(answer) in its form now. If "
    "the question compares two labels or asks about some rows only (dates, users), write the "
    "code the example writes for it: `rows` is ready and each row's 'label' is set"
)


def _judged_first_follow_up(query: str) -> str:
    """After the labelled rows: where the question needs a step past their counts (a
    relation, an owner, a date range), that step. Told to reply if the counts answered
    it, the 1.5B root answered a comparison from them at once, and read it backwards
    (96 against 78 as "less common")."""
    if needs_step(query):
        return (
            "Now write the code the example writes next, for the question's form: `rows` is "
            "ready and each row's 'label' is set"
        )
    return _JUDGED_FOLLOW_UP


def _pairs_kind(name: str, description: str, condition: str, ordered: bool) -> Kind:
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


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "lookup",
            "find one fact written in one place of the text (a number, a name, a date), "
            "e.g. 'What is the code word for X?'",
            ("llm_query",),
            "1. Search `context` for a rare word of the question (a name, a place), "
            "ignoring case, and print about 300 characters around each hit.\n2. Read the "
            "output. If it answers the question, reply FINAL(answer) with the exact words of "
            "the text. If nothing was found, search for another word of the question.",
            _LOOKUP_EXAMPLE,
            plain=True,
        ),
        Kind(
            "count",
            "count, compare or rank records by a label or category that is written in each "
            "record, e.g. 'Each record states its label. Which label is most common?'",
            ("records", "parse_date"),
            "1. Make the records into rows and keep those the question is about.\n2. Count "
            "with Counter, compute what the question asks as the example does, and print "
            "it.\n3. Reply FINAL(answer) in the question's form.",
            count_example(""),
            example_for=lambda shape, query: count_example(query),
        ),
        Kind(
            "judge",
            "count, compare or rank records by a class that is NOT written in them and must "
            "be judged from the meaning of each record's text, e.g. 'The labels are not "
            "given. How many records are about sport?'",
            ("records", "parse_date", "llm_classify"),
            "1. Make the records into rows and label their texts with llm_classify, using "
            "the question's labels exactly as it writes them.\n2. Count the labels of the "
            "rows the question is about (its dates, its users) with Counter, compute what "
            "the question asks as the example does, and print it.\n3. Reply FINAL(answer) "
            "in the question's form.",
            judge_example(""),
            example_for=lambda shape, query: judge_example(query),
            first_step=label_rows_step,
            follow_up=_JUDGED_FOLLOW_UP,
            first_follow_up=_judged_first_follow_up,
            without_sub_calls=Kind(
                "judge",
                "",
                ("records", "parse_date"),
                "1. Make the records into rows and label their texts with code (the words they "
                "use).\n2. Count the labels of the rows the question is about with Counter, "
                "and print the counts.\n3. Read them and reply FINAL(answer) in the question's "
                "form.",
                _JUDGE_EXAMPLE_NO_SUB,
            ),
        ),
        _pairs_kind(
            "pairs",
            "list all pairs of users, shops or items that meet a condition, e.g. 'List all "
            "pairs of users who both ...'",
            "Count each user's labels, write the question's condition in code as the example "
            "does, and keep the users that meet it.",
            ordered=False,
        ),
        _pairs_kind(
            "ordered pairs",
            "list the ordered pairs (first, second) of users where the first meets one "
            "condition and the second another",
            "Count each user's labels and write each role's condition in code as the example "
            "does: keep the users that can come first and those that can come second.",
            ordered=True,
        ),
        Kind(
            "chain",
            _CHAIN_DESCRIPTION,
            ("follow_chain",),
            "1. Call follow_chain with the question and print what it returns.\n2. Reply "
            "FINAL(answer) in the question's form.",
            _FOLLOW_EXAMPLE,
            plain=True,
            # Taught to call it, the 1.5B root wrote its own follow_chain() or a search of
            # its own first in 4 of 5 runs (multihop 32k, seed 3000), and once never called
            # it at all.
            first_step=lambda query, info: f"print(follow_chain({query!r}))",
            # Told the general "if the output answers it", it reran follow_chain twice over
            # the right answer and then, asked for one, made up another (multihop 128k).
            follow_up="The output is follow_chain's answer: reply FINAL(answer) with it, in "
            "the question's form. If it is an error, search `context` yourself",
            without_sub_calls=Kind(
                "chain",
                _CHAIN_DESCRIPTION,
                (),
                "1. Search `context` for the rarest name in the question (a name, not a year "
                "or a common word), ignoring case, and print what is around each hit.\n2. The "
                "text found names the next thing to find: search for that name, and so on, one "
                "search per turn, until you find what the question asks. Where two texts share "
                "a name, the details (a year, a place) tell which one is meant.\n3. Reply "
                "FINAL(answer) with the exact words of the text.",
                _chain_example("str"),
                plain=True,
                example_for=lambda shape, query: _chain_example(shape),
                # Shown the first hop's answer, it reran the same search until asked for an
                # answer, then gave that hop's.
                follow_up="If the output states what the question asks, reply FINAL(answer). "
                "If it names the next thing to find, search for that name now",
            ),
        ),
        Kind(
            "code",
            "a question about source code, e.g. 'Which function calls X?', 'Which module "
            "defines Y?', 'What is the value of Z in the billing service?'",
            ("search", "llm_query"),
            "1. Search for the name the question asks about and print the hits; each says "
            "its file.\n2. Keep the hits in the folder or file the question is about.\n3. "
            "Reply FINAL(answer) in the question's form.",
            _CODE_EXAMPLE,
            example_for=lambda shape, query: code_example(query),
        ),
        Kind(
            "run",
            "what a function of the source code returns for given arguments",
            ("run_code", "search"),
            "1. Run the call the question names with run_code and print its value.\n2. Reply "
            "FINAL(answer) in the question's form.",
            _RUN_EXAMPLE,
        ),
    )
}
DEFAULT_KIND = "lookup"


def _taught_named(kind: str | None, sub_calls: bool) -> Kind | None:
    """The kind of that name as the run teaches it; None for no kind or an unknown one."""
    found = KINDS.get(kind) if kind else None
    return taught(found, sub_calls) if found is not None else None


def follow_up_of(
    kind: str | None, sub_calls: bool = True, first: bool = False, query: str = ""
) -> str:
    """What a small root is told after an output (`first`: its first turn's)."""
    found = _taught_named(kind, sub_calls)
    if found is None:
        return FOLLOW_UP
    if first and found.first_follow_up is not None:
        told = found.first_follow_up
        return told if isinstance(told, str) else told(query)
    return found.follow_up


def answer_variable_of(kind: str | None, sub_calls: bool) -> str | None:
    found = _taught_named(kind, sub_calls)
    return found.answer_variable if found is not None else None


def functions_of(kind: Kind, sub_calls: bool) -> list[str]:
    names = taught(kind, sub_calls).functions
    return [name for name in names if sub_calls or name not in SUB_CALL_FUNCTIONS]


def first_step_of(kind: str | None, sub_calls: bool, query: str, info: ContextInfo) -> str | None:
    found = _taught_named(kind, sub_calls)
    step = found.first_step if found is not None else None
    return step(query, info) if step is not None else None


def steps_of(kind: Kind, sub_calls: bool) -> str:
    return taught(kind, sub_calls).steps


def example_of(kind: Kind, sub_calls: bool, shape: str = "str", query: str = "") -> str:
    kind = taught(kind, sub_calls)
    return kind.example_for(shape, query) if kind.example_for is not None else kind.example


# --- picking the kind ------------------------------------------------------------------

SOURCE_SUFFIXES = (
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".go", ".rs", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".rb", ".php", ".cs", ".kt", ".swift", ".scala", ".sh", ".lua", ".pl", ".m",
)  # fmt: skip
# A call written in the question, such as `pkg.mod.f(2)`: a question for running code.
_CALL = re.compile(r"\b[A-Za-z_][\w.]*\.[A-Za-z_]\w*\([^()]*\)")
_FIELD = re.compile(r"([A-Za-z][\w .'/-]{0,30}?): <([^>]*)>")
_CHOICES = "one of: "
# "the founder of the sponsor of ...": a thing described through another, which may take
# more than one look-up. A question without it ("Where is the spare key?") is a look-up.
_RELATION = re.compile(r"\bof (?:the|its|their|his|her)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Pick:
    kind: str
    why: str  # for the trace


def pick_kind(query: str, info: ContextInfo) -> Pick:
    """The kind of question, from the context's structure and the question's words."""
    if info.kind == "dict" and _mostly_source(info.keys):
        if _CALL.search(query):
            return Pick("run", "source files, and the question names a call")
        return Pick("code", "the context is source files")
    if info.structure.startswith("One record per line"):
        if _ORDERED_PAIRS.search(query):
            return Pick("ordered pairs", "records, and the question asks for ordered pairs")
        if _PAIRS.search(query):
            return Pick("pairs", "records, and the question asks for pairs")
        stated = _stated_field(query, info.structure)
        if stated:
            return Pick("count", f"records, and the question names their field {stated!r}")
        return Pick("judge", "records, and no field of theirs states what the question asks")
    if _RELATION.search(query):
        return Pick("chain", "the question describes what it asks through another thing")
    return Pick(DEFAULT_KIND, "text without a record format or source files")


def _mostly_source(keys: Sequence[str]) -> bool:
    code = sum(key.lower().endswith(SOURCE_SUFFIXES) for key in keys)
    return bool(keys) and code * 2 >= len(keys)


def _stated_field(query: str, structure: str) -> str | None:
    """A field of the records that takes a few values (a label, a category) and that the
    question names, by the field's name or by one of its values."""
    lowered = query.lower()
    for name, kind in _FIELD.findall(structure):
        if not kind.startswith(_CHOICES) or _free_text(kind):
            continue
        values = [v.strip() for v in kind[len(_CHOICES) :].split(",")]
        named = re.search(rf"\b{re.escape(name.lower())}s?\b", lowered)
        if named or any(len(v) > 2 and v.lower() in lowered for v in values):
            return name
    return None
