"""`multihop` (BrowseComp-Plus style): a corpus of short generated documents about places,
people, companies and event editions; each question needs two to four of them, chained.

The chain starts at one edition of an event series ("the 1994 Talvor Regatta") and follows
its sponsor to the company, the company's founder, the founder's home city. Near-duplicate
distractors sit beside each hop: other editions of the same series (a different year, so a
different sponsor and chain), and a namesake of the founder born in another year and city —
the company document names its founder with the birth year, which tells them apart. The
corpus grows by adding unrelated documents of the same kinds. Scored by normalised exact
match.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from deeprlm_bench import scoring
from deeprlm_bench.banks import words
from deeprlm_bench.example import Example, too_short
from deeprlm_bench.tokens import chars_for

MIN_TOKENS = 2048


@dataclass(frozen=True)
class City:
    name: str
    country: str
    river: str
    founded: int


@dataclass(frozen=True)
class Person:
    name: str
    born: int
    city: City
    profession: str


@dataclass(frozen=True)
class Company:
    name: str
    industry: str
    founded: int
    founder: Person
    hq: City


@dataclass(frozen=True)
class Edition:
    series: str
    year: int
    city: City
    sponsor: Company

    @property
    def title(self) -> str:
        return f"{self.series} {self.year}"


_PLACE_NOTES = (
    "Its old town is known for narrow streets and painted shutters.",
    "The city hosts a weekly market on its central square.",
    "A ferry links it to the villages along the coast.",
    "Its library holds a large collection of maritime charts.",
    "The surrounding hills are covered in vineyards.",
    "Tram lines have crossed the centre since the early days of the railway.",
)
_PERSON_NOTES = (
    "Colleagues describe a patient, methodical way of working.",
    "Outside work, a lifelong interest in sailing is well documented.",
    "Several awards followed a long career.",
    "Interviews mention a childhood spent near the river.",
    "A biography of this life appeared some years ago.",
    "Former students still cite this work.",
)
_COMPANY_NOTES = (
    "It employs several thousand people across three sites.",
    "The firm has changed hands twice but kept its name.",
    "Its annual report is published every spring.",
    "The company is known for long apprenticeships.",
    "It began as a small workshop before expanding.",
    "Its logo has not changed since the first year.",
)
_EDITION_NOTES = (
    "Attendance was higher than in the previous year.",
    "Rain on the final day did not stop the programme.",
    "Local newspapers covered the opening ceremony at length.",
    "Volunteers from the region ran most of the stands.",
    "The closing night ended with fireworks over the water.",
    "Organisers added a children's programme that year.",
)


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def city_doc(c: City, note: str) -> str:
    return (
        f"{c.name}\n{c.name} is a city in {c.country}, on the {c.river} river. "
        f"It was founded in {c.founded}. {note}"
    )


def person_doc(p: Person, note: str) -> str:
    return (
        f"{p.name} (born {p.born})\n{p.name} is {_a(p.profession)} born in {p.born} in "
        f"{p.city.name}. {note}"
    )


def company_doc(c: Company, note: str) -> str:
    return (
        f"{c.name}\n{c.name} is {_a(c.industry)} company headquartered in {c.hq.name}. It was "
        f"founded in {c.founded} by {c.founder.name} (born {c.founder.born}). {note}"
    )


def edition_doc(e: Edition, note: str) -> str:
    return (
        f"{e.title}\nThe {e.year} edition of the {e.series} took place in {e.city.name}. "
        f"Its main sponsor was {e.sponsor.name}. {note}"
    )


# Question kinds: the hops walked after the edition, and what the answer is.
CHAINS = {
    "sponsor_founded": ("In what year was the main sponsor of the {e} founded?", 2),
    "sponsor_founder": ("Who founded the main sponsor of the {e}?", 2),
    "sponsor_country": (
        "In which country is the headquarters city of the main sponsor of the {e}?",
        3,
    ),
    "founder_city": ("In which city was the founder of the main sponsor of the {e} born?", 3),
    "founder_river": (
        "On which river lies the birthplace of the founder of the main sponsor of the {e}?",
        4,
    ),
    "founder_country": (
        "In which country was the founder of the main sponsor of the {e} born?",
        4,
    ),
}


def answer_of(kind: str, e: Edition) -> str:
    company = e.sponsor
    return {
        "sponsor_founded": lambda: str(company.founded),
        "sponsor_founder": lambda: company.founder.name,
        "sponsor_country": lambda: company.hq.country,
        "founder_city": lambda: company.founder.city.name,
        "founder_river": lambda: company.founder.city.river,
        "founder_country": lambda: company.founder.city.country,
    }[kind]()


class _World:
    """Makes entities with the uniqueness the questions rely on: city, company and series
    names are unique, and so is a person's (name, birth year)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.city_names: set[str] = set()
        self.company_names: set[str] = set()
        self.series_names: set[str] = set()
        self.people: set[tuple[str, int]] = set()
        self.cities: list[City] = []

    def city(self) -> City:
        rng = self.rng
        # Reuse cities once there are enough, so places recur across documents.
        if len(self.cities) > 40 and rng.random() < 0.7:
            return rng.choice(self.cities)
        name = words.invented_place(rng)
        while name in self.city_names:
            name = words.invented_place(rng)
        self.city_names.add(name)
        city = City(name, rng.choice(words.COUNTRIES), rng.choice(words.RIVERS),
                    rng.randrange(900, 1800))  # fmt: skip
        self.cities.append(city)
        return city

    def person(self, name: str | None = None, avoid_city: City | None = None) -> Person:
        rng = self.rng
        while True:
            full = name or f"{rng.choice(words.FIRST_NAMES)} {words.invented_surname(rng)}"
            born = rng.randrange(1920, 1990)
            if (full, born) not in self.people:
                break
        self.people.add((full, born))
        city = self.city()
        while avoid_city is not None and city == avoid_city:
            city = self.city()
        return Person(full, born, city, rng.choice(words.PROFESSIONS))

    def company(self, founder: Person | None = None) -> Company:
        rng = self.rng
        industry, suffix = rng.choice(words.INDUSTRIES)
        name = f"{words.invented_word(rng, 2)} {suffix}"
        while name in self.company_names:
            name = f"{words.invented_word(rng, 2)} {suffix}"
        self.company_names.add(name)
        founder = founder or self.person()
        founded = rng.randrange(founder.born + 22, founder.born + 60)
        return Company(name, industry, founded, founder, self.city())

    def series(self) -> str:
        rng = self.rng
        name = f"{words.invented_word(rng, 2)} {rng.choice(words.EVENT_KINDS)}"
        while name in self.series_names:
            name = f"{words.invented_word(rng, 2)} {rng.choice(words.EVENT_KINDS)}"
        self.series_names.add(name)
        return name


def _chain_docs(e: Edition, rng: random.Random) -> list[str]:
    c = e.sponsor
    return [
        edition_doc(e, rng.choice(_EDITION_NOTES)),
        company_doc(c, rng.choice(_COMPANY_NOTES)),
        person_doc(c.founder, rng.choice(_PERSON_NOTES)),
        city_doc(c.founder.city, rng.choice(_PLACE_NOTES)),
        city_doc(c.hq, rng.choice(_PLACE_NOTES)),
    ]


def _background_doc(world: _World, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return city_doc(world.city(), rng.choice(_PLACE_NOTES))
    if kind == 1:
        return person_doc(world.person(), rng.choice(_PERSON_NOTES))
    if kind == 2:
        return company_doc(world.company(), rng.choice(_COMPANY_NOTES))
    edition = Edition(world.series(), rng.randrange(1960, 2024), world.city(), world.company())
    return edition_doc(edition, rng.choice(_EDITION_NOTES))


@dataclass(frozen=True)
class Multihop:
    name: str = "multihop"
    description: str = "BrowseComp-Plus-style chained lookups over generated documents"

    def generate(self, seed: int, length: int) -> Example:
        if length < MIN_TOKENS:
            raise too_short(self.name, MIN_TOKENS)
        rng = random.Random(seed)
        world = _World(rng)
        kind = rng.choice(sorted(CHAINS))
        series = world.series()
        years = rng.sample(range(1960, 2024), 3)
        editions = [Edition(series, year, world.city(), world.company()) for year in years]
        target = editions[0]
        founder = target.sponsor.founder
        namesake = world.person(name=founder.name, avoid_city=founder.city)

        docs: list[str] = []
        seen: set[str] = set()
        for edition in editions:
            for doc in _chain_docs(edition, rng):
                if doc.split("\n", 1)[0] not in seen:  # a city may recur along chains
                    seen.add(doc.split("\n", 1)[0])
                    docs.append(doc)
        docs.append(person_doc(namesake, rng.choice(_PERSON_NOTES)))
        docs.append(city_doc(namesake.city, rng.choice(_PLACE_NOTES)))
        budget = chars_for(length)
        total = sum(len(d) for d in docs) + 2 * (len(docs) - 1)
        while True:
            doc = _background_doc(world, rng)
            if total + len(doc) + 2 > budget:
                break
            docs.append(doc)
            total += len(doc) + 2
        rng.shuffle(docs)
        question, hops = CHAINS[kind]
        return Example(
            task=self.name,
            length=length,
            seed=seed,
            context=docs,
            query=(
                f"The context is a list of {len(docs)} short documents. "
                + question.format(e=f"{target.year} {series}")
                + " Give your final answer in the form 'Answer: <answer>'."
            ),
            gold=answer_of(kind, target),
            info={
                "kind": kind,
                "hops": hops,
                "series": series,
                "year": target.year,
                "documents": len(docs),
            },
        )

    def score(self, example: Example, answer: str) -> float:
        return scoring.normalized_exact(example.gold, answer)
