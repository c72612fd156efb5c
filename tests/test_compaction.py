"""Compaction: a root conversation past its limit has its older turns folded into a digest,
within one long question and across a session's many questions, and the trace keeps them."""

from __future__ import annotations

from collections import Counter

from deeprlm import RLM, ScriptedLM
from deeprlm.textutil import estimate_tokens
from deeprlm.trace.events import CellEnded, Compacted
from deeprlm.trace.tree import build_tree

from conftest import repl

TURNS = 10  # per question: nine that print, then the answer
OUTPUT_CHARS = 2_000


def prompt_tokens(messages) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) for m in messages)


def long_questions_root() -> ScriptedLM:
    """Each question: nine turns that each print OUTPUT_CHARS, then a long answer. The
    turn is counted per question (compaction changes how many replies a prompt shows)."""
    turns: Counter[str] = Counter()

    def reply(messages) -> str:
        query = messages[1]["content"].split("\n", 1)[0].removeprefix("Query: ")
        turns[query] += 1
        turn = turns[query]
        if turn < TURNS:
            mark = f"{query}-turn{turn}"
            return repl(f"v_{query} = {turn}\nprint({mark!r} + '.' * {OUTPUT_CHARS})")
        return f"FINAL({query} answered: " + "words " * 200 + ")"

    return ScriptedLM(reply, name="root")


def test_a_long_question_is_compacted_and_the_trace_keeps_every_turn():
    root = long_questions_root()
    result = RLM(root, repl="inprocess", compact_tokens=2_500).run("q1", "some context")
    assert result.status == "answered"
    sizes = [prompt_tokens(call) for call in root.calls]
    assert max(sizes) <= 2_500
    # Without compaction the last prompt would hold all nine outputs.
    assert 9 * OUTPUT_CHARS // 4 > 2_500
    openings = [call[1]["content"] for call in root.calls]
    assert all(opening.startswith("Query: q1") for opening in openings)
    compacted_at = next(i for i, o in enumerate(openings) if "earlier turns were compacted" in o)
    assert "Turn 1. You wrote:" in openings[compacted_at] and "q1-turn1" in openings[compacted_at]
    # The digest keeps its newest entries within its own bound; older ones are counted.
    last = root.calls[-1]
    assert "Turn 7. You wrote:" in last[1]["content"]
    assert "older turns not shown" in last[1]["content"]
    # The newest turn is whole; compacted ones are not in the prompt in full.
    assert f"q1-turn9{'.' * OUTPUT_CHARS}" in last[-1]["content"]
    assert f"q1-turn1{'.' * OUTPUT_CHARS}" not in "".join(m["content"] for m in last)
    events = result.trace.events
    compacted = [e for e in events if isinstance(e, Compacted)]
    assert compacted and compacted[0].first_turn == 1
    assert all(e.tokens_after < e.tokens_before for e in compacted)
    cells = [e for e in events if isinstance(e, CellEnded)]
    assert len(cells) == TURNS - 1
    assert all(len(cell.output) > OUTPUT_CHARS for cell in cells)


def test_the_limit_defaults_to_a_share_of_the_models_window():
    root = long_questions_root()
    root.context_window = 4_000  # 60%: 2,400 tokens
    result = RLM(root, repl="inprocess").run("q1", "some context")
    assert max(prompt_tokens(call) for call in root.calls) <= 2_400
    assert any(isinstance(e, Compacted) for e in result.trace.events)
    # A model whose window is unknown is not compacted unless compact_tokens says so.
    root = long_questions_root()
    result = RLM(root, repl="inprocess").run("q1", "some context")
    assert not any(isinstance(e, Compacted) for e in result.trace.events)
    assert max(prompt_tokens(call) for call in root.calls) > 9 * OUTPUT_CHARS // 4


def test_the_root_prompt_stays_bounded_across_30_questions_of_a_session():
    limit = 4_000
    root = long_questions_root()
    rlm = RLM(root, repl="inprocess", compact_tokens=limit)
    first_prompts: list[int] = []
    with rlm.session("a context of some words") as session:
        for number in range(1, 31):
            calls = len(root.calls)
            result = session.ask(f"q{number}")
            assert result.status == "answered", result.error
            first_prompts.append(prompt_tokens(root.calls[calls]))
        assert len(session.variables()) == 30
    sizes = [prompt_tokens(call) for call in root.calls]
    assert len(sizes) == 30 * TURNS
    assert max(sizes) <= limit
    # The recap keeps the first prompt of a question from growing with the session: the
    # thirtieth starts hardly larger than the tenth (a longer list of variables).
    assert first_prompts[29] - first_prompts[9] < 200
    last_opening = root.calls[-TURNS][1]["content"]
    assert "the 2" in last_opening and "oldest not shown" in last_opening
    assert "29. Q: q29" in last_opening and "v_q29 (int)" in last_opening


def test_the_viewer_shows_where_turns_were_compacted():
    root = long_questions_root()
    result = RLM(root, repl="inprocess", compact_tokens=2_500).run("q1", "some context")
    tree = build_tree(result.trace.events)
    assert tree.problems == []
    notes = [n["message"] for n in tree.nodes if n["k"] == "note"]
    assert any(m.startswith("turns 1-") and "compacted in the model's prompt" in m for m in notes)
    # Every turn is still in the tree, compacted or not.
    assert sum(1 for n in tree.nodes if n["k"] == "cell") == TURNS - 1
