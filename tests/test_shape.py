"""What the root is told about a context's structure: a dict's folder tree, a text's record
format or blocks, how a list's items look; and `records` / `parse_date`, which read the
records that format describes."""

from __future__ import annotations

import datetime as dt

import pytest

from deeprlm.context import describe
from deeprlm.primitives.records import parse_date, records
from deeprlm.prompts import describe_context
from deeprlm.shape import folder_tree, item_format, line_format

CODEBASE = {
    **{f"shop/billing/{name}.py": "X = 1\n" for name in ("rates", "ledger", "tax")},
    **{f"shop/mailer/{name}.py": "X = 2\n" for name in ("send", "queue")},
    "shop/mailer/templates/welcome.txt": "hi",
    "README.md": "# shop",
}


def test_a_dict_of_paths_is_shown_as_folders_with_their_file_counts():
    tree = folder_tree(CODEBASE)
    assert tree.splitlines() == [
        "shop/ (6 files)",
        "  billing/ (3 files): ledger.py, rates.py, tax.py",
        "  mailer/ (3 files)",
        "    templates/ (1 file): welcome.txt",
        "    queue.py, send.py",
        "README.md",
    ]


def test_a_large_tree_is_cut_to_its_upper_folders():
    keys = [f"app/s{i}/m{j}/f{k}.py" for i in range(12) for j in range(5) for k in range(3)]
    tree = folder_tree(keys)
    lines = tree.splitlines()
    assert lines[0] == "app/ (180 files)"
    assert "  s0/ (15 files)" in lines
    assert not any("m0/" in line for line in lines)  # a level too deep to fit
    assert len(lines) <= 25


def test_keys_that_are_not_paths_have_no_tree():
    assert folder_tree(["alpha", "beta"]) == ""


def test_the_description_of_a_dict_shows_its_tree_not_a_flat_key_list():
    text = describe_context(describe(CODEBASE))
    assert "billing/ (3 files)" in text
    assert "Keys:" not in text


RECORDS = "\n".join(
    f"Date: Jan {d:02d}, 2024 || User: {10_000 + d} || Instance: What is item {d}? "
    f"|| Label: {('red', 'blue', 'green')[d % 3]}"
    for d in range(1, 29)
)


def test_a_repeating_record_format_is_described_field_by_field():
    assert line_format(RECORDS) == (
        "One record per line, like: Date: <date, e.g. Jan 01, 2024> || User: <number> || "
        "Instance: <text> || Label: <one of: blue, green, red>"
    )
    text = describe_context(describe(RECORDS))
    assert "One record per line" in text and text.index("One record") < text.index("It begins")


def test_unnamed_fields_are_described_by_their_kind():
    text = "\n".join(f"2024-01-{d:02d}\t{d * 3}\tnote number {d}" for d in range(1, 20))
    assert (
        line_format(text) == "One record per line, like: <date, e.g. 2024-01-01>\t<number>\t<text>"
    )


def test_prose_in_paragraphs_is_described_as_blocks():
    text = "\n\n".join(f"Paragraph {i} says something.\nAnd goes on." for i in range(10))
    assert line_format(text) == "Blocks of lines separated by blank lines (about 10 blocks)."
    assert line_format("just one line") == ""


def test_list_items_are_described_by_their_length_and_first_lines():
    docs = [f"Title {i}\nBody of {i}." for i in range(5)]
    assert item_format(docs) == (
        "Items are usually 2 lines long; the first ones begin: 'Title 0'; 'Title 1'; 'Title 2'."
    )


def test_records_gives_named_fields_and_counts_what_it_skipped():
    rows = records(RECORDS + "\na line that is no record")
    assert rows.fields == ["Date", "User", "Instance", "Label"]
    assert len(rows) == 28 and rows.skipped == 1
    assert rows[0] == {
        "Date": "Jan 01, 2024",
        "User": "10001",
        "Instance": "What is item 1?",
        "Label": "blue",
    }
    assert "28 records with fields" in repr(rows)


def test_records_names_unnamed_fields_by_position_and_takes_a_separator():
    rows = records("a,1\nb,2\nc,3", separator=",")
    assert rows == [{"field1": "a", "field2": "1"}, {"field1": "b", "field2": "2"},
                    {"field1": "c", "field2": "3"}]  # fmt: skip
    with pytest.raises(ValueError, match="no separator"):
        records("plain\ntext\nlines")
    with pytest.raises(TypeError, match="takes a str"):
        records(42)


@pytest.mark.parametrize(
    "text",
    ["Mar 04, 2023", "2023-03-04", "4 March 2023", "March 4th, 2023", "03/04/2023",
     "Date: Mar 04, 2023", "2023-03-04T10:00:00"],
)  # fmt: skip
def test_parse_date_reads_the_usual_forms(text):
    assert parse_date(text) == dt.date(2023, 3, 4)


def test_parse_date_says_what_it_cannot_read():
    with pytest.raises(ValueError, match="cannot read 'soon'"):
        parse_date("soon")


def test_a_field_the_records_lack_is_named_with_the_fields_they_have():
    rows = records(RECORDS)
    with pytest.raises(KeyError, match=r"their fields are \['Date', 'User', 'Instance', 'Label'\]"):
        rows[0]["Topic"]
    assert rows[0].get("Topic") is None
