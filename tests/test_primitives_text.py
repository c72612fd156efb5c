"""`search` and `chunk_text`: the same answers whatever the context's shape, records kept
whole."""

from __future__ import annotations

import itertools
import pickle

import pytest

from deeprlm.primitives.chunking import chunk_text
from deeprlm.primitives.search import Hits, search

DOC = "alpha line\nThe Keeper of the Ferro lighthouse retired in 1987.\nomega line"


@pytest.mark.parametrize(
    ("where", "key"),
    [
        (DOC, None),
        (["nothing here", DOC], 1),
        ({"a.txt": "nothing here", "notes/b.txt": DOC}, "notes/b.txt"),
    ],
)
def test_search_finds_words_in_a_str_a_list_and_a_dict_alike(where, key):
    hits = search("ferro KEEPER", where)
    assert isinstance(hits, Hits) and len(hits) == 1 and hits.total == 1
    hit = hits[0]
    assert hit.key == key
    assert hit.line == 2
    text = where if isinstance(where, str) else where[key]
    assert text[hit.offset :].lower().startswith(hit.match.lower())
    assert "retired in 1987" in hit.text
    assert "every word on one line" in repr(hits)


def test_search_accepts_the_haystack_first():
    context = {"f.py": "x = 1\nMAX_RETRY = 5\n"} | {f"g{i}.py": "pass" for i in range(3)}
    assert search(context, "max_retry")[0].key == "f.py"


def test_when_no_line_has_every_word_the_lines_with_most_of_them_are_hits():
    text = "the sponsor was Kolt Mining\nunrelated\nKolt Mining was founded in 1950"
    hits = search("In what year was the Kolt Mining company founded", text)
    assert [h.line for h in hits] == [3]
    assert "3 of the 5" in hits.how  # kolt, mining, founded; not year, company


def test_a_regex_gives_one_hit_per_match():
    text = "id 12 and id 345\nnone\nid 6"
    hits = search(r"id \d+", text)
    assert [h.match for h in hits] == ["id 12", "id 345", "id 6"]
    assert [h.line for h in hits] == [1, 1, 3]
    assert hits.how == "regex"


def test_plain_punctuation_is_not_taken_for_a_regex():
    text = 'config["shipping.depth_terms"] = 5\nshippingXdepth_terms'
    hits = search("shipping.depth_terms", text)
    assert [h.line for h in hits] == [1]


def test_a_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="bad regex"):
        search("(unclosed", "text", regex=True)


def test_limit_keeps_the_first_hits_and_counts_them_all():
    text = "\n".join(f"row {i} marker" for i in range(50))
    hits = search("marker", text, limit=5)
    assert len(hits) == 5 and hits.total == 50
    assert "showing the first 5" in repr(hits)
    assert len(search("marker", text, limit=None)) == 50


def test_the_window_shows_whole_lines_around_the_match():
    lines = [f"line {i:02d} " + "x" * 20 for i in range(40)]
    hits = search("line 20", "\n".join(lines), window=60)
    shown = hits[0].text.splitlines()
    assert "line 20" in shown[len(shown) // 2] or any("line 20" in s for s in shown)
    assert all(s in lines for s in shown)  # no line cut in two
    assert 1 < len(shown) < 8


def test_neighbouring_hits_are_not_printed_twice():
    text = "a key\nb key\n" + "filler\n" * 50 + "c key"
    shown = repr(search("key", text, window=40))
    assert shown.count("a key") == 1
    assert "lines 1, 2 (2 hits)" in shown


def test_search_rejects_what_it_cannot_search():
    with pytest.raises(TypeError, match="say where"):
        search("x")
    with pytest.raises(TypeError, match="not int"):
        search("x", 42)
    with pytest.raises(ValueError, match="no words"):
        search("  ", "text")


def test_hits_survive_pickling():
    hits = search("ferro", DOC)
    again = pickle.loads(pickle.dumps(hits))
    assert list(again) == list(hits) and again.total == 1


def test_search_over_a_large_text_is_by_line():
    text = ("filler words here\n" * 100_000) + "the needle-word is 42\n"
    hits = search("needle-word", text)
    assert hits[0].line == 100_001


# --- chunk_text -------------------------------------------------------------------------

RECORDS = "\n".join(
    f"Date: 2024-01-{i:02d} || User: {i} || note {'x' * (i % 7)}" for i in range(1, 31)
)


def test_chunks_by_characters_never_split_a_line():
    chunks = chunk_text(RECORDS, 300)
    lines = RECORDS.split("\n")
    assert all(len(c) <= 300 for c in chunks)
    assert [line for c in chunks for line in c.split("\n")] == lines


def test_chunks_by_lines_with_overlap_repeat_the_last_lines():
    chunks = chunk_text(RECORDS, 10, 2, by="lines")
    lines = RECORDS.split("\n")
    assert chunks[0].split("\n") == lines[:10]
    assert chunks[1].split("\n") == lines[8:18]
    assert chunks[-1].split("\n")[-1] == lines[-1]


def test_character_overlap_is_whole_records():
    chunks = chunk_text(RECORDS, 300, 100)
    for before, after in itertools.pairwise(chunks):
        shared = [line for line in after.split("\n") if line in before.split("\n")]
        assert shared and sum(len(s) + 1 for s in shared) <= 100
        assert after.startswith(shared[0])


def test_blank_line_blocks_are_the_records_of_a_text_made_of_them():
    docs = "\n\n".join(f"Title {i}\nBody of document {i}, two lines long." for i in range(12))
    chunks = chunk_text(docs, 120)
    for chunk in chunks:
        for block in chunk.split("\n\n"):
            assert block.startswith("Title ") and block.count("\n") == 1


def test_a_record_longer_than_the_size_is_split_at_line_ends_then_at_size():
    text = "short\n" + "long line " * 30 + "\nend"
    chunks = chunk_text(text, 100)
    assert all(len(c) <= 100 for c in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")


def test_lists_and_dicts_are_chunked_item_by_item():
    files = {f"src/m{i}.py": f"def f{i}():\n    return {i}\n" for i in range(6)}
    chunks = chunk_text(files, 80)
    joined = "\n".join(chunks)
    for path in files:
        assert joined.count(f"# {path}") == 1
    assert all(c.startswith("# src/") for c in chunks)
    assert chunk_text(["one", "two"], 100) == ["one\n\ntwo"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "size must be"),
        ({"size": 10, "overlap": 10}, "overlap must be"),
        ({"by": "words"}, "by must be"),
    ],
)
def test_bad_chunk_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chunk_text("text", **kwargs)


def test_a_hit_in_code_names_the_function_it_is_in():
    source = (
        "import os\n\n"
        "def configure(config):\n"
        '    """Sets defaults."""\n'
        '    config["mail.timeout"] = 30\n\n'
        "class Sender:\n"
        "    def send(self):\n"
        "        if ready:\n"
        '            return config["mail.timeout"]\n'
    )
    hits = search("mail.timeout", {"shop/mailer.py": source})
    assert [h.scope for h in hits] == ["configure", "Sender.send"]
    # A Python file's hits also name the place as code and questions do: pkg.mod.func.
    assert "'shop/mailer.py', line 5, in shop.mailer.configure]" in repr(hits)
    assert "line 10, in shop.mailer.Sender.send]" in repr(hits)
    assert search("import os", source)[0].scope is None
    assert "['shop/mailer.py', line 1, offset 0, in module shop.mailer]" in str(
        search("import os", {"shop/mailer.py": source})[0]
    )
    # Other files keep their own names.
    assert "['mailer.js', line 5, in configure]" in repr(search("timeout", {"mailer.js": source}))


def test_a_hit_reads_as_a_dict_too():
    hit = search("ferro", DOC)[0]
    assert hit["line"] == hit.line == 2 and hit["text"] == hit.text
    with pytest.raises(KeyError, match="a hit has key, line, offset"):
        hit["around"]


def test_a_hit_unpacks_as_where_and_text():
    # Small models collect (index, line) pairs in searches of their own, then unpack hits.
    hits = search("kest", ["Omar Lenz\nborn in Varsel", "Ida Moss\nborn in Kest"])
    key, text = hits[0]
    assert (key, text) == (1, hits[0].text) == (hits[0][0], hits[0][1])
    assert "born in Kest" in text


def test_a_dotted_name_found_nowhere_is_looked_for_by_its_last_part():
    code = {"shop/a.py": "def weigh_total(x):\n    return x\n", "shop/b.py": "y = weigh_total(2)\n"}
    hits = search("shop.a.weigh_total", code)
    assert [h.key for h in hits] == ["shop/a.py", "shop/b.py"]
    assert "nothing matched the dotted names; these match 'weigh_total'" in repr(hits)
    # A dotted name that is there is found as written.
    assert [h.key for h in search("config.timeout", {"a.py": "config.timeout = 3"})] == ["a.py"]
