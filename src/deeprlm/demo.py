"""Needle-in-a-haystack contexts: plain prose of any size with one fact hidden at a chosen
depth, and the question that fact answers. Used by `make run` and the local-model benchmark.

    python -m deeprlm.demo --chars 4000000 --out demo/context.txt   # prints the query

The prose is made from seeded word lists, so a context is the same for the same arguments
and no data set is needed. The fact names things the filler never mentions (a vault code, a
ship, a hiding place, a password), so it is findable, but only by looking for it.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

_NAMES = (
    "Ada",
    "Bram",
    "Celia",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Lars",
    "Mina",
    "Nico",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sami",
    "Tove",
)
_PLACES = (
    "the harbour",
    "the old mill",
    "the market square",
    "the library",
    "the north field",
    "the river bank",
    "the bakery",
    "the station",
    "the town hall",
    "the orchard",
    "the workshop",
    "the lighthouse",
    "the school",
    "the bridge",
    "the greenhouse",
)
_VERBS = (
    "walked to",
    "painted",
    "repaired",
    "visited",
    "photographed",
    "cleaned",
    "measured",
    "sketched",
    "inspected",
    "left",
    "described",
    "passed",
    "watched",
    "opened",
    "closed",
)
_TIMES = (
    "early in the morning",
    "after lunch",
    "before the rain",
    "on a quiet Sunday",
    "late in the evening",
    "during the festival",
    "at noon",
    "in the first week of spring",
    "while the bells rang",
    "as the fog lifted",
)
_ASIDES = (
    "Nobody remembered why.",
    "The weather was mild and the streets were calm.",
    "It was an ordinary day, much like the one before.",
    "A dog barked somewhere far away.",
    "The neighbours talked about the harvest.",
    "Someone had left a bicycle by the gate.",
    "The smell of fresh bread filled the air.",
    "Children played a game with chalk on the pavement.",
)
_SITES = (
    "Marlow Station",
    "Kestrel Point",
    "Ashford Depot",
    "Briar Lodge",
    "Coldwater Mine",
    "Dunmore Tower",
    "Elmstead Yard",
    "Fenwick Dock",
    "Glenhollow Farm",
    "Harrow Keep",
    "Ironbridge Works",
    "Juniper Hall",
    "Larkspur Camp",
    "Millbrook Vault",
    "Northgate Fort",
)
_SURNAMES = ("Okafor", "Lindqvist", "Marchetti", "Novak", "Haddad", "Tanaka", "Oyelaran")
_CARGO = ("copper lanterns", "winter seed", "glass bottles", "wool blankets", "clock parts")
_SHIPS = ("Grey Heron", "Saltmarsh Queen", "Northern Wren", "Amber Tide", "Little Osprey")
_HIDING = ("the blue flowerpot", "the loose floorboard", "the brass owl", "the green doormat")
_COLOURS = ("crimson", "teal", "ochre", "violet", "silver")
_ANIMALS = ("otter", "falcon", "badger", "heron", "lynx")


def _fact(rng: random.Random) -> tuple[str, str, str]:
    """(needle sentence, question, expected answer) of one of a few kinds, so that a run
    cannot succeed by knowing one template."""
    kind = rng.randrange(4)
    if kind == 0:
        site, code = rng.choice(_SITES), str(rng.randint(10_000, 99_999))
        return (
            f"The access code for the vault at {site} is {code}.",
            f"What is the access code for the vault at {site}?",
            code,
        )
    if kind == 1:
        cargo, site, ship = rng.choice(_CARGO), rng.choice(_SITES), rng.choice(_SHIPS)
        return (
            f"The {cargo} were shipped to {site} aboard the {ship}.",
            f"Which ship carried the {cargo} to {site}?",
            ship,
        )
    if kind == 2:
        surname, spot = rng.choice(_SURNAMES), rng.choice(_HIDING)
        return (
            f"Dr. {surname} always hides the spare key under {spot}.",
            f"Where does Dr. {surname} hide the spare key?",
            spot.removeprefix("the "),
        )
    site = rng.choice(_SITES)
    word = f"{rng.choice(_COLOURS)}-{rng.choice(_ANIMALS)}-{rng.randint(10, 99)}"
    return (
        f"The password of the radio room at {site} is {word}.",
        f"What is the password of the radio room at {site}?",
        word,
    )


@dataclass(frozen=True)
class Haystack:
    text: str
    query: str
    answer: str
    needle: str
    needle_at: int  # character offset of the needle in `text`


def haystack(chars: int, depth: float = 0.5, seed: int = 0) -> Haystack:
    """A context of about `chars` characters with one fact at `depth` (0 = start, 1 = end)."""
    if chars <= 0:
        raise ValueError("chars must be positive")
    rng = random.Random(seed)
    needle, query, answer = _fact(rng)
    filler = _filler(rng, max(0, chars - len(needle) - 2))
    cut = _sentence_boundary(filler, int(len(filler) * min(max(depth, 0.0), 1.0)))
    before, after = filler[:cut], filler[cut:]
    text = f"{before} {needle} {after}" if before else f"{needle} {after}"
    return Haystack(text, query, answer, needle, text.index(needle))


def _filler(rng: random.Random, chars: int) -> str:
    sentences: list[str] = []
    size = 0
    while size < chars:
        sentence = _sentence(rng)
        sentences.append(sentence)
        size += len(sentence) + 1
    paragraphs = []
    for start in range(0, len(sentences), 6):
        paragraphs.append(" ".join(sentences[start : start + 6]))
    return "\n\n".join(paragraphs)[:chars]


def _sentence(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(_ASIDES)
    return (
        f"{rng.choice(_NAMES)} {rng.choice(_VERBS)} {rng.choice(_PLACES)} "
        f"{rng.choice(_TIMES)}, and {rng.choice(_NAMES)} {rng.choice(_VERBS)} "
        f"{rng.choice(_PLACES)} {rng.randint(2, 40)} minutes later."
    )


def _sentence_boundary(text: str, at: int) -> int:
    """The end of the sentence at or after `at`, so the needle never splits a sentence."""
    if at <= 0:
        return 0
    end = text.find(". ", at)
    return len(text) if end < 0 else end + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeprlm.demo", description=__doc__)
    parser.add_argument("--chars", type=int, default=4_000_000, help="context size")
    parser.add_argument("--depth", type=float, default=0.62, help="where the fact goes, 0..1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="file to write the context to")
    parser.add_argument("--query-out", type=Path, help="also write the query to this file")
    args = parser.parse_args(argv)
    case = haystack(args.chars, args.depth, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(case.text, encoding="utf-8")
    if args.query_out:
        args.query_out.write_text(case.query, encoding="utf-8")
    print(
        f"wrote {len(case.text):,} characters to {args.out}; the fact is at "
        f"{case.needle_at / len(case.text):.0%}: expected answer {case.answer}",
        file=sys.stderr,
    )
    print(case.query)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
