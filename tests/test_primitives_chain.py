"""follow_chain's parts: the links read from a question, the documents each link finds, the
answers a link may give (only what the documents write), a namesake told apart by its
qualifier, the last link's wider reading, and the errors a caller reads."""

from __future__ import annotations

import asyncio
import json

import pytest

from deeprlm.primitives.chain import (
    documents_for,
    follow_chain,
    names_in,
    plan,
    qualified,
    question_sentence,
)

DOCS = [
    "Blue Hall\nThe Blue Hall was designed by the architect Omar Lenz (born 1921). It opened "
    "in 1960.",
    "Omar Lenz (born 1950)\nOmar Lenz is a painter born in 1950 in Kest.",
    "Omar Lenz (born 1921)\nOmar Lenz is an architect born in 1921 in Varsel.",
    "Varsel\nVarsel is a town in Norland, on the river Ost.",
    "Kest\nKest is a town in Ostmark, on the river Pell.",
    "Red Hall\nThe Red Hall was designed by the architect Ida Moor (born 1930).",
    "Holm\nHolm is a town in Norland, on the river Ost.",
]


def test_the_links_are_read_from_the_question_innermost_first():
    steps = plan(
        "The context is a list of 6 documents. In which country was the architect of the "
        "Blue Hall born? Give your final answer in the form 'Answer: <answer>'."
    )
    assert steps.start == "Blue Hall"
    assert steps.relations == ("architect",)
    assert steps.outer == "In which country was {} born?"
    nested = plan(
        "On which river lies the birthplace of the founder of the main sponsor of the "
        "1994 Kell Fair?"
    )
    assert nested.start == "1994 Kell Fair"
    assert nested.relations == ("main sponsor", "founder", "birthplace")
    assert nested.outer == "On which river lies {}?"


def test_a_link_may_be_a_clause_and_a_clause_after_the_chain_stays_in_the_question():
    clause = plan("In what year was the company that sponsored the 1994 Kell Fair founded?")
    assert (clause.start, clause.relations) == ("1994 Kell Fair", ("company that sponsored",))
    assert clause.outer == "In what year was {} founded?"
    after = plan("Who is the mayor of the town where the architect of the Blue Hall was born?")
    assert (after.start, after.relations) == ("Blue Hall", ("architect",))
    assert after.outer == "Who is the mayor of the town where {} was born?"


def test_a_question_without_a_chain_is_one_link():
    steps = plan("Where does Dr. Lindqvist hide the spare key?")
    assert steps.start == "" and steps.relations == ()
    assert steps.outer == "Where does Dr. Lindqvist hide the spare key?"
    assert question_sentence("No question here.") == "No question here."


def test_names_are_what_the_text_writes_not_the_words_that_open_its_sentences():
    text = "The Blue Hall was designed by Omar Lenz (born 1921). It opened in 1960."
    assert names_in(text) == ["Blue Hall", "Omar Lenz", "1921", "1960"]


def test_a_name_keeps_the_qualifier_the_documents_write_after_it():
    assert qualified("Omar Lenz", DOCS[:1]) == "Omar Lenz (born 1921)"
    assert qualified("Ida Moor", DOCS[:1]) == "Ida Moor"


def test_documents_are_whole_items_of_a_list_or_dict_and_windows_of_a_text():
    # The document about it (its title) first, then those that mention it.
    assert documents_for("Varsel", DOCS) == [DOCS[3], DOCS[2]]
    by_key = {f"doc{i}.txt": d for i, d in enumerate(DOCS)}
    assert DOCS[3] in documents_for("Norland", by_key)
    text = "\n".join(["filler line"] * 50 + [DOCS[3]] + ["filler line"] * 50)
    (window,) = documents_for("Norland", text)
    assert "Norland" in window and len(window) < len(text)
    # A corpus in one text, its documents between blank lines: each is read whole.
    corpus = "\n\n".join(DOCS * 20)
    assert documents_for("Varsel", corpus) == [DOCS[3], DOCS[2]]


class Reader:
    """A helper model that answers each link from a table, and records what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, list[str]]] = []

    async def __call__(self, prompt: str, schema: dict) -> str:
        question = prompt.split("\nQuestion: ", 1)[1].split("\n", 1)[0]
        self.asked.append((prompt, schema["properties"]["answer"]["enum"]))
        return json.dumps({"answer": self.answers[question]})


def test_each_link_is_asked_of_the_documents_its_thing_finds():
    reader = Reader(
        {
            "What is the architect of Blue Hall?": "Omar Lenz",
            "In which country was Omar Lenz (born 1921) born?": "Norland",
        }
    )
    result = asyncio.run(
        follow_chain("In which country was the architect of the Blue Hall born?", DOCS, reader)
    )
    assert result.answer == "Norland"
    first, last = reader.asked
    assert "The Blue Hall was designed" in first[0] and "Omar Lenz" in first[1]
    # The qualifier found the right Omar Lenz; the last link also reads his birthplace's
    # document, where the country is, and not the namesake's town.
    assert DOCS[2] in last[0] and DOCS[3] in last[0]
    assert DOCS[1] not in last[0] and "Ostmark" not in last[1]
    # An answer is never the link's own subject.
    assert "Blue Hall" not in first[1] and "Omar Lenz" not in last[1]
    # Nor other towns of that country or on that river: they only mention its names.
    assert "Holm" not in last[0]
    assert [link.answer for link in result.links] == ["Omar Lenz (born 1921)", "Norland"]


def test_answers_are_held_to_the_names_the_documents_write():
    reader = Reader({"What is the architect of Blue Hall?": "Frank Lloyd Wright"})
    with pytest.raises(ValueError, match="not written in the documents found"):
        asyncio.run(
            follow_chain("Who was the teacher of the architect of the Blue Hall?", DOCS, reader)
        )
    assert "Frank Lloyd Wright" not in reader.asked[0][1]


def test_a_link_that_finds_nothing_says_what_it_looked_for():
    with pytest.raises(LookupError, match="nothing in the context matches 'Zorbu Tower'"):
        asyncio.run(follow_chain("Who was the architect of the Zorbu Tower?", DOCS, Reader({})))


def test_a_reply_that_is_not_json_is_a_clear_error():
    async def rambler(prompt: str, schema: dict) -> str:
        return "I think it is Omar"

    with pytest.raises(ValueError, match="reply is not an answer"):
        asyncio.run(follow_chain("Who was the architect of the Blue Hall?", DOCS, rambler))


def test_a_clause_link_is_asked_as_the_clause():
    reader = Reader(
        {
            "What is the hall that hosts Grey Atlas?": "Blue Hall",
            "Who designed Blue Hall?": "Omar Lenz",
        }
    )
    docs = [*DOCS, "Grey Atlas\nThe Grey Atlas is kept in the Blue Hall."]
    result = asyncio.run(
        follow_chain("Who designed the hall that hosts the Grey Atlas?", docs, reader)
    )
    assert result.answer == "Omar Lenz"
    assert [link.question for link in result.links] == [
        "What is the hall that hosts Grey Atlas?",
        "Who designed Blue Hall?",
    ]
