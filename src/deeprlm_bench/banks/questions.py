"""The bank of short general-knowledge questions behind the `aggregate` and `pairs` records.

Each question belongs to one of six classes (the coarse answer types of TREC question
classification, as OOLONG uses them). The class is never written next to a question in the
unlabelled tasks: a reader has to infer it from what the question asks for (a number, a
thing, a place, an explanation, an expansion of an abbreviation, a person). Questions come
from templates with slots, so the bank holds a few thousand distinct questions whose class
follows from the template.
"""

from __future__ import annotations

import functools
import random

NUMERIC = "numeric value"
ENTITY = "entity"
LOCATION = "location"
DESCRIPTION = "description and abstract concept"
ABBREVIATION = "abbreviation"
HUMAN = "human being"

LABELS = (DESCRIPTION, ENTITY, HUMAN, NUMERIC, LOCATION, ABBREVIATION)

_PLACES = (
    "Lumeria", "Corvania", "Tessaly", "the Jorvik Isles", "Westerra", "Nordhal", "Aldoria",
    "Belmark", "Kaldonia", "Rovenna", "Quelmar", "Sarvonia",
)  # fmt: skip
_CITIES = (
    "Varnholm", "Estport", "Brennford", "Kellmouth", "Ostrava Vale", "Dunmere", "Halvik",
    "Pellwick", "Tarnbury", "Sallowgate", "Marrowby", "Iskadell",
)  # fmt: skip
_LANDMARKS = (
    "the Glass Bridge", "the Amber Lighthouse", "the Tower of Seven Bells", "the Old Salt Mill",
    "the Moonstone Observatory", "the Great Kiln", "the Hanging Gardens of Estport",
    "the Copper Dome", "the Northern Aqueduct", "the Harbour Cathedral",
)  # fmt: skip

_NUMERIC_FIXED = (
    "How many keys does a standard piano have?", "How many strings does a cello have?",
    "How many players are on a rugby union team?", "How many squares are on a chessboard?",
    "How many bones are in the human hand?", "How many legs does a spider have?",
    "How many hearts does an octopus have?", "How many days are in a leap year?",
    "How many minutes does a football match last?", "How many moons does Mars have?",
    "How many teeth does an adult human have?", "How many sides does a hexagon have?",
    "How many cards are in a standard deck?",
    "How many hours of daylight are there at the equator?",
    "How many litres of blood does an adult carry?", "How many eggs does a hen lay in a year?",
    "How many languages are spoken in Quelmar?", "How many islands make up the Jorvik Isles?",
    "How many stars are on the flag of Tessaly?", "How many steps lead up to the Copper Dome?",
    "How many calories are in a slice of rye bread?", "How many gallons does a bathtub hold?",
)  # fmt: skip
_NUMERIC_TEMPLATES = (
    ("In what year was {} completed?", _LANDMARKS),
    ("How tall is {}?", _LANDMARKS),
    ("How old is {}?", _LANDMARKS),
    ("What is the population of {}?", _CITIES + _PLACES),
    ("How far is {} from the sea?", _CITIES),
    ("What is the average winter temperature in {}?", _CITIES + _PLACES),
    ("When was the university of {} founded?", _CITIES),
    ("How many people visit {} each year?", _LANDMARKS),
    ("What is the area of {} in square kilometres?", _PLACES),
    ("How much did it cost to build {}?", _LANDMARKS),
    ("How long is the coastline of {}?", _PLACES),
    ("At what temperature does {} melt?", (
        "lead", "butter", "chocolate", "tin", "beeswax", "ice", "glass", "copper", "gold",
    )),
    ("How much does {} weigh?", (
        "an adult elephant", "a blue whale", "a grand piano", "a newborn giraffe",
        "a bowling ball", "a litre of honey", "a school bus", "a church bell",
    )),
    ("How fast can {} run?", (
        "a cheetah", "an ostrich", "a greyhound", "a grizzly bear", "a racehorse", "a rabbit",
        "a kangaroo", "a house cat",
    )),
    ("How long does {} live?", (
        "a tortoise", "a mayfly", "a parrot", "a goldfish", "a horse", "an oak tree", "a bee",
    )),
)  # fmt: skip

_ENTITY_FIXED = (
    "What kind of animal is a dugong?", "What kind of animal is an axolotl?",
    "What kind of animal is a pangolin?", "What kind of animal is a quokka?",
    "What musical instrument has pedals and forty-seven strings?",
    "What sport is played with a shuttlecock?", "What sport uses a puck?",
    "What sport is played with a cue and fifteen red balls?",
    "What fruit is used to make marmalade?", "What grain is used to brew most beer?",
    "What gas do plants absorb from the air?", "What metal is liquid at room temperature?",
    "What type of tree produces acorns?", "What type of tree produces maple syrup?",
    "What disease is caused by a lack of vitamin C?", "What is the hardest natural material?",
    "What board game uses a doubling cube?", "What fabric is made from flax?",
    "What bird is known for mimicking human speech?", "Which vegetable is used to make sauerkraut?",
)  # fmt: skip
_ENTITY_TEMPLATES = (
    ("What language is spoken in {}?", _PLACES),
    ("What currency is used in {}?", _PLACES),
    ("What is the national flower of {}?", _PLACES),
    ("What is the national dish of {}?", _PLACES),
    ("What is the national bird of {}?", _PLACES),
    ("What colour is the flag of {}?", _PLACES),
    ("What was the name of the first ship built in {}?", _CITIES),
    ("What breed of dog is the mascot of {}?", _CITIES),
    ("What material is {} made of?", _LANDMARKS),
    ("What crop is grown most in {}?", _PLACES),
    ("What is {} mainly made from?", (
        "tofu", "paper", "glass", "hummus", "porcelain", "linoleum", "cheddar", "tempeh",
        "gunpowder", "soap",
    )),
    ("Which drink is made by fermenting {}?", (
        "apples", "honey", "rice", "grapes", "pears", "tea leaves", "barley", "agave",
    )),
)  # fmt: skip

_HUMAN_FIXED = (
    "Who invented the sewing machine?", "Who invented the telephone?",
    "Who invented the printing press?", "Who invented the hot air balloon?",
    "Who discovered penicillin?", "Who painted the ceiling of the Sistine Chapel?",
    "Who wrote the first dictionary of the English language?",
    "Who was the first person on the Moon?", "Who composed the Four Seasons?",
    "Who developed the theory of evolution by natural selection?",
    "Who is known as the father of modern chemistry?",
    "Who designed the first mechanical computer?",
)  # fmt: skip
_HUMAN_TEMPLATES = (
    ("Who was the first president of {}?", _PLACES),
    ("Who founded the city of {}?", _CITIES),
    ("Who designed {}?", _LANDMARKS),
    ("Who was the architect of {}?", _LANDMARKS),
    ("Who is the current mayor of {}?", _CITIES),
    ("Who wrote the national anthem of {}?", _PLACES),
    ("Who was the first woman to rule {}?", _PLACES),
    ("Who wrote the novel {}?", (
        "The Salt Orchard", "A Winter in Halvik", "The Glass Cartographer", "Seven Lanterns",
        "The Quiet Harbour", "Letters from the Kiln", "The Tin Astronomer", "North of Dunmere",
    )),
    ("Who painted {}?", (
        "The Ferryman at Dusk", "Girl with a Copper Kettle", "Storm over Estport",
        "The Orchard Wedding", "Still Life with Lemons", "The Night Market",
    )),
    ("Who directed the film {}?", (
        "The Long Tide", "Paper Crowns", "The Lighthouse Keeper's Daughter", "Amber Skies",
        "Under the Glass Bridge", "The Last Regatta",
    )),
    ("Which scientist discovered {}?", (
        "the structure of DNA", "radium", "the electron", "oxygen", "the law of gravitation",
        "X-rays", "the first vaccine",
    )),
)  # fmt: skip

_LOCATION_FIXED = (
    "Where do monarch butterflies spend the winter?", "Where is the deepest point of the ocean?",
    "Where did the Olympic Games begin?", "Which country has the most volcanoes?",
    "Where is the largest coral reef in the world?", "Which desert is the driest on Earth?",
    "Where do emperor penguins breed?", "What is the longest river in Africa?",
    "Which mountain is the highest in Europe?", "Where was paper first invented?",
)  # fmt: skip
_LOCATION_TEMPLATES = (
    ("Where is {} located?", _LANDMARKS),
    ("In which city can you visit {}?", _LANDMARKS),
    ("What is the capital of {}?", _PLACES),
    ("What is the largest city in {}?", _PLACES),
    ("In which country is {}?", _CITIES),
    ("Which river flows through {}?", _CITIES),
    ("Which mountain range lies north of {}?", _CITIES + _PLACES),
    ("Which sea borders {}?", _PLACES),
    ("Where was the peace treaty of {} signed?", _CITIES),
    ("Which port is closest to {}?", _CITIES),
    ("Where is the headquarters of the {} Trading Company?", _CITIES),
)  # fmt: skip

_ACRONYMS = (
    "KRTV", "ZBN", "OLMA", "PFQ", "TRACS", "VDL", "NEMO", "GHX", "BRIS", "CQA", "DUNE", "FLW",
    "HARP", "JKT", "LUMO", "MSPV", "NRQ", "OPAL", "QTZ", "SKV", "TILD", "UBRA", "WXF", "YRN",
)  # fmt: skip
_LONG_NAMES = (
    "the Federation of Northern Beekeepers", "the Guild of Glass Engravers",
    "the International Lighthouse Society", "the Council for Coastal Railways",
    "the Royal Academy of Cartography", "the Union of River Ferrymen",
    "the Institute for Weather Records", "the Society of Amateur Astronomers",
    "the League of Small Harbours", "the Board of Orchard Inspectors",
)  # fmt: skip
_ABBREVIATION_TEMPLATES = (
    ("What does {} stand for?", _ACRONYMS),
    ("What is the full form of {}?", _ACRONYMS),
    ("What is {} an abbreviation of?", _ACRONYMS),
    ("What does the acronym {} mean?", _ACRONYMS),
    ("What do the letters {} stand for?", _ACRONYMS),
    ("What is the abbreviation for {}?", _LONG_NAMES),
    ("How is {} usually abbreviated?", _LONG_NAMES),
    ("What acronym is used for {}?", _LONG_NAMES),
    ("What is the short form of {}?", _LONG_NAMES),
)  # fmt: skip

_DESCRIPTION_FIXED = (
    "Why do cats purr?", "Why does the sky look blue?", "Why do leaves change colour in autumn?",
    "Why does bread rise?", "Why do onions make people cry?", "Why is the sea salty?",
    "How does a refrigerator keep food cold?", "How does a compass work?",
    "How do bees make honey?", "How do vaccines protect the body?",
    "What causes the tides?", "What causes thunder?", "What causes inflation?",
    "What is the difference between weather and climate?",
    "What is the difference between a violin and a fiddle?",
    "How do you tie a bowline knot?", "How do you grow tomatoes indoors?",
    "What does it mean to burn the midnight oil?", "What does it mean to bite the bullet?",
    "What are the benefits of regular stretching?", "Why do some birds migrate?",
)  # fmt: skip
_DESCRIPTION_TEMPLATES = (
    ("What is {}?", (
        "photosynthesis", "entropy", "irony", "a sonnet", "democracy", "osmosis", "nostalgia",
        "a haiku", "supply and demand", "a metaphor", "erosion", "courage", "plate tectonics",
        "a leap year", "compound interest", "fermentation",
    )),
    ("What is the meaning of the word {}?", (
        "serendipity", "melancholy", "wanderlust", "ephemeral", "resilience", "hubris",
        "solace", "candour",
    )),
    ("What is the origin of the custom of {}?", (
        "shaking hands", "blowing out birthday candles", "throwing rice at weddings",
        "carving pumpkins", "knocking on wood", "toasting with glasses",
    )),
    ("How does {} work?", (
        "a steam engine", "a sundial", "a hot air balloon", "a lock and key", "a windmill",
        "a camera lens", "a pendulum clock", "a water filter",
    )),
    ("Why is {} important?", (
        "sleep", "biodiversity", "a free press", "clean water", "recycling", "voting",
        "reading to children",
    )),
)  # fmt: skip

_CLASSES = (
    (NUMERIC, _NUMERIC_FIXED, _NUMERIC_TEMPLATES),
    (ENTITY, _ENTITY_FIXED, _ENTITY_TEMPLATES),
    (HUMAN, _HUMAN_FIXED, _HUMAN_TEMPLATES),
    (LOCATION, _LOCATION_FIXED, _LOCATION_TEMPLATES),
    (ABBREVIATION, (), _ABBREVIATION_TEMPLATES),
    (DESCRIPTION, _DESCRIPTION_FIXED, _DESCRIPTION_TEMPLATES),
)


@functools.cache
def bank() -> dict[str, tuple[str, ...]]:
    """Every question of each class, in a fixed order."""
    result: dict[str, tuple[str, ...]] = {}
    for label, fixed, templates in _CLASSES:
        questions = list(fixed)
        for template, fillers in templates:
            questions.extend(template.format(filler) for filler in fillers)
        result[label] = tuple(dict.fromkeys(questions))
    return result


@functools.cache
def label_of() -> dict[str, str]:
    """Question -> class: the gold labels an oracle classifier answers with."""
    return {q: label for label, questions in bank().items() for q in questions}


def sample_question(rng: random.Random, label: str) -> str:
    questions = bank()[label]
    return questions[rng.randrange(len(questions))]
