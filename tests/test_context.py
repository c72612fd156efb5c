"""Loading contexts from the API and from paths, and describing them."""

from __future__ import annotations

import codecs
import io
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from deeprlm import InputError, load_paths
from deeprlm.context import describe, normalize

from conftest import deeprlm


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


def test_utf8_text_with_a_few_bad_bytes_is_still_text(tmp_path):
    path = tmp_path / "mostly.txt"
    path.write_bytes("naïve café ".encode() * 20 + b"\xff" + b"plain words " * 50)
    notes: list[str] = []
    context, _ = load_paths([str(path)], notes=notes)
    assert context.startswith("naïve café") and "\ufffdplain" in context
    assert notes == [f"{path} has bytes that are not UTF-8; they were replaced"]


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

    real_open = open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    # Running as root, no file mode keeps the test from reading it; make open() refuse.
    monkeypatch.setattr("builtins.open", refuse)
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


# --- large files are judged as they stream -------------------------------------------------


def test_text_then_nul_bytes_far_past_the_start_is_binary(tmp_path):
    path = tmp_path / "tail.dat"
    with open(path, "wb") as f:
        f.write(b"plain text " * 1000)  # 11 KB of text
        f.truncate(f.tell() + 50_000_000)  # then 50 MB of NULs (sparse)
    with pytest.raises(InputError, match="is a binary file"):
        load_paths([str(path)])


def test_a_huge_sparse_file_is_rejected_without_being_read(tmp_path):
    """2 GB of zeros (sparse, so no disk is spent): judged binary from its first chunk."""
    path = tmp_path / "zeros.img"
    with open(path, "wb") as f:
        f.truncate(2 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="is a binary file"):
            load_paths([str(path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000  # a few chunks, not the file


def test_a_folder_skips_a_file_whose_binary_part_comes_late(tmp_path):
    (tmp_path / "notes.txt").write_text("real notes")
    with open(tmp_path / "dump.log", "wb") as f:
        f.write(b"log line\n" * 2000 + b"\0\0\0\0" + b"more\n")
    context, skipped = load_paths([str(tmp_path)])
    assert context == {"notes.txt": "real notes"} and skipped == ["dump.log"]


# --- text that is not UTF-8 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("café déjà vu – “quoted”\n".encode("cp1252") * 50, "Windows-1252"),
        ("naïve Ärger\n".encode("latin-1") * 50, "Latin-1"),
        ("naïve Ärger\n".encode("latin-1") * 50 + b"\x81", "Latin-1"),
        (codecs.BOM_UTF16_LE + "héllo wörld ✓\n".encode("utf-16-le") * 50, "UTF-16-LE"),
        (codecs.BOM_UTF16_BE + "héllo wörld ✓\n".encode("utf-16-be") * 50, "UTF-16-BE"),
        ("plain words, no mark\n".encode("utf-16-le") * 50, "UTF-16-LE"),
        (codecs.BOM_UTF32_LE + "wide ✓\n".encode("utf-32-le") * 50, "UTF-32-LE"),
    ],
)
def test_legacy_and_utf16_text_is_decoded_and_said(tmp_path, data, encoding):
    path = tmp_path / "old.txt"
    path.write_bytes(data)
    notes: list[str] = []
    context, _ = load_paths([str(path)], notes=notes)
    codec = {"Windows-1252": "cp1252"}.get(encoding, encoding)
    assert context == data.decode(codec.lower()).removeprefix("\ufeff")
    assert "\ufffd" not in context and "\ufeff" not in context
    assert notes == [f"{path} is not UTF-8; read as {encoding}"]


def test_a_utf8_byte_order_mark_is_dropped_silently(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + "héllo".encode())
    notes: list[str] = []
    assert load_paths([str(path)], notes=notes)[0] == "héllo"
    assert notes == []


def test_random_bytes_without_nul_are_still_binary(tmp_path):
    data = bytes(b for b in random.Random(1).randbytes(4000) if b)
    path = tmp_path / "noise.bin"
    path.write_bytes(data)
    with pytest.raises(InputError, match="is a binary file"):
        load_paths([str(path)])


def test_the_cli_says_which_encoding_it_read(tmp_path, chat_server):
    server = chat_server(lambda body: "FINAL(read)")
    path = tmp_path / "old.txt"
    path.write_bytes("café\n".encode("latin-1") * 10)
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(path),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--repl",
        "inprocess",
    )
    assert done.returncode == 0, done.stderr
    assert f"deeprlm: note: {path} is not UTF-8; read as Latin-1" in done.stderr
    assert "café" in server.requests[0]["messages"][1]["content"]


def test_binary_data_on_stdin_is_one_line_bad_input():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprlm",
            "ask",
            "q",
            "-c",
            "-",
            "--model",
            "openai/m",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
        input=b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        capture_output=True,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == "deeprlm: error: stdin holds binary data, not text"
