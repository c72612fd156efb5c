"""Word lists the generators draw names and keys from.

Places, companies and family names are invented from syllables so that no model can answer
from memory what the context alone should tell it.
"""

from __future__ import annotations

import random

ADJECTIVES = (
    "amber", "ancient", "bitter", "bold", "brave", "brisk", "calm", "clever", "cold",
    "crimson", "curious", "dapper", "distant", "dusty", "eager", "early", "electric", "faint",
    "fancy", "fierce", "fragile", "gentle", "gilded", "glassy", "golden", "grumpy", "hidden",
    "hollow", "humble", "icy", "jolly", "keen", "lively", "lonely", "loud", "lucky", "marble",
    "mellow", "misty", "modest", "muddy", "narrow", "nimble", "noisy", "pale", "patient",
    "plain", "proud", "quiet", "rapid", "rusty", "shiny", "silent", "silver", "sleepy", "slow",
    "smoky", "solemn", "spare", "steady", "stormy", "sunny", "tame", "tidy", "velvet", "vivid",
    "wary", "wild", "windy", "witty", "wooden", "young",
)  # fmt: skip

NOUNS = (
    "anchor", "apricot", "badger", "balcony", "banjo", "beacon", "bicycle", "blanket",
    "bridge", "bucket", "cabin", "candle", "canyon", "castle", "cellar", "chimney", "comet",
    "compass", "cottage", "crayon", "dolphin", "drum", "falcon", "feather", "ferry", "fiddle",
    "garden", "glacier", "goblet", "harbor", "helmet", "hedgehog", "island", "jacket", "kettle",
    "ladder", "lantern", "lemon", "lighthouse", "magnet", "meadow", "mitten", "orchard",
    "otter", "paddle", "pebble", "pepper", "piano", "pillow", "quarry", "rabbit", "raft",
    "ribbon", "saddle", "sparrow", "statue", "teapot", "thimble", "tractor", "trumpet",
    "tunnel", "umbrella", "valley", "violin", "walrus", "wagon", "window", "zeppelin",
)  # fmt: skip

FIRST_NAMES = (
    "Ada", "Aiko", "Alma", "Amara", "Anders", "Ari", "Bea", "Bruno", "Cai", "Carmen", "Cyrus",
    "Dalia", "Dario", "Dmitri", "Edda", "Elif", "Emeka", "Enzo", "Esme", "Farid", "Femi",
    "Freya", "Gemma", "Goran", "Hana", "Hugo", "Ilse", "Imani", "Ines", "Ivo", "Jalen", "Jonas",
    "Kaito", "Kalani", "Kenji", "Kira", "Lars", "Leila", "Lior", "Lucia", "Maeve", "Malik",
    "Mara", "Mateo", "Mina", "Nadia", "Nico", "Nils", "Noor", "Oden", "Olga", "Omar", "Orla",
    "Otto", "Paz", "Petra", "Priya", "Quinn", "Rafael", "Rania", "Remy", "Rosa", "Rui", "Sade",
    "Sami", "Sana", "Selim", "Signe", "Soren", "Tala", "Tariq", "Tess", "Theo", "Timur",
    "Ulla", "Uma", "Vera", "Viktor", "Wanda", "Wren", "Xavi", "Yara", "Yusuf", "Zainab",
    "Zeno", "Zora",
)  # fmt: skip

_ONSETS = (
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r",
    "s", "st", "t", "tr", "v", "w", "z", "sh", "th", "ch", "bl", "fl", "vel", "mar", "cor",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ia", "ae")
_CODAS = (
    "", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "sk", "lt", "x", "ck", "rn", "st",
)  # fmt: skip
_PLACE_ENDINGS = (
    "ford", "mouth", "holm", "stad", "vale", "bury", "port", "wick", "haven", "grad", "by",
    "dell", "field", "mere", "ton", "gate",
)  # fmt: skip


def invented_word(rng: random.Random, syllables: int) -> str:
    parts = [
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ]
    return "".join(parts).capitalize()


def invented_surname(rng: random.Random) -> str:
    return invented_word(rng, rng.choice((2, 2, 3)))


def invented_place(rng: random.Random) -> str:
    return invented_word(rng, rng.choice((1, 2))) + rng.choice(_PLACE_ENDINGS)


COUNTRIES = (
    "Aldoria", "Belmark", "Corvania", "Dravenia", "Estmoor", "Falvaria", "Galdor", "Hesperin",
    "Istrava", "Jorvik Isles", "Kaldonia", "Lumeria", "Montravia", "Nordhal", "Ostrelia",
    "Pellucia", "Quelmar", "Rovenna", "Sarvonia", "Tessaly", "Ulvmark", "Valdoria",
    "Westerra", "Zandria",
)  # fmt: skip

RIVERS = (
    "Amberflow", "Brenn", "Cald", "Dorwe", "Elsk", "Fenn", "Glimmer", "Harl", "Iska", "Jorr",
    "Kessel", "Lume", "Morrow", "Nerra", "Orne", "Pell", "Quill", "Rhosk", "Sallow", "Tarn",
)  # fmt: skip

PROFESSIONS = (
    "architect", "astronomer", "baker", "botanist", "cartographer", "chemist", "composer",
    "economist", "engineer", "geologist", "historian", "inventor", "journalist", "lawyer",
    "linguist", "mathematician", "nurse", "painter", "pharmacist", "photographer", "physician",
    "pilot", "poet", "sculptor", "shipwright", "surveyor", "teacher", "veterinarian",
)  # fmt: skip

INDUSTRIES = (
    ("logistics", "Logistics"), ("textile", "Textiles"), ("shipbuilding", "Shipyards"),
    ("software", "Software"), ("brewing", "Breweries"), ("mining", "Mining"),
    ("insurance", "Assurance"), ("publishing", "Press"), ("pharmaceutical", "Pharma"),
    ("aerospace", "Aerospace"), ("glassmaking", "Glassworks"), ("rail", "Railways"),
    ("energy", "Energy"), ("robotics", "Robotics"), ("food", "Foods"), ("optics", "Optics"),
)  # fmt: skip

EVENT_KINDS = (
    "Lantern Festival", "Regatta", "Chess Open", "Marathon", "Film Festival", "Book Fair",
    "Jazz Week", "Science Fair", "Cycling Tour", "Harvest Fair", "Kite Festival",
    "Choir Competition", "Robotics Cup", "Poetry Festival", "Architecture Biennale",
    "Glassblowing Expo", "Cheese Market", "Sailing Cup", "Dance Festival", "Maker Faire",
)  # fmt: skip
