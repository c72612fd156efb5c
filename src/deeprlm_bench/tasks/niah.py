"""`niah` (RULER-style single needle): one "special magic number" sentence hidden at a chosen
depth in plain prose; the question asks for it back. Constant work whatever the length.

`niah-distract` adds needles for other keys, some sharing a word with the asked key, so that
finding *a* magic number is not enough. Scored as RULER does: the value appears in the answer.

The same haystack also hides a plain fact (`hidden_fact`: an access code, a ship, a hiding
place, a password), for `make run`'s demo (`deeprlm_bench.demo`) and the embedded model's
benchmark.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from deeprlm_bench import scoring
from deeprlm_bench.banks import filler, words
from deeprlm_bench.example import Example
from deeprlm_bench.tokens import chars_for

_BLOCK = 4096


def needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


def haystack(rng: random.Random, target_chars: int) -> list[str]:
    """Filler pieces (sentences with their trailing separator) adding up to at most
    `target_chars`, short of it by less than one sentence."""
    pool = filler.sentence_pool()
    pieces: list[str] = []
    total = 0
    left_in_paragraph = rng.randrange(3, 9)
    while True:
        for sentence in rng.choices(pool, k=_BLOCK):
            left_in_paragraph -= 1
            if left_in_paragraph == 0:
                piece = sentence + "\n\n"
                left_in_paragraph = rng.randrange(3, 9)
            else:
                piece = sentence + " "
            if total + len(piece) > target_chars:
                return pieces
            pieces.append(piece)
            total += len(piece)


def _value(rng: random.Random, taken: set[str]) -> str:
    while True:
        value = str(rng.randrange(1_000_000, 10_000_000))
        if value not in taken:
            taken.add(value)
            return value


def _keys(rng: random.Random, distractors: int) -> list[str]:
    """The asked key first, then distractor keys; the first two distractors share the
    adjective or the noun with the asked key."""
    adjective, noun = rng.choice(words.ADJECTIVES), rng.choice(words.NOUNS)
    keys = [f"{adjective}-{noun}"]
    while len(keys) < 1 + distractors:
        slot = len(keys)
        adj = adjective if slot == 1 else rng.choice(words.ADJECTIVES)
        nn = noun if slot == 2 else rng.choice(words.NOUNS)
        key = f"{adj}-{nn}"
        if key not in keys:
            keys.append(key)
    return keys


@dataclass(frozen=True)
class Niah:
    distractors: int = 0
    # Where the asked needle sits, 0 (start) to 1 (end); None: drawn from the seed.
    depth: float | None = None

    @property
    def name(self) -> str:
        return "niah-distract" if self.distractors else "niah"

    @property
    def description(self) -> str:
        extra = f" among {self.distractors} distractor needles" if self.distractors else ""
        return f"RULER-style single needle in a haystack{extra} (constant in the context)"

    def generate(self, seed: int, length: int) -> Example:
        rng = random.Random(seed)
        keys = _keys(rng, self.distractors)
        taken: set[str] = set()
        needles = [needle(key, _value(rng, taken)) for key in keys]
        depths = [rng.random() for _ in needles]
        if self.depth is not None:
            depths[0] = self.depth
        value = needles[0].rsplit(" ", 1)[-1].rstrip(".")
        budget = chars_for(length) - sum(len(n) + 1 for n in needles)
        pieces = haystack(rng, max(0, budget))
        # Insert from the deepest position up, so earlier positions stay valid.
        for text, depth in sorted(zip(needles, depths, strict=True), key=lambda nd: -nd[1]):
            pieces.insert(round(depth * len(pieces)), text + " ")
        return Example(
            task=self.name,
            length=length,
            seed=seed,
            context="".join(pieces).rstrip(),
            query=(
                f"What is the special magic number for {keys[0]} mentioned in the provided "
                "text? Give your final answer in the form 'Answer: <number>'."
            ),
            gold=value,
            info={"key": keys[0], "depth": depths[0], "distractor_keys": keys[1:]},
        )

    def score(self, example: Example, answer: str) -> float:
        return scoring.contains(example.gold, answer)


# --- a plain fact in the same prose -------------------------------------------------------

# The fact's words are not in the filler's (`banks.filler`): it is findable, but only by
# looking for it.
_SITES = (
    "Marlow Station", "Kestrel Point", "Ashford Depot", "Briar Lodge", "Coldwater Mine",
    "Dunmore Tower", "Elmstead Yard", "Fenwick Dock", "Glenhollow Farm", "Harrow Keep",
    "Ironbridge Works", "Juniper Hall", "Larkspur Camp", "Millbrook Vault", "Northgate Fort",
)  # fmt: skip
_SURNAMES = ("Okafor", "Lindqvist", "Marchetti", "Novak", "Haddad", "Tanaka", "Oyelaran")
_CARGO = ("tin lanterns", "barley sacks", "glass bottles", "linen quilts", "clock parts")
_SHIPS = ("Swift Heron", "Saltmarsh Queen", "Northern Wren", "Amber Wave", "Little Osprey")
_HIDING = ("the blue flowerpot", "the loose floorboard", "the stone owl", "the green doormat")
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
        f"The password of the radio hut at {site} is {word}.",
        f"What is the password of the radio hut at {site}?",
        word,
    )


@dataclass(frozen=True)
class HiddenFact:
    text: str
    query: str
    answer: str
    needle: str
    needle_at: int  # character offset of the needle in `text`


def hidden_fact(chars: int, depth: float = 0.5, seed: int = 0) -> HiddenFact:
    """About `chars` characters of prose with one fact at `depth` (0 = start, 1 = end)."""
    if chars <= 0:
        raise ValueError("chars must be positive")
    rng = random.Random(seed)
    needle, query, answer = _fact(rng)
    pieces = haystack(rng, max(0, chars - len(needle) - 1))
    pieces.insert(round(min(max(depth, 0.0), 1.0) * len(pieces)), needle + " ")
    text = "".join(pieces).rstrip()
    return HiddenFact(text, query, answer, needle, text.index(needle))
