"""`follow_chain`: answer a question that reaches its subject through other things ("In
which city was the founder of the main sponsor of the 1994 Kell Fair born?"), one link at
a time, each link a search of the context and one constrained sub-call.

The links are read from the question's grammar, not planned by a model: "the A of the B of
C" names a thing C and two relations, so the chain asks for the B of C, then the A of that
answer, then the question itself with the last answer in place of the phrase. The embedded
1.5B model, asked to split such questions into one-fact questions, left "the founder of the
main sponsor of X" whole and then answered it with the sponsor; reading one relation at a
time from documents it answers well. A link may be a clause ("the company that sponsored
C"); a clause after the chain stays in the last question ("the town where {} was born"). A
question without such a phrase is one link: the question itself over the documents its
words find.

Each link searches the context for the thing it is about and shows the documents found
(a list item or dict entry whole, when short; else the lines around the hit; those whose
title is the thing first) to a helper model whose answer is held, by a JSON Schema enum,
to the names and numbers those documents write, other than the thing itself. Free answers
made up what the documents did not say (a country for a city the documents place
elsewhere). A name the documents qualify ("Ada Brandt (born 1921)") is carried to the next
link with its qualifier, which is what tells it from a namesake. The last link also sees
the documents about the names that its subject's own documents mention: its question's
verb may need one more link ("In which country was X born?" is X's birthplace, then that
city's country).

Only the standard library is used; the search is `deeprlm.primitives.search`, the model
call is the caller's (`Ask`), so budgets, caching and the trace stay the engine's.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deeprlm.primitives.search import search

# A question's answer is looked for among this many documents, at most.
MAX_DOCUMENTS = 8
# A document longer than this is shown as the lines around the hit instead.
DOCUMENT_CHARS = 800
# The answers offered to the helper model, at most.
MAX_CHOICES = 120

# One link's sub-call: (prompt, JSON schema of the reply) -> the reply's text.
Ask = Callable[[str, dict[str, Any]], Awaitable[str]]

# A name: capitalised words or numbers, with the small words names carry inside them.
_NAME = r"(?:(?:[A-Z0-9][\w'.-]*|of|the|and|de|da|del|van|von|la|le)\s)*[A-Z0-9][\w'.-]*"
# A link: a relation of one to four lower-case words (not the words that start a clause)
# and what ties it to the next thing, "of" or a clause ("that sponsored", "who founded").
_WORD = r"(?!(?:the|an?|of|where|when|which|who|whose|that)\b)[a-z][\w-]*"
_RELATION = rf"{_WORD}(?: {_WORD}){{0,3}}"
_TIE = r"(?:of|(?:that|which|who) [a-z]+)"
# "the A of the B that sponsored (the) C": links, then a name.
_CHAIN = re.compile(rf"\bthe ((?:{_RELATION} {_TIE} (?:the |an? )?)+)({_NAME})")
_LINK = re.compile(rf"({_RELATION}) ({_TIE}) (?:the |an? )?")
_CAPITALISED = re.compile(r"[A-Z][\w'-]+(?: (?:of |the |de |van |von )?[A-Z][\w'-]+)*")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,.]*\d(?![\w])|(?<![\w.])\d(?![\w.])")
# A sentence ends after a word, a number or a question, not after "Dr." or "St.".
_SENTENCE_END = re.compile(r"(?<=[a-z]{3}[.!?])\s+|(?<=[0-9)][.!?])\s+|(?<=\?)\s+")
_QUALIFIER = re.compile(r"\s*\([^()]{1,60}\)$")
# Words that start sentences: capitalised, and not names on their own.
_SENTENCE_WORDS = frozenset(
    re.findall(
        r"\w+",
        "A An And As At But By For From He Her His If In Into It Its Of On One Outside She "
        "That The Their There These They This Those To Was We What When Where Which Who With",
    )
)


@dataclass(frozen=True)
class Plan:
    """What a chain question asks: `start`, the thing it names; `relations`, innermost
    first; `outer`, the question with "{}" where the described thing was. `start` is ""
    for a question without a chain (one link: the question itself)."""

    start: str
    relations: tuple[str, ...]
    outer: str


@dataclass(frozen=True)
class Link:
    """One link followed: the question asked, what was searched for, how many documents
    were read, and the answer."""

    question: str
    looked_up: str
    documents: int
    answer: str


@dataclass(frozen=True)
class ChainResult:
    answer: str
    links: tuple[Link, ...]


def question_sentence(text: str) -> str:
    """The sentence that asks (the first one ending in '?'), without what surrounds it: "The
    context is ..." before and "Give your answer as ..." after are not part of the chain."""
    for sentence in _SENTENCE_END.split(text.strip()):
        if sentence.endswith("?"):
            return sentence
    return text.strip()


def plan(question: str) -> Plan:
    """The links of `question` (see the module's docstring)."""
    asked = question_sentence(question)
    match = _CHAIN.search(asked)
    if match is None:
        return Plan("", (), asked)
    relations = [
        relation if tie == "of" else f"{relation} {tie}"
        for relation, tie in _LINK.findall(match.group(1))
    ]
    outer = asked[: match.start()] + "{}" + asked[match.end() :]
    return Plan(match.group(2).strip(), tuple(reversed(relations)), outer)


def link_question(relation: str, thing: str) -> str:
    """The question one link asks: "What is the founder of X?", or, for a clause, "What is
    the company that sponsored X?"."""
    clause = re.search(r"\b(?:that|which|who) [a-z]+$", relation)
    return f"What is the {relation}{'' if clause else ' of'} {thing}?"


def names_in(text: str) -> list[str]:
    """The names and numbers `text` writes, in order, once each."""
    found = []
    for name in _CAPITALISED.findall(text):
        first, _, rest = name.partition(" ")
        if first in _SENTENCE_WORDS:  # "The Blue Hall" is the Blue Hall; "It" is no name
            name = rest
        if name:
            found.append(name)
    found += _NUMBER.findall(text)
    return list(dict.fromkeys(found))


def bare(name: str) -> str:
    """A name without its qualifier: "Ada Brandt (born 1921)" -> "Ada Brandt"."""
    return _QUALIFIER.sub("", name.strip())


def qualified(answer: str, documents: Sequence[str]) -> str:
    """`answer` with the qualifier the documents write after it, if any."""
    name = bare(answer)
    for document in documents:
        found = re.search(re.escape(name) + r" (\([^()]{1,60}\))", document)
        if found:
            return f"{name} {found.group(1)}"
    return answer


def documents_for(query: str, where: Any, limit: int = MAX_DOCUMENTS) -> list[str]:
    """The documents a search for `query` finds in `where`, once each: those about it (see
    `about`) first, then the others in the order they come."""
    found: list[str] = []
    for hit in search(query, where, limit=None):
        text = where if hit.key is None and isinstance(where, str) else _item(where, hit.key)
        document = (_document(text, hit.offset) if text is not None else None) or hit.text
        if document not in found:
            found.append(document)
    found.sort(key=lambda document: not about(query, document))
    return found[:limit]


def _document(text: str, offset: int) -> str | None:
    """The document around `offset`: all of `text` when it is short, else the block between
    blank lines that holds it (a corpus of documents in one text), if that is short."""
    if len(text) <= DOCUMENT_CHARS:
        return text
    start = text.rfind("\n\n", 0, offset)
    start = 0 if start < 0 else start + 2
    end = text.find("\n\n", offset)
    block = text[start : len(text) if end < 0 else end].strip()
    return block if len(block) <= DOCUMENT_CHARS else None


def about(name: str, document: str) -> bool:
    """Whether `document` is about `name`: its first line begins with it (a title)."""
    return document.lstrip().lower().startswith(bare(name).lower())


def _text(where: Any) -> bool:
    """A context of one text, with no documents that have titles of their own."""
    return isinstance(where, str)


def _item(where: Any, key: Any) -> str | None:
    in_dict = isinstance(where, dict) and key in where
    in_list = isinstance(where, list | tuple) and isinstance(key, int) and 0 <= key < len(where)
    value = where[key] if in_dict or in_list else None
    return value if isinstance(value, str) else None


def link_prompt(question: str, documents: Sequence[str]) -> str:
    shown = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(documents, 1))
    return (
        f"Documents:\n{shown}\n\nQuestion: {question}\n\nAnswer from the documents. If two "
        "documents share a name, the details in the question (a year, a place) tell which "
        "one it means."
    )


def answer_schema(documents: Sequence[str], subject: str = "") -> dict[str, Any]:
    """A reply of one name or number the documents write, other than the link's subject
    (asked a city's country, the 1.5B model named the city)."""
    names = dict.fromkeys(n for text in documents for n in names_in(text))
    choices = [n for n in names if n.lower() != bare(subject).lower()] or list(names)
    return {
        "type": "object",
        "properties": {"answer": {"enum": choices[:MAX_CHOICES]}},
        "required": ["answer"],
        "additionalProperties": False,
    }


async def follow_chain(question: str, where: Any, ask: Ask) -> ChainResult:
    """Answers `question` over `where` (a str, list or dict of texts) link by link.

    Raises LookupError when a link finds nothing to read, ValueError when a reply is not
    one of the offered answers (the model would not be held to them)."""
    steps = plan(question)
    links: list[Link] = []
    thing = steps.start
    for relation in steps.relations:
        asked = link_question(relation, thing)
        found = await _found(thing, where)
        answer = qualified(await _ask(ask, asked, found, thing), found)
        links.append(Link(asked, thing, len(found), answer))
        thing = answer
    asked = steps.outer.format(thing) if steps.start else steps.outer
    found = await _found(thing or asked, where)
    await _widen(found, thing or asked, where)
    answer = bare(await _ask(ask, asked, found, thing))
    links.append(Link(asked, thing or asked, len(found), answer))
    return ChainResult(answer, tuple(links))


async def _found(query: str, where: Any) -> list[str]:
    # Off the event loop: a search of a long context takes a while.
    found = await asyncio.to_thread(documents_for, query, where)
    if not found:
        raise LookupError(f"follow_chain: nothing in the context matches {query!r}")
    return found


async def _widen(found: list[str], thing: str, where: Any) -> None:
    """Adds, up to MAX_DOCUMENTS, the document about each name that the documents about
    `thing` (else the first found) mention. Documents that only mention those names, and
    the names of the others found, were noise the 1.5B model answered from: asked for a
    city's country, it was shown every other city on the same river, and named a person."""
    own = [d for d in found if about(thing, d)] or found[:1]
    seen = {bare(thing).lower()}
    for document in own:
        for name in names_in(document):
            if len(found) >= MAX_DOCUMENTS:
                return
            if name.lower() in seen or not name[0].isupper():
                continue
            seen.add(name.lower())
            more = await asyncio.to_thread(documents_for, name, where, 1)
            found += [d for d in more if d not in found and (about(name, d) or _text(where))]


async def _ask(ask: Ask, question: str, documents: Sequence[str], subject: str) -> str:
    schema = answer_schema(documents, subject)
    if not schema["properties"]["answer"]["enum"]:
        raise LookupError("follow_chain: the documents found name nothing to answer with")
    reply = await ask(link_prompt(question, documents), schema)
    try:
        answer = json.loads(reply)["answer"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"follow_chain: the helper model's reply is not an answer: {reply[:200]!r}"
        ) from None
    if answer not in schema["properties"]["answer"]["enum"]:
        raise ValueError(f"follow_chain: {answer!r} is not written in the documents found")
    return str(answer)
