"""Test support for `deeprlm batch`: a scripted model served by the fake chat server, and
questions files.

Every question asks how often a word occurs in its context, and names its id:
`How many times does 'apple' occur? [id=q7]`. The root's first turn counts the word with
code and asks a sub-call to double the count (`llm_batch` of several prompts when asked);
its second turn answers `apple=N doubled=2N` (or, for an id that starts with `typed`, the
JSON `{"word": "apple", "n": N, "doubled": 2N}`). So each answer follows from the question's
own context, whichever process or machine ran it, and each request the server sees names
the question it belongs to.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fake_server import FakeReply

QUERY = re.compile(r"Query: How many times does '(\w+)' occur\? \[id=([\w.-]+)\]")
DOUBLE = re.compile(r"double (\d+) for ([\w.-]+)(?: part \d+)?(?: pid=(\d+))?")
ANSWER = re.compile(r"ANSWER (\d+) (\d+)")


def query(word: str, qid: str) -> str:
    return f"How many times does '{word}' occur? [id={qid}]"


def expected(word: str, context: Any) -> str:
    texts = (
        [context]
        if isinstance(context, str)
        else list(context.values() if isinstance(context, dict) else context)
    )
    n = sum(text.count(word) for text in texts)
    return f"{word}={n} doubled={2 * n}"


def question_of(body: dict[str, Any]) -> str | None:
    """The id of the question a request belongs to."""
    text = json.dumps(body.get("messages", []))
    match = re.search(r"\[id=([\w.-]+)\]|double \d+ for ([\w.-]+)", text)
    return (match.group(1) or match.group(2)) if match else None


class Script:
    """The responder: root turns and sub-calls as the module's docstring says.

    `batch` sub-calls per question (1: one llm_query); `root_delay` / `sub_delay` seconds per
    reply; `cost` USD per reply; `kill`: question id -> how many of its attempts to kill, by
    SIGKILL of the process that sent the sub-call (its pid travels in the prompt)."""

    def __init__(
        self,
        *,
        batch: int = 1,
        root_delay: float = 0.0,
        sub_delay: float = 0.0,
        cost: float | None = None,
        kill: dict[str, int] | None = None,
    ) -> None:
        self.batch = batch
        self.root_delay = root_delay
        self.sub_delay = sub_delay
        self.cost = cost
        self.kill = dict(kill or {})
        self.killed: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        messages = body["messages"]
        if len(messages) == 1:
            return self._sub(messages[0]["content"])
        word, qid = QUERY.search(messages[1]["content"]).groups()
        if len(messages) == 2:
            return self._reply(self._code(word, qid), self.root_delay)
        found = ANSWER.search(messages[-1]["content"])
        if found is None:
            return self._reply(f"FINAL(no answer: {messages[-1]['content'][:200]})", 0)
        n, doubled = found.groups()
        if qid.startswith("typed"):
            # A question that asks for a typed answer (by its id) gets it as JSON.
            return self._reply(f'FINAL({{"word": "{word}", "n": {n}, "doubled": {doubled}}})', 0)
        return self._reply(f"FINAL({word}={n} doubled={doubled})", 0)

    def _code(self, word: str, qid: str) -> str:
        pid = " pid={os.getpid()}" if qid in self.kill else ""
        if self.batch == 1:
            ask = f"r = llm_query(f'double {{n}} for {qid}{pid}')"
        else:
            ask = (
                f"r = llm_batch([f'double {{n}} for {qid} part {{i}}{pid}' "
                f"for i in range({self.batch})])[0]"
            )
        code = (
            "import os\n"
            "texts = [context] if isinstance(context, str) else list(\n"
            "    context.values() if isinstance(context, dict) else context)\n"
            f"n = sum(t.count({word!r}) for t in texts)\n"
            f"{ask}\n"
            "print(f'ANSWER {n} {r}')"
        )
        return f"Counting.\n```repl\n{code}\n```"

    def _sub(self, prompt: str) -> FakeReply:
        match = DOUBLE.search(prompt)
        if match is None:
            return self._reply(f"cannot read: {prompt[:100]}", self.sub_delay)
        n, qid, pid = match.groups()
        if pid is not None:
            with self._lock:
                left = self.kill.get(qid, 0)
                if left:
                    self.kill[qid] = left - 1
                    self.killed.append((qid, int(pid)))
            if left:
                os.kill(int(pid), signal.SIGKILL)
        return self._reply(str(2 * int(n)), self.sub_delay)

    def _reply(self, text: str, delay: float) -> FakeReply:
        return FakeReply(text=text, delay_s=delay, cost_usd=self.cost)


def write_questions(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_results(out: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def mixed_batch(folder: Path, count: int) -> tuple[Path, dict[str, str], dict[str, tuple[str]]]:
    """`count` questions over the three kinds of context: a shared one, files (several
    questions per file) and inline texts. Returns the questions file, the expected answer
    of each id and the --shared contexts."""
    words = ["apple", "pear", "plum", "fig"]
    corpus = folder / "corpus.txt"
    corpus.write_text(" ".join(words[i % 4] * (1 + i % 3) for i in range(4_000)) + "\n")
    files = []
    for k in range(4):
        docs = folder / f"docs{k}"
        docs.mkdir(exist_ok=True)
        (docs / "a.txt").write_text(f"apple pear {'fig ' * k}\n")
        (docs / "b.txt").write_text(f"plum {'apple ' * (k + 1)}\n")
        files.append(docs)
    rows, answers = [], {}
    for i in range(count):
        qid, word = f"q{i}", words[i % 4]
        row: dict[str, Any] = {"id": qid, "query": query(word, qid)}
        if i % 3 == 0:
            row["shared"] = "corpus"
            context: Any = corpus.read_text()
        elif i % 3 == 1:
            row["paths"] = [files[i % 4].name]
            context = {p.name: p.read_text() for p in sorted(files[i % 4].iterdir())}
        else:
            context = [f"{word} " * (i % 5), "nothing here", f"{word}"]
            row["context"] = context
        rows.append(row)
        answers[qid] = expected(word, context)
    path = write_questions(folder / "questions.jsonl", rows)
    return path, answers, {"corpus": (str(corpus),)}
