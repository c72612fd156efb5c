"""Questions answered by finding text: one fact in one place (`LOOKUP`), or a fact about
something described through another, found link by link (`CHAIN`)."""

from __future__ import annotations

from deeprlm.guides.kind import Kind

# Plain `re`, not `search`: shown `search(...)` among its functions, the 1.5B model wrote
# its own `def search` (a broken one) instead of calling it, on needle questions it had
# answered with this example before the functions existed.
LOOKUP_EXAMPLE = """Question: In which year did the keeper of the Ferro lighthouse retire?
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


def chain_example(shape: str) -> str:
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


CHAIN_DESCRIPTION = (
    "a fact about something the question does not name but describes through another "
    "thing, so it takes two or more look-ups in a row, e.g. 'In what year was the sponsor of "
    "the 1990 Kell Fair founded?' (find the fair's sponsor, then when that company was "
    "founded)"
)

# With sub-calls, follow_chain walks the links: the 1.5B root, shown how to walk them
# itself with `re`, stopped at the first link's answer in every variant tried.
FOLLOW_EXAMPLE = """Question: In which country is the birthplace of the architect of the Blue \
Hall? Give your final answer in the form 'Answer: <answer>'.
```repl
print(follow_chain("In which country is the birthplace of the architect of the Blue Hall?"))
```
Output:
Norland
Reply:
FINAL(Answer: Norland)"""


LOOKUP = Kind(
    "lookup",
    "find one fact written in one place of the text (a number, a name, a date), "
    "e.g. 'What is the code word for X?'",
    ("llm_query",),
    "1. Search `context` for a rare word of the question (a name, a place), "
    "ignoring case, and print about 300 characters around each hit.\n2. Read the "
    "output. If it answers the question, reply FINAL(answer) with the exact words of "
    "the text. If nothing was found, search for another word of the question.",
    LOOKUP_EXAMPLE,
    plain=True,
)


CHAIN = Kind(
    "chain",
    CHAIN_DESCRIPTION,
    ("follow_chain",),
    "1. Call follow_chain with the question and print what it returns.\n2. Reply "
    "FINAL(answer) in the question's form.",
    FOLLOW_EXAMPLE,
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
        CHAIN_DESCRIPTION,
        (),
        "1. Search `context` for the rarest name in the question (a name, not a year "
        "or a common word), ignoring case, and print what is around each hit.\n2. The "
        "text found names the next thing to find: search for that name, and so on, one "
        "search per turn, until you find what the question asks. Where two texts share "
        "a name, the details (a year, a place) tell which one is meant.\n3. Reply "
        "FINAL(answer) with the exact words of the text.",
        chain_example("str"),
        plain=True,
        example_for=lambda shape, query: chain_example(shape),
        # Shown the first hop's answer, it reran the same search until asked for an
        # answer, then gave that hop's.
        follow_up="If the output states what the question asks, reply FINAL(answer). "
        "If it names the next thing to find, search for that name now",
    ),
)
