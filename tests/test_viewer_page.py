"""The viewer without a browser: the tree a trace folds into, the page's embedded data, the
repairs made to damaged traces, and `deeprlm view`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deeprlm import RLM, ScriptedLM
from deeprlm.cli import main
from deeprlm.trace.events import LMCallEnded
from deeprlm.trace.jsonl import read_jsonl
from deeprlm.trace.tree import build_tree
from deeprlm.trace.viewer import read_trace, render_page

from conftest import repl


def root_policy(messages):
    turn = len(messages) // 2
    if "Query: child" in messages[1]["content"]:
        return repl("FINAL(llm_query('inner'))") if turn == 1 else "FINAL(x)"
    return {
        1: repl("print(llm_batch(['a', 'b', 'c']))"),
        2: repl("print(rlm_query('child', 'ctx'))"),
    }.get(turn, "FINAL(done)")


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    sub = ScriptedLM(lambda m: "reply to " + m[-1]["content"], name="sub")
    RLM(ScriptedLM(root_policy, name="root"), sub, trace_path=path).run("q", "ctx")
    return path


def kinds(tree, indices):
    return [tree.nodes[i]["k"] for i in indices]


def test_turns_cells_batches_and_child_runs_nest(trace):
    events, problems = read_jsonl(trace)
    tree = build_tree(events, problems)
    assert tree.problems == []
    (root,) = [tree.nodes[i] for i in tree.roots]
    assert root["k"] == "run" and root["status"] == "answered" and root["answer"] == "done"
    turns = [tree.nodes[i] for i in root["c"]]
    assert [t["k"] for t in turns] == ["turn"] * 3
    assert [t["n"] for t in turns] == [1, 2, 3]
    assert kinds(tree, turns[0]["c"]) == ["lm", "cell"]
    assert kinds(tree, turns[2]["c"]) == ["lm"]  # FINAL without code: no cell
    cell = tree.nodes[turns[0]["c"][1]]
    (batch,) = [tree.nodes[i] for i in cell["c"]]
    assert batch["k"] == "batch" and batch["size"] == 3
    replies = [tree.nodes[i]["reply"] for i in batch["c"]]
    assert replies == ["reply to a", "reply to b", "reply to c"]
    (child,) = [tree.nodes[i] for i in tree.nodes[turns[1]["c"][1]]["c"]]
    assert child["k"] == "run" and child["depth"] == 1 and child["query"] == "child"
    assert all(n["p"] is not None for n in tree.nodes if n is not root)


def test_totals_add_up_over_the_tree(trace):
    events, _ = read_jsonl(trace)
    tree = build_tree(events)
    calls = [e for e in events if isinstance(e, LMCallEnded)]
    root = tree.nodes[tree.roots[0]]
    assert root["calls"] == len(calls) == 8  # 3 root turns, 3 in the batch, the child's 2
    assert root["tok"] == sum(c.input_tokens + c.output_tokens for c in calls)
    assert tree.usage["sub"]["calls"] == 4
    assert tree.usage["root"]["calls"] == 4
    child = next(n for n in tree.nodes if n["k"] == "run" and n.get("depth") == 1)
    assert child["calls"] == 2  # its one turn and the sub-call in it
    turn = tree.nodes[root["c"][1]]
    assert turn["calls"] == 1 + child["calls"]


def test_a_cut_trace_keeps_what_it_has_and_says_what_is_missing(trace, tmp_path):
    lines = trace.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:8]) + lines[8][:30])
    tree = read_trace(cut)
    assert tree.problems[0] == "1 line(s) of the file could not be read"
    assert tree.problems[1].startswith("line 9:")
    assert any("run started but never ended" in p for p in tree.problems)
    root = tree.nodes[tree.roots[0]]
    assert root["e"] is None and "status" not in root
    assert len([n for n in tree.nodes if n["k"] == "lm"]) >= 2


def test_damaged_events_are_skipped_or_placed_not_fatal(tmp_path):
    rows = [
        {"type": "run_started", "t": 0, "id": "r", "run_id": "r", "parent_id": None},
        "this line is not json",
        {"type": "lm_call_started", "t": "soon", "id": "x", "run_id": "r", "parent_id": "r"},
        {"type": "mystery", "t": 1, "id": "m", "run_id": "r", "parent_id": "r"},
        # An ended call whose start was lost, under a cell that never appears.
        {
            "type": "lm_call_ended",
            "t": 2,
            "id": "s",
            "run_id": "r",
            "parent_id": "gone",
            "purpose": "sub",
            "start": 1.5,
            "reply": "still here",
            "input_tokens": 7,
        },
        {
            "type": "cell_ended",
            "t": 3,
            "id": "c",
            "run_id": "r",
            "parent_id": "r",
            "iteration": 1,
            "duration_s": 0.5,
            "output": "ok",
        },
        {"type": "cell_started", "t": 4, "id": "orphan", "run_id": "nobody", "parent_id": None},
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    tree = read_trace(path)
    text = "\n".join(tree.problems)
    assert "2 line(s) of the file could not be read" in text  # the garbage and the mystery
    assert "lm_call_started event skipped: time is not a number" in text
    assert "lm ended without a recorded start" in text
    assert "event whose parent is missing" in text
    assert "event of a run whose start is missing" in text
    assert "run started but never ended" in text
    run = tree.nodes[0]
    placed = {tree.nodes[i]["k"]: tree.nodes[i] for i in run["c"]}
    # The lost call hangs from its run; the cell's start is rebuilt from its duration.
    lost = next(n for n in tree.nodes if n.get("reply") == "still here")
    assert lost["s"] == 1.5 and lost["e"] == 2
    cell = next(n for n in tree.nodes if n["k"] == "cell" and n.get("output") == "ok")
    assert cell["s"] == 2.5
    assert "turn" in placed
    orphan = next(n for n in tree.nodes if n["k"] == "cell" and n["s"] == 4)
    assert orphan["i"] in tree.roots


def test_page_data_survives_markup_and_stays_inside_its_script(tmp_path):
    hostile = "</script><script>alert(1)</script><!-- \u2028 & <b>"
    rows = [
        {
            "type": "run_started",
            "t": 0,
            "id": "r",
            "run_id": "r",
            "parent_id": None,
            "query": hostile,
        },
        {
            "type": "run_ended",
            "t": 1,
            "id": "r",
            "run_id": "r",
            "parent_id": None,
            "answer": hostile,
            "usage": {"total": {"usd": float("nan")}},
        },
    ]
    path = tmp_path / "t.jsonl"
    # Python's json writes NaN, as a damaged or hand-made trace might hold.
    path.write_text("\n".join(json.dumps(r) for r in rows))
    page = render_page(read_trace(path), source="<t>.jsonl")
    assert page.count("</script>") == 2  # the data block's and the code's own
    assert "<title>deeprlm trace · &lt;t&gt;.jsonl</title>" in page
    data_text = re.search(
        r'<script id="trace-data" type="application/json">(.*?)</script>', page, re.S
    ).group(1)
    assert "<" not in data_text
    data = json.loads(data_text)
    nodes = data["tree"]["nodes"]
    assert nodes[0]["query"] == hostile and nodes[0]["answer"] == hostile
    assert nodes[0]["usage"] == {"total": {"usd": None}}


def test_the_page_refers_to_nothing_outside_itself(trace):
    page = render_page(read_trace(trace))
    assert "default-src 'none'" in page
    assert re.findall(r"(?:src|href)\s*=\s*[\"'](?!data:)", page) == []
    assert re.findall(r"url\(|@import|https?://", page) == []


def test_view_command_writes_the_page(trace, tmp_path, capsys):
    assert main(["view", str(trace)]) == 0
    beside = trace.with_suffix(".html")
    assert capsys.readouterr().out.strip() == str(beside)
    assert beside.read_text().startswith("<!doctype html>")
    out = tmp_path / "elsewhere.html"
    assert main(["view", str(trace), "-o", str(out)]) == 0
    assert out.exists()


def test_view_command_on_a_missing_file_is_bad_input(tmp_path, capsys):
    assert main(["view", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "cannot read trace" in err and err.count("\n") == 1


def test_a_forced_answer_is_its_own_turn_and_the_run_says_forced(tmp_path):
    path = tmp_path / "forced.jsonl"
    root = ScriptedLM([repl("print('still looking')"), "FINAL(best guess)"], name="root")
    result = RLM(root, max_iterations=1, trace_path=path).run("q", "ctx")
    assert result.status == "forced"
    tree = read_trace(path)
    run = tree.nodes[tree.roots[0]]
    assert run["status"] == "forced" and run["answer"] == "best guess"
    turns = [tree.nodes[i] for i in run["c"]]
    assert [t.get("forced", False) for t in turns] == [False, True]
    assert tree.nodes[turns[1]["c"][0]]["purpose"] == "forced"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"\x00\x01\x02garbage\n\xff\xfe", "is not a deeprlm trace")],
    ids=["empty", "binary"],
)
def test_view_command_refuses_a_file_with_no_trace_in_it(tmp_path, capsys, content, message):
    path = tmp_path / "wrong.jsonl"
    path.write_bytes(content)
    assert main(["view", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("deeprlm: error:") and err.count("\n") == 1
    assert not path.with_suffix(".html").exists()
