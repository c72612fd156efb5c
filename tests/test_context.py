"""Loading contexts from the API and from paths, and describing them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deeprlm import InputError, load_paths
from deeprlm.context import describe, normalize


def test_one_file_is_a_str_and_several_are_a_dict(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    context, skipped = load_paths([str(tmp_path / "a.txt")])
    assert context == "alpha" and skipped == []
    context, _ = load_paths([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert context == {str(tmp_path / "a.txt"): "alpha", str(tmp_path / "b.txt"): "beta"}


def test_a_folder_is_a_dict_of_its_text_files_with_binaries_listed(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "README").write_text("hello")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: main")
    context, skipped = load_paths([str(tmp_path)])
    assert context == {"README": "hello", "src/pkg/mod.py": "x = 1\n"}
    assert skipped == ["logo.png"]
    info = describe(context, skipped)
    assert info.kind == "dict" and info.items == 2 and info.skipped == ("logo.png",)


def test_stdin_is_read_with_a_dash():
    context, _ = load_paths(["-"], stdin=io.StringIO("piped text"))
    assert context == "piped text"


def test_latin1_text_with_a_few_bad_bytes_is_still_text(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes(b"caf\xe9 " + b"plain words " * 50)
    context, _ = load_paths([str(path)])
    assert context.startswith("caf\ufffd plain")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.txt", "context file not found"),
        (lambda d: (d / "z.bin").write_bytes(b"\0" * 10) and d / "z.bin", "is a binary file"),
        (lambda d: (d / "e.txt").write_text("") or d / "e.txt", "the context is empty"),
    ],
)
def test_bad_paths_are_one_line_input_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message):
        load_paths([str(path)])


def test_a_permission_error_is_reported_as_cannot_read(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("x")

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(InputError, match=r"cannot read .*secret\.txt: Permission denied"):
        load_paths([str(path)])


def test_description_sizes_hash_and_preview():
    info = describe(["aa", "bbbb", "cccccc"])
    assert (info.kind, info.chars, info.items, info.item_chars) == ("list", 12, 3, (2, 4, 6))
    assert info.preview == "aa"
    assert len(info.sha256) == 64
    assert describe(["aa", "bbbb", "cccccc"]).sha256 == info.sha256
    assert describe("x" * 10_000).preview == "x" * 300


def test_normalize_keeps_valid_values_and_copies_tuples():
    assert normalize(("a", "b")) == ["a", "b"]
    assert normalize({"k": "v"}) == {"k": "v"}
