"""`deeprlm view`: a trace file made into one self-contained HTML page.

The page carries its data (the tree from `deeprlm.trace.tree`, as JSON), its style and its
script inline and asks for nothing over the network; its content security policy forbids
it. The template, CSS and JS live in `viewer_assets/`, beside this module.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import webbrowser
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError
from deeprlm.trace.jsonl import read_jsonl
from deeprlm.trace.tree import TraceTree, build_tree

ASSETS = Path(__file__).parent / "viewer_assets"
# Unreadable lines listed one by one on the page; the rest are counted.
MAX_LINE_PROBLEMS = 20


def read_trace(path: str | Path) -> TraceTree:
    """The viewer's tree for a trace file, with a note for each thing it could not read."""
    try:
        events, bad_lines = read_jsonl(path)
    except OSError as err:
        raise InputError(f"cannot read trace {path}: {err.strerror or err}") from err
    # Nothing to show at all is an error, not an empty page: a wrong file was given.
    if not events:
        if not bad_lines:
            raise InputError(f"the trace {path} is empty")
        raise InputError(f"{path} is not a deeprlm trace: none of its lines is a trace event")
    problems = []
    if bad_lines:
        problems.append(f"{len(bad_lines)} line(s) of the file could not be read")
        problems.extend(bad_lines[:MAX_LINE_PROBLEMS])
        if len(bad_lines) > MAX_LINE_PROBLEMS:
            problems.append(f"… and {len(bad_lines) - MAX_LINE_PROBLEMS} more")
    return build_tree(events, problems)


def render_page(tree: TraceTree, *, source: str = "") -> str:
    """The HTML page for a tree, as one string."""
    data = {"meta": {"source": source}, "tree": tree.to_dict()}
    parts = {
        "title": _html_text(f"deeprlm trace · {source}" if source else "deeprlm trace"),
        "style": (ASSETS / "viewer.css").read_text(encoding="utf-8"),
        "script": (ASSETS / "viewer.js").read_text(encoding="utf-8"),
        "data": _script_json(data),
    }
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    # One pass over the template, so nothing inserted is read again as a placeholder.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], template)


def build_page(trace_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Writes the page for `trace_path` (next to it, as .html, unless `out_path` is given)
    and returns where it went."""
    trace_path = Path(trace_path)
    out = Path(out_path) if out_path is not None else trace_path.with_suffix(".html")
    page = render_page(read_trace(trace_path), source=trace_path.name)
    # errors="replace": a damaged trace may hold lone surrogates, which UTF-8 cannot encode.
    out.write_text(page, encoding="utf-8", errors="replace")
    return out


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no '<' can close it or open a comment."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or infinity from a damaged trace: JSON.parse would refuse them
        text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- command line


def add_view_command(subparsers: Any) -> argparse.ArgumentParser:
    """Adds `view` to a CLI's subparsers; the parser's `handler` default runs it."""
    parser = subparsers.add_parser(
        "view",
        help="make an HTML page from a trace file",
        description="Write one self-contained HTML page showing a trace: the run tree, "
        "each turn, sub-calls, a timeline, usage and the final answer.",
    )
    parser.add_argument("trace", metavar="TRACE.jsonl", help="a trace written with --trace")
    parser.add_argument(
        "-o", "--output", metavar="PAGE.html", help="where to write (default: beside the trace)"
    )
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    parser.set_defaults(handler=run_view)
    return parser


def run_view(args: argparse.Namespace) -> int:
    """Runs `deeprlm view`; a trace it cannot read or a page it cannot write is an InputError."""
    try:
        out = build_page(args.trace, args.output)
    except OSError as err:
        raise InputError(f"cannot write {err.filename}: {err.strerror}") from err
    print(out)
    if args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0
