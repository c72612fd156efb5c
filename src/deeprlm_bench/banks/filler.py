"""Haystack prose: plain, unremarkable sentences to hide needles in.

Sentences are put together from parts (who, what they do, to what, and a closing clause),
which gives tens of thousands of distinct sentences; a fixed pool of them is built once and
generators draw from it in bulk, which is what keeps a 10M-token haystack fast to make.
"""

from __future__ import annotations

import functools
import random

_SUBJECTS = (
    "The old gardener", "A patient teacher", "The village baker", "Our neighbour",
    "The night watchman", "A travelling musician", "The museum guide", "A young apprentice",
    "The ferry captain", "The librarian", "A retired surveyor", "The school choir",
    "The town council", "A careful carpenter", "The orchard keeper", "Most visitors",
    "The weaver", "A quiet student", "The harbour master", "Every shopkeeper",
    "The potter", "A small committee", "The lighthouse keeper", "The market crowd",
)  # fmt: skip

_VERBS = (
    "repaired", "painted", "measured", "described", "carried", "rearranged", "studied",
    "photographed", "cleaned", "admired", "sketched", "packed", "sorted", "planted",
    "borrowed", "returned", "polished", "counted", "labelled", "mended",
)  # fmt: skip

_OBJECTS = (
    "the wooden benches by the river", "a basket of late apples", "the maps in the hallway",
    "the long table in the courtyard", "a stack of yellowed letters", "the garden wall",
    "the bells of the east tower", "a box of brass hinges", "the windows of the reading room",
    "a row of clay pots", "the sails of the fishing boats", "the notes from last winter",
    "the stones along the old road", "a set of copper pans", "the chairs in the meeting hall",
    "the seedlings in the greenhouse", "a pile of woollen blankets", "the signs at the station",
    "the steps of the town hall", "the shelves in the back room",
)  # fmt: skip

_CLAUSES = (
    "before the first frost arrived", "while the rain kept falling", "as the market opened",
    "without saying a word", "just after breakfast", "because nobody else had time",
    "on a slow afternoon in spring", "while the children watched", "after the long meeting",
    "as the bells rang at noon", "in the grey light of morning", "before anyone noticed",
    "with more care than usual", "during the quiet weeks of autumn", "as the tide came in",
    "while the kettle boiled", "late into the evening", "as the season turned",
)  # fmt: skip

_REMARKS = (
    "Nobody could remember when it had last been done.",
    "It took most of the day, but the result was worth it.",
    "People in town talked about it for a week.",
    "The work was slow, and that suited everyone.",
    "Some said it was unnecessary, though no one complained.",
    "It is the kind of task that is easy to put off.",
    "Small habits like this hold a place together.",
    "The weather stayed mild the whole time.",
    "A few tourists stopped to take pictures.",
    "There is a certain calm in ordinary work.",
    "By evening the square was empty again.",
    "Such days rarely make it into the history books.",
)  # fmt: skip

POOL_SIZE = 8192


@functools.cache
def sentence_pool() -> tuple[str, ...]:
    """A fixed pool of distinct filler sentences (the same on every machine)."""
    rng = random.Random(20251231)
    pool: set[str] = set(_REMARKS)
    while len(pool) < POOL_SIZE:
        pool.add(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_CLAUSES)}."
        )
    return tuple(sorted(pool))
