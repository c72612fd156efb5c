"""Turning user input into the REPL's `context` value, and describing it to the model.

A context is one text (str), many texts (list of str) or named texts (dict of str -> str).
From the command line it can also come from files, folders (a dict of relative path ->
text, binary files skipped and listed) and stdin. The root model never sees the context:
it sees `ContextInfo`, a description (type, sizes, a short preview), which is also the
only trace of the context in the trace file.
"""

from __future__ import annotations

import hashlib
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
BINARY_SNIFF = 8_192


@dataclass(frozen=True)
class ContextInfo:
    kind: str  # str | list | dict
    chars: int
    items: int
    item_chars: tuple[int, int, int] = (0, 0, 0)  # min, median, max
    keys: tuple[str, ...] = ()  # the first few names of a dict context
    preview: str = ""
    sha256: str = ""
    skipped: tuple[str, ...] = field(default=())  # binary files left out of a folder
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
        digest.update(text.encode("utf-8", "surrogatepass"))
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


def _read_text(path: Path) -> str | None:
    """The file's text, or None when it is binary."""
    if path.exists() and not path.is_file():
        # A pipe or a device would block or never end; a folder is handled by the caller.
        raise InputError(f"not a regular file: {path}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"context file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"not a file: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if b"\0" in data[:BINARY_SNIFF]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        # A few bad bytes in a text file are tolerated; mostly undecodable means binary.
        return None if text.count("\ufffd") > len(text) // 100 else text


def _read_folder(folder: Path, prefix: str) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    skipped: list[str] = []
    for root, dirs, files in os.walk(folder, onerror=_raise_walk_error):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            key = prefix + path.relative_to(folder).as_posix()
            if not path.is_file():
                continue
            text = _read_text(path)
            if text is None:
                skipped.append(key)
            else:
                texts[key] = text
    return texts, skipped


def _raise_walk_error(err: OSError) -> None:
    raise InputError(f"cannot read {err.filename}: {err.strerror or err}")


def load_paths(
    paths: Sequence[str], stdin: IO[str] | None = None
) -> tuple[ContextValue, list[str]]:
    """Reads `--context` arguments. One file gives a str, one folder a dict of its text
    files, several paths a dict keyed by path; '-' reads stdin. Returns (context, skipped
    binary files). Raises InputError for anything missing, unreadable, binary or empty."""
    if not paths:
        raise InputError("no context given: pass --context PATH (a file, a folder, or - for stdin)")
    parts: dict[str, str] = {}
    skipped: list[str] = []
    for raw in paths:
        if raw == "-":
            parts["<stdin>"] = (stdin or sys.stdin).read()
            continue
        path = Path(raw)
        if path.is_dir():
            prefix = "" if len(paths) == 1 else f"{raw.rstrip('/')}/"
            texts, binary = _read_folder(path, prefix)
            parts.update(texts)
            skipped += binary
            continue
        text = _read_text(path)
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
