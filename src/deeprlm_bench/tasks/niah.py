"""`niah` (RULER-style single needle): one "special magic number" sentence hidden at a chosen
depth in plain prose; the question asks for it back. Constant work whatever the length.

`niah-distract` adds needles for other keys, some sharing a word with the asked key, so that
finding *a* magic number is not enough. Scored as RULER does: the value appears in the answer.
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
