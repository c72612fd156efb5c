"""Turning user input into the REPL's `context` value, and describing it to the model.

A context is one text (str), many texts (list of str) or named texts (dict of str -> str).
From the command line it can also come from files, folders (a dict of relative path ->
text, binary files skipped and listed) and stdin. The root model never sees the context:
it sees `ContextInfo`, a description (type, sizes, a short preview), which is also the
only trace of the context in the trace file.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import mmap
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from deeprlm.errors import InputError
from deeprlm.repl.base import ContextValue
from deeprlm.shape import folder_tree, item_format, line_format

PREVIEW_CHARS = 300
# Folders that hold tooling state, never the text a user means to ask about.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules"})


@dataclass(frozen=True)
class ContextInfo:
    kind: str  # str | list | dict
    chars: int
    items: int
    item_chars: tuple[int, int, int] = (0, 0, 0)  # min, median, max
    keys: tuple[str, ...] = ()  # the first few names of a dict context
    preview: str = ""
    sha256: str = ""
    skipped: tuple[str, ...] = field(default=())  # files left out of a folder (binary)
    # The shape of the data (see `deeprlm.shape`): a dict's folder tree, the format of a
    # text's lines, how a list's items look. Empty when nothing regular shows.
    structure: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(value: Any) -> ContextValue:
    """Checks a context given through the API. Raises InputError on a wrong type or empty."""
    if isinstance(value, str):
        result: ContextValue = value
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        result = list(value)
    elif isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        result = value
    else:
        raise InputError(
            "the context must be a str, a list of str or a dict of str -> str, "
            f"not {_describe_type(value)}"
        )
    if not any(_texts(result)):
        raise InputError("the context is empty")
    return result


def _describe_type(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        inner = value.values() if isinstance(value, dict) else value
        odd = next((v for v in inner if not isinstance(v, str)), None)
        if odd is not None:
            return f"a {type(value).__name__} holding {type(odd).__name__}"
    return type(value).__name__


def _texts(value: ContextValue) -> Iterable[str]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, dict):
        return value.values()
    return value


def as_text(value: ContextValue) -> str:
    """The context as one text, for a prompt that must hold all of it: a dict's texts under
    a `### name` heading each, a list's texts one after the other."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n\n".join(f"### {name}\n{text}" for name, text in value.items())
    return "\n\n".join(value)


def describe(value: ContextValue, skipped: Sequence[str] = ()) -> ContextInfo:
    texts = list(_texts(value))
    sizes = [len(t) for t in texts]
    digest = hashlib.sha256()
    for text in texts:
        # A slice at a time: encoding a whole large context would copy it once more.
        for start in range(0, len(text), CHUNK):
            digest.update(text[start : start + CHUNK].encode("utf-8", "surrogatepass"))
    if isinstance(value, str):
        preview = value[:PREVIEW_CHARS]
    elif isinstance(value, dict):
        first = next(iter(value.items()), ("", ""))
        preview = f"{first[0]}: {first[1][:PREVIEW_CHARS]}"
    else:
        preview = texts[0][:PREVIEW_CHARS] if texts else ""
    if isinstance(value, str):
        structure = line_format(value)
    elif isinstance(value, dict):
        structure = folder_tree(value)
    else:
        structure = item_format(value)
    return ContextInfo(
        kind="str" if isinstance(value, str) else type(value).__name__,
        chars=sum(sizes),
        items=len(texts),
        item_chars=(min(sizes), int(statistics.median(sizes)), max(sizes)) if sizes else (0, 0, 0),
        keys=tuple(list(value)[:30]) if isinstance(value, dict) else (),
        preview=preview,
        sha256=digest.hexdigest(),
        skipped=tuple(skipped),
        structure=structure,
    )


# --- reading files, folders and stdin -----------------------------------------------------
#
# A file is judged as it streams, chunk by chunk, and reading stops at the first sign of
# binary data (a NUL byte in what would be UTF-8 or a one-byte encoding), so a huge binary
# file costs one chunk. Its encoding is decided by a clear rule: a byte order mark names it
# (UTF-8, UTF-16, UTF-32); ASCII-range text with a NUL in every other byte is UTF-16 without
# one; valid UTF-8 is UTF-8 (a few bad bytes among valid multi-byte characters are replaced);
# anything else without control bytes is a one-byte legacy encoding: Windows-1252 if it
# uses the bytes where that differs from Latin-1 (curly quotes, dashes, the euro sign),
# Latin-1 otherwise. A regular file is then decoded in one step from a memory map, so
# loading it costs about one copy of its text.

CHUNK = 1 << 20
_BOMS = (  # longest first: the UTF-32 LE mark begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ASCII = bytes(range(128))
# Control bytes text does not hold (tab, newlines, form feed and escape are allowed).
_CONTROL = bytes([*range(0, 9), 11, *range(14, 27), *range(28, 32)])
# Where Windows-1252 differs from Latin-1 (0x80-0x9F), and the bytes it leaves undefined.
_C1 = bytes(range(0x80, 0xA0))
_CP1252_HOLES = bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D])
# A legacy-encoded file with more control bytes than this share is binary data.
CONTROL_SHARE = 0.01
ENCODING_NAMES = {"cp1252": "Windows-1252", "latin-1": "Latin-1"}


@dataclass(frozen=True)
class Verdict:
    """How to decode a file, once all of it has been seen."""

    encoding: str  # a Python codec name
    skip: int = 0  # bytes of byte order mark
    errors: str = "strict"  # "replace" for UTF-8 with a few bad bytes

    @property
    def note(self) -> str | None:
        """What a user should hear about it; None for plain UTF-8."""
        if self.encoding == "utf-8":
            return "has bytes that are not UTF-8; they were replaced" if self.replaced else None
        name = ENCODING_NAMES.get(self.encoding, self.encoding.upper())
        return f"is not UTF-8; read as {name}"

    @property
    def replaced(self) -> bool:
        return self.errors == "replace"


class _Judge:
    """Looks at a file's bytes as they stream by and decides how to read them, or that they
    are binary. `feed` returns False as soon as the data is known to be binary."""

    def __init__(self, head: bytes) -> None:
        self.skip = 0
        self.encoding = "utf-8"
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                self.encoding, self.skip = encoding, len(bom)
                break
        else:
            self.encoding = _utf16_without_bom(head) or "utf-8"
        # UTF-8 is read forgivingly here: how many bytes fail decides the verdict.
        errors = "replace" if self.encoding == "utf-8" else "strict"
        self._decoder = codecs.getincrementaldecoder(self.encoding)(errors=errors)
        self.first = True
        self.size = self.ascii = self.chars = self.bad = self.controls = 0
        self.c1 = self.holes = 0

    def feed(self, chunk: bytes | memoryview, final: bool = False) -> bool:
        data = bytes(chunk)
        if self.first:
            data, self.first = data[self.skip :], False
        self.size += len(data)
        if self.encoding != "utf-8":
            try:
                return "\0" not in self._decoder.decode(data, final)
            except UnicodeDecodeError:
                return False
        if b"\0" in data:
            return False
        self.controls += len(data) - len(data.translate(None, _CONTROL))
        if data.isascii() and not self._decoder.getstate()[0]:
            # Most text: nothing to decode, no legacy bytes to count.
            self.ascii += len(data)
            self.chars += len(data)
            return True
        text = self._decoder.decode(data, final)
        self.ascii += len(data) - len(data.translate(None, _ASCII))
        self.chars += len(text)
        self.bad += text.count("\ufffd")
        self.c1 += len(data) - len(data.translate(None, _C1))
        self.holes += len(data) - len(data.translate(None, _CP1252_HOLES))
        return True

    def verdict(self) -> Verdict | None:
        """How to decode the whole file; None when it is binary."""
        if self.encoding != "utf-8" or self.bad == 0:
            return Verdict(self.encoding, self.skip)
        if self.controls > self.size * CONTROL_SHARE:
            return None
        multibyte = self.chars - self.ascii - self.bad  # characters UTF-8 read correctly
        if multibyte >= self.bad:
            return Verdict("utf-8", self.skip, "replace")
        # Latin-1 also when it reads the same: its decoder is the fast, one-copy one.
        return Verdict("cp1252" if self.c1 and not self.holes else "latin-1")


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 without a byte order mark: mostly ASCII-range text has a NUL in every other
    byte, on the odd bytes (little-endian) or the even ones (big-endian)."""
    sample = head[:4096]
    pairs = len(sample) // 2
    if pairs < 8:
        return None
    even, odd = sample[0 : pairs * 2 : 2].count(0), sample[1 : pairs * 2 : 2].count(0)
    if odd >= pairs * 0.9 and even <= pairs * 0.1:
        return "utf-16-le"
    if even >= pairs * 0.9 and odd <= pairs * 0.1:
        return "utf-16-be"
    return None


def read_text(path: Path, notes: list[str] | None = None) -> str | None:
    """The file's text, or None when it is binary. Raises InputError when it cannot be read.
    A note on its encoding is appended to `notes` when it is not plain UTF-8."""
    if path.exists() and not path.is_file():
        # A pipe or a device would block or never end; a folder is handled by the caller.
        raise InputError(f"not a regular file: {path}")
    try:
        with open(path, "rb") as f:
            verdict, text = _read_mapped(f)
    except FileNotFoundError:
        raise InputError(f"context file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"not a file: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if verdict is not None and verdict.note and notes is not None:
        notes.append(f"{path} {verdict.note}")
    return text


def _read_mapped(f: IO[bytes]) -> tuple[Verdict | None, str | None]:
    try:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):  # empty, or a file system that cannot map it
        return _read_stream(f)
    with mapped, memoryview(mapped) as view:
        judge = _Judge(bytes(view[:CHUNK]))
        for start in range(0, len(view), CHUNK):
            end = start + CHUNK
            if not judge.feed(view[start:end], final=end >= len(view)):
                return None, None
        verdict = judge.verdict()
        if verdict is None:
            return None, None
        with view[verdict.skip :] as body:
            return verdict, str(body, verdict.encoding, verdict.errors)


def _read_stream(f: IO[bytes]) -> tuple[Verdict | None, str | None]:
    """Like `_read_mapped`, for what cannot be mapped (stdin, an empty file)."""
    data = bytearray()
    judge: _Judge | None = None
    while True:
        chunk = f.read(CHUNK)
        if judge is None:
            judge = _Judge(chunk)
        if not judge.feed(chunk, final=not chunk):
            return None, None
        if not chunk:
            break
        data += chunk
    verdict = judge.verdict()
    if verdict is None:
        return None, None
    text = str(memoryview(data)[verdict.skip :], verdict.encoding, verdict.errors)
    return verdict, text


def decode_text(data: bytes) -> str | None:
    """Bytes (an uploaded file, an archive's member) as text, judged as a file is; None when
    they are binary."""
    return _read_stream(io.BytesIO(data))[1]


class _Limits:
    """What `load_paths` may read: only files inside `within` (after following links), and
    at most `max_bytes` in all."""

    def __init__(self, within: Sequence[str] | None, max_bytes: int | None) -> None:
        self.roots = None if within is None else [os.path.realpath(r) for r in within]
        self.max_bytes = max_bytes
        self.read = 0

    def allows(self, path: Path) -> bool:
        if self.roots is None:
            return True
        real = os.path.realpath(path)
        return any(
            real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots
        )

    def count(self, path: Path) -> None:
        if self.max_bytes is None:
            return
        try:
            self.read += path.stat().st_size
        except OSError:
            return  # reading it says what is wrong
        if self.read > self.max_bytes:
            raise InputError(
                f"the context is over {self.max_bytes / 1e6:g} MB at {path}; "
                "load a smaller folder or fewer files"
            )


def _read_folder(
    folder: Path, prefix: str, notes: list[str] | None, limits: _Limits
) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    skipped: list[str] = []
    for root, dirs, files in os.walk(folder, onerror=_raise_walk_error):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            key = prefix + path.relative_to(folder).as_posix()
            if not path.is_file():
                continue
            if not limits.allows(path):
                skipped.append(key)  # a link out of the allowed roots
                continue
            limits.count(path)
            text = read_text(path, notes)
            if text is None:
                skipped.append(key)
            else:
                texts[key] = text
    return texts, skipped


def _read_stdin(stream: IO[Any], notes: list[str] | None) -> str:
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text stream (in tests, or a caller's StringIO)
        return stream.read()
    verdict, text = _read_stream(buffer)
    if text is None or verdict is None:
        raise InputError("stdin holds binary data, not text")
    if verdict.note and notes is not None:
        notes.append(f"stdin {verdict.note}")
    return text


def _raise_walk_error(err: OSError) -> None:
    raise InputError(f"cannot read {err.filename}: {err.strerror or err}")


def load_paths(
    paths: Sequence[str],
    stdin: IO[Any] | None = None,
    *,
    notes: list[str] | None = None,
    within: Sequence[str] | None = None,
    max_bytes: int | None = None,
) -> tuple[ContextValue, list[str]]:
    """Reads `--context` arguments. One file gives a str, one folder a dict of its text
    files, several paths a dict keyed by path; '-' reads stdin. Returns (context, skipped
    files: binary, or links out of `within`). Raises InputError for anything missing,
    unreadable, binary or empty, for a path outside `within` (None allows any), and past
    `max_bytes` read in all. Files that are not UTF-8 are decoded (see above) and named in
    `notes`."""
    if not paths:
        raise InputError("no context given: pass --context PATH (a file, a folder, or - for stdin)")
    limits = _Limits(within, max_bytes)
    parts: dict[str, str] = {}
    skipped: list[str] = []
    for raw in paths:
        if raw == "-":
            parts["<stdin>"] = _read_stdin(stdin or sys.stdin, notes)
            continue
        path = Path(raw)
        if not limits.allows(path):
            raise InputError(f"{raw} is outside the allowed folders")
        if path.is_dir():
            prefix = "" if len(paths) == 1 else f"{raw.rstrip('/')}/"
            texts, binary = _read_folder(path, prefix, notes, limits)
            parts.update(texts)
            skipped += binary
            continue
        limits.count(path)
        text = read_text(path, notes)
        if text is None:
            raise InputError(f"{raw} is a binary file, not text")
        parts[raw] = text
    if not parts:
        what = "only binary files" if skipped else "no files"
        raise InputError(f"the context is empty: {', '.join(paths)} holds {what}")
    if len(paths) == 1 and not Path(paths[0]).is_dir():
        context: ContextValue = next(iter(parts.values()))
    else:
        context = parts
    if not any(_texts(context)):
        raise InputError(f"the context is empty: {', '.join(paths)} holds no text")
    return context, skipped
