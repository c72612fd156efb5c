"""multihop: the gold follows the chain the documents state, the near-duplicates are
there, and the question pins down one chain."""

import re

import pytest

from deeprlm_bench.tasks.multihop import CHAINS, Multihop

EDITION = re.compile(r"^(.+) (\d{4})\nThe \2 edition of the \1 took place in .+?\. "
                     r"Its main sponsor was (.+?)\. ")  # fmt: skip
COMPANY = re.compile(r"^(.+)\n\1 is an? \w+ company headquartered in (.+?)\. It was founded "
                     r"in (\d{4}) by (.+?) \(born (\d{4})\)\. ")  # fmt: skip
PERSON = re.compile(r"^(.+) \(born (\d{4})\)\n\1 is an? \w+ born in \2 in (.+?)\. ")
CITY = re.compile(r"^(.+)\n\1 is a city in (.+?), on the (.+?) river\. ")


def parse(docs):
    editions, companies, people, cities = {}, {}, {}, {}
    for doc in docs:
        if m := EDITION.match(doc):
            assert (m[1], m[2]) not in editions
            editions[(m[1], m[2])] = m[3]
        elif m := COMPANY.match(doc):
            assert m[1] not in companies
            companies[m[1]] = {"hq": m[2], "founded": m[3], "founder": (m[4], m[5])}
        elif m := PERSON.match(doc):
            assert people.get((m[1], m[2]), m[3]) == m[3]
            people[(m[1], m[2])] = m[3]
        elif m := CITY.match(doc):
            assert cities.get(m[1], (m[2], m[3])) == (m[2], m[3])
            cities[m[1]] = (m[2], m[3])
        else:
            raise AssertionError(f"unparsed document: {doc[:80]!r}")
    return editions, companies, people, cities


def examples_of_every_kind():
    seen, seed = {}, 0
    while len(seen) < len(CHAINS):
        example = Multihop().generate(seed, 8192)
        seen.setdefault(example.info["kind"], example)
        seed += 1
    return list(seen.values())


@pytest.mark.parametrize("example", examples_of_every_kind(), ids=lambda e: e.info["kind"])
def test_gold_follows_the_stated_chain(example):
    editions, companies, people, cities = parse(example.context)
    series, year = example.info["series"], str(example.info["year"])
    assert f"{year} {series}" in example.query
    company = companies[editions[(series, year)]]
    founder = company["founder"]
    expected = {
        "sponsor_founded": lambda: company["founded"],
        "sponsor_founder": lambda: founder[0],
        "sponsor_country": lambda: cities[company["hq"]][0],
        "founder_city": lambda: people[founder],
        "founder_river": lambda: cities[people[founder]][1],
        "founder_country": lambda: cities[people[founder]][0],
    }[example.info["kind"]]()
    assert example.gold == expected


@pytest.mark.parametrize("seed", range(5))
def test_near_duplicates_sit_beside_the_chain(seed):
    example = Multihop().generate(seed, 8192)
    editions, companies, people, _ = parse(example.context)
    series, year = example.info["series"], str(example.info["year"])
    # Other editions of the same series, each with another sponsor.
    same_series = {y: s for (name, y), s in editions.items() if name == series}
    assert len(same_series) == 3
    assert len(set(same_series.values())) == 3
    # A namesake of the founder, born another year in another city.
    name, _ = companies[editions[(series, year)]]["founder"]
    namesakes = {b: city for (n, b), city in people.items() if n == name}
    assert len(namesakes) >= 2
    assert len(set(namesakes.values())) >= 2


def test_corpus_grows_by_documents_with_length():
    small = Multihop().generate(1, 4096)
    large = Multihop().generate(1, 65536)
    assert len(large.context) > 10 * len(small.context)
    assert f"list of {len(large.context)} short documents" in large.query
