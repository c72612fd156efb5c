"""The trace page in a real browser: a scripted run with a batch and a child run, written to
a trace, made into a page and opened in headless Chromium (the system's, driven by
Playwright). Screenshots land in artifacts/viewer/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deeprlm import RLM, ScriptedLM
from deeprlm.trace.viewer import build_page

from conftest import repl

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "viewer"
SUB_SUFFIX = " </script><b>not bold</b>"


def root_policy(messages: list[dict[str, Any]]) -> str:
    turn = len(messages) // 2
    if "Query: count the cats" in messages[1]["content"]:
        if turn == 1:
            return repl("print(llm_query('how many cats in: ' + context))")
        return "FINAL(2 cats)"
    return {
        1: repl("parts = llm_batch([f'summarize part {i}' for i in range(5)])\nprint(parts)"),
        2: repl("r = rlm_query('count the cats', 'cat cat dog')\nprint(r)"),
        3: repl("1 / 0"),
    }.get(turn, "FINAL(there are 2 cats)")


def sub_policy(messages: list[dict[str, Any]]) -> str:
    prompt = messages[-1]["content"]
    if "part 3" in prompt:
        raise RuntimeError("the sub-model fell over")
    # Markup in a reply must come out as text, and must not end the page's data block.
    return "SUMMARY OF " + prompt + SUB_SUFFIX


def scripted_run(trace: Path) -> None:
    """Four root turns: a batch of five sub-calls (one fails), a child run that makes its
    own sub-call, a cell that raises, and the final answer."""
    result = RLM(
        ScriptedLM(root_policy, name="root-model", delay=0.02),
        ScriptedLM(sub_policy, name="sub-model", delay=0.03),
        trace_path=trace,
    ).run("How many cats?", "cat cat dog " * 10)
    assert result.answer == "there are 2 cats"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OpenPage:
    """A page opened from a file, with every request and script error it made recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(10_000)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(self.url)
        self.page.wait_for_selector("html[data-ready='1']")

    def assert_self_contained(self) -> None:
        assert self.requests == [self.url]
        assert self.errors == []

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        self.page.close()


def head(node: Any) -> Any:
    return node.locator(":scope > .head")


def kids(node: Any, kind: str) -> Any:
    return node.locator(f":scope > .body > .children > .node.k-{kind}")


@pytest.fixture(scope="module")
def run_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trace = tmp_path_factory.mktemp("run") / "run.jsonl"
    scripted_run(trace)
    return build_page(trace)


def test_the_run_tree_its_turns_and_a_sub_call(browser, run_page):
    opened = OpenPage(browser, run_page)
    page = opened.page
    roots = page.locator("#tree > .node.k-run")
    assert roots.count() == 1
    root = roots.first
    assert "answered" in head(root).inner_text()
    turns = kids(root, "turn")
    assert turns.count() == 4
    assert [head(turns.nth(i)).locator(".what").inner_text() for i in range(4)] == [
        "Turn 1",
        "Turn 2",
        "Turn 3",
        "Turn 4",
    ]

    # Turn 1: the reply and the cell are open, the batch is closed until clicked.
    cell = kids(turns.nth(0), "cell").first
    assert "llm_batch" in cell.locator(".block.code pre").inner_text()
    batch = kids(cell, "batch").first
    assert head(batch).locator(".what").inner_text() == "llm_batch × 5"
    assert "1 error" in head(batch).inner_text()
    assert batch.locator(".node.k-lm").count() == 0
    head(batch).click()
    subs = kids(batch, "lm")
    assert subs.count() == 5
    first = subs.nth(0)
    assert first.locator(".block").count() == 0  # a sub-call opens only when asked
    head(first).click()
    assert first.locator(".block").first.locator("pre").inner_text() == "summarize part 0"
    reply = first.locator(".block.sub-reply pre").inner_text()
    assert reply == "SUMMARY OF summarize part 0" + SUB_SUFFIX
    assert page.locator("b", has_text="not bold").count() == 0
    failed = subs.nth(3)
    assert "has-error" in failed.get_attribute("class")
    assert "the sub-model fell over" in head(failed).inner_text()

    # Turn 2: the child run hangs from the cell that started it, with its own turns.
    child = kids(kids(turns.nth(1), "cell").first, "run")
    assert child.count() == 1
    assert "count the cats" in head(child).inner_text()
    head(child).click()
    assert kids(child, "turn").count() == 2

    # Turn 3: the failing cell is marked and shows its traceback.
    broken = kids(turns.nth(2), "cell").first
    assert "has-error" in broken.get_attribute("class")
    assert "ZeroDivisionError" in broken.locator(".block.error pre").inner_text()

    outcome = page.locator("#outcome").inner_text()
    assert "answered" in outcome and "there are 2 cats" in outcome
    usage = page.locator("#usage tr").all_inner_texts()
    assert any(row.startswith("root-model\t6\t") for row in usage)
    assert any(row.startswith("sub-model\t6\t") for row in usage)
    assert page.locator("#errors .hit").count() == 2
    opened.assert_self_contained()
    opened.screenshot("scripted-run.png")


def test_timeline_shows_each_call_and_finds_it_in_the_tree(browser, run_page):
    opened = OpenPage(browser, run_page)
    page = opened.page
    viewer = "window.deeprlmViewer"
    labels = page.evaluate(f"{viewer}.lanes.map(l => l.label)")
    # Root's own turns, lanes for its parallel sub-calls, then the child run and its call.
    assert labels[0] == "run · root-model"
    assert labels.index("child run · root-model") > 1
    bars = page.evaluate(f"{viewer}.lanes.reduce((n, l) => n + l.bars.length, 0)")
    assert bars == 12 + 4  # every model call (12) and every cell (3 + 1)
    sub_lanes = page.evaluate(f"{viewer}.lanes.filter(l => l.sub).length")
    assert sub_lanes >= 3  # five overlapping sub-calls need more than one lane

    # Hover a sub-call's bar for its tooltip, click it to open it in the tree.
    index = page.evaluate(
        f"{viewer}.nodes.findIndex(n => n.k === 'lm' && n.purpose === 'sub' && n.error)"
    )
    box = page.evaluate(f"{viewer}.barBox({index})")
    canvas = page.locator("#timeline-canvas").bounding_box()
    x, y = canvas["x"] + box["x"] + box["w"] / 2, canvas["y"] + box["y"] + box["h"] / 2
    page.mouse.move(x, y)
    assert "Sub-call" in page.locator("#tip").inner_text()
    page.mouse.click(x, y)
    node = page.locator(f".node[data-i='{index}']")
    assert node.is_visible()
    assert "the sub-model fell over" in node.locator(".block.error pre").inner_text()
    opened.assert_self_contained()
    opened.screenshot("timeline.png")


def test_search_lists_matches_and_opens_them(browser, run_page):
    opened = OpenPage(browser, run_page)
    page = opened.page
    page.fill("#search-input", "how many cats in")
    page.press("#search-input", "Enter")
    hits = page.locator("#search-results .hit")
    # The child's code, its sub-call's prompt and reply, and the cell output that printed it.
    assert hits.count() >= 3
    hits.filter(has_text="Sub-call").first.click()
    opened_reply = page.locator(".node.k-lm.purpose-sub .block.sub-reply pre").first
    assert opened_reply.inner_text().startswith("SUMMARY OF how many cats in: cat cat dog")
    opened.assert_self_contained()
    opened.page.close()


def test_a_truncated_trace_still_shows_what_it_holds(browser, tmp_path):
    trace = tmp_path / "run.jsonl"
    scripted_run(trace)
    lines = trace.read_bytes().splitlines(keepends=True)
    child_start = next(i for i, line in enumerate(lines) if b'"depth": 1' in line)
    # Keep up to the child's first cell, then half a line, as a crash mid-write leaves it.
    cut = b"".join(lines[: child_start + 3]) + lines[child_start + 3][:40]
    trace.write_bytes(cut)
    opened = OpenPage(browser, build_page(trace))
    page = opened.page

    problems = page.locator("#problems")
    assert problems.is_visible()
    text = problems.inner_text()
    assert "1 line(s) of the file could not be read" in text
    assert "run started but never ended" in text
    assert "did not end in this trace" in page.locator("#outcome").inner_text()

    root = page.locator("#tree > .node.k-run").first
    assert "open-ended" in root.get_attribute("class")
    turns = kids(root, "turn")
    assert turns.count() == 2
    batch = kids(kids(turns.nth(0), "cell").first, "batch").first
    head(batch).click()
    assert kids(batch, "lm").count() == 5
    child = kids(kids(turns.nth(1), "cell").first, "run")
    assert "open-ended" in child.get_attribute("class")
    opened.assert_self_contained()
    opened.screenshot("truncated.png")


def test_a_page_with_thousands_of_sub_calls_draws_them_in_pages(browser, tmp_path):
    trace = tmp_path / "big.jsonl"
    events = [
        {"type": "run_started", "t": 0, "id": "r", "run_id": "r", "parent_id": None},
        {"type": "lm_call_started", "t": 0.1, "id": "l", "run_id": "r", "parent_id": "r"},
        {"type": "lm_call_ended", "t": 0.2, "id": "l", "run_id": "r", "parent_id": "r"},
        {"type": "cell_started", "t": 0.3, "id": "c", "run_id": "r", "parent_id": "r"},
        {
            "type": "batch_started",
            "t": 0.4,
            "id": "b",
            "run_id": "r",
            "parent_id": "c",
            "size": 3000,
        },
    ]
    for i in range(3000):
        common = {"id": f"s{i}", "run_id": "r", "parent_id": "b", "purpose": "sub"}
        events.append({"type": "lm_call_started", "t": 0.5 + i / 1000, **common})
        events.append(
            {
                "type": "lm_call_ended",
                "t": 0.6 + i / 1000,
                "reply": f"reply {i}" + "x" * 5000,
                "input_tokens": 10,
                "output_tokens": 2,
                **common,
            }
        )
    trace.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    opened = OpenPage(browser, build_page(trace))
    page = opened.page
    batch = page.locator(".node.k-batch").first
    head(batch).click()
    assert kids(batch, "lm").count() == 100
    page.locator(".node.k-batch .pager").click()
    assert kids(batch, "lm").count() == 200
    sub = kids(batch, "lm").nth(150)
    head(sub).click()
    reply = sub.locator(".block.sub-reply")
    assert reply.locator("pre").inner_text().startswith("reply 150x")
    assert len(reply.locator("pre").inner_text()) < 2100  # cut, with a button for the rest
    reply.locator("button.more").click()
    assert len(reply.locator("pre").inner_text()) == len("reply 150") + 5000
    # Only what was opened is in the document.
    assert page.locator(".node").count() < 300
    opened.assert_self_contained()
    opened.page.close()


def test_nodes_open_from_the_keyboard(browser, run_page):
    opened = OpenPage(browser, run_page)
    page = opened.page
    batch = page.locator(".node.k-batch").first
    head(batch).focus()
    page.keyboard.press("Enter")
    assert head(batch).get_attribute("aria-expanded") == "true"
    assert kids(batch, "lm").count() == 5
    page.keyboard.press(" ")
    assert head(batch).get_attribute("aria-expanded") == "false"
    assert not kids(batch, "lm").first.is_visible()
    opened.assert_self_contained()
    opened.page.close()


def test_a_packed_classification_shows_its_items_packs_and_calls(browser, tmp_path):
    trace = tmp_path / "map.jsonl"
    questions = ["Who is it?", "Where is it?"] * 13

    def labeller(messages: list[dict[str, Any]]) -> str:
        prompt = messages[-1]["content"]
        numbers = [line.split(".", 1)[0] for line in prompt.splitlines() if line[:1].isdigit()]
        return json.dumps({n: "person" for n in numbers})

    code = f"labels = llm_classify({questions!r} + ['Why?'], ['person', 'place'])\nprint(labels)"
    RLM(
        ScriptedLM([repl(code), "FINAL(done)"], name="root"),
        ScriptedLM(labeller, name="sub-model"),
        trace_path=trace,
    ).run("q", "ctx")
    opened = OpenPage(browser, build_page(trace))
    page = opened.page
    batch = page.locator(".node.k-batch").first
    assert head(batch).locator(".what").inner_text() == "llm_classify × 27 items"
    assert "1 pack of ≤ 3 · 3 distinct" in head(batch).locator(".preview").inner_text()
    head(batch).click()
    details = batch.locator(":scope > .body > .muted").all_inner_texts()
    assert "labels: person · place" in details
    assert any("packs of 3" in d and "1 call made" in d for d in details)
    (call,) = kids(batch, "lm").all()
    head(call).click()
    assert "Who is it?" in call.locator(".block pre").first.inner_text()
    opened.assert_self_contained()
    opened.screenshot("packed-classification.png")


def test_a_followed_chain_shows_its_question_and_one_call_per_link(browser, tmp_path):
    trace = tmp_path / "chain.jsonl"
    halls = [
        "Blue Hall\nThe Blue Hall was designed by the architect Omar Lenz.",
        "Omar Lenz\nOmar Lenz is an architect born in Varsel.",
    ]

    def reader(messages: list[dict[str, Any]]) -> str:
        question = messages[-1]["content"].split("\nQuestion: ", 1)[1]
        return json.dumps({"answer": "Omar Lenz" if "architect of" in question else "Varsel"})

    code = 'print(follow_chain("Where was the architect of the Blue Hall born?"))'
    RLM(
        ScriptedLM([repl(code), "FINAL(Varsel)"], name="root"),
        ScriptedLM(reader, name="sub-model"),
        trace_path=trace,
    ).run("q", halls)
    opened = OpenPage(browser, build_page(trace))
    batch = opened.page.locator(".node.k-batch").first
    assert head(batch).locator(".what").inner_text() == "follow_chain × 2 links"
    assert "architect of the Blue Hall" in head(batch).locator(".preview").inner_text()
    head(batch).click()
    assert kids(batch, "lm").count() == 2
    opened.assert_self_contained()
