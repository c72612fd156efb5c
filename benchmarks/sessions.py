"""Sessions: the second and tenth question of a session against a fresh run of each.

The context is 40 MB of log lines (`2025-01-03 10:00:00 service=svc07 level=ERROR ...`).
Each question asks how many errors one service logged. A root that starts from nothing
parses the whole context into a counter in its first turn, and has the sub-model read every
window of it once (64 sub-calls over the whole text, in batches of 32, as an RLM does to
label records it cannot match with code), then answers. In a session, the root of a later
question is told which variables exist (the recap), so it looks the count up in the `index`
the first question left, and answers; no sub-calls. The models are a local
OpenAI-compatible server in a process of its own (root calls take 50 ms, sub-calls 200 ms,
as in overhead.py), reached through the openai SDK.

    .venv/bin/python benchmarks/sessions.py [--mb 40] [--repl inprocess,sandbox]
        [--questions 10]

Rows: the session's first question (what it pays once, like a fresh run), its second and
tenth, and a fresh run of the second and tenth questions. Columns: wall time, model calls,
tokens (input + output, as the server counted them).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The fake chat server is test support (tests/fake_server.py); the server's process finds it
# through this module, which it imports again when started by spawn.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

ROOT_LATENCY_S = 0.050
SUB_LATENCY_S = 0.200
WINDOWS = 64
SERVICES = 20

FRESH_CODE = """```repl
import collections
index = collections.Counter()
for line in context.splitlines():
    parts = line.split(" ", 5)
    index[(parts[2], parts[3])] += 1
n = len(context)
step = -(-n // {windows})
parts = ["Which services in this part look unhealthy?\\n" + context[i:i + step]
         for i in range(0, n, step)]
labels = []
for first in range(0, len(parts), 32):  # the sandbox takes up to 32 MiB per message
    labels += llm_batch(parts[first:first + 32])
print(index[("service={service}", "level=ERROR")])
```"""

REUSE_CODE = """```repl
print(index[("service={service}", "level=ERROR")])
```"""


def question(number: int) -> str:
    return f"How many ERROR lines did svc{number % SERVICES:02d} log?"


def root_reply(first: str, last: str) -> str:
    """The root: on its first turn, work from nothing, or reuse the `index` the recap
    names; on its second, answer with what the code printed."""
    if last.startswith("Query:"):
        service = re.search(r"did (svc\d+) log", first).group(1)  # type: ignore[union-attr]
        reuse = "Variables in the REPL:" in first and "index (Counter)" in first
        code = REUSE_CODE if reuse else FRESH_CODE
        return code.format(windows=WINDOWS, service=service)
    printed = re.search(r"Output:\n(\S+)", last)
    return f"FINAL({printed.group(1) if printed else 'unknown'})"


def responder(body: dict[str, Any]) -> Any:
    from fake_server import FakeReply, last_user_text

    if body["model"] == "sub":
        return FakeReply(text="none look unhealthy", delay_s=SUB_LATENCY_S)
    first = str(body["messages"][1]["content"])
    return FakeReply(text=root_reply(first, last_user_text(body)), delay_s=ROOT_LATENCY_S)


def serve(url_queue: multiprocessing.Queue) -> None:
    from fake_server import FakeChatServer

    server = FakeChatServer(responder, record=False).start()
    url_queue.put(server.url)
    while True:
        time.sleep(3600)


def make_context(megabytes: float, seed: int = 11) -> str:
    rng = random.Random(seed)
    levels = ("INFO", "INFO", "INFO", "WARN", "ERROR")
    lines = []
    size = 0
    target = int(megabytes * 1_000_000)
    while size < target:
        line = (
            f"2025-01-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
            f":00 service=svc{rng.randrange(SERVICES):02d} level={rng.choice(levels)} "
            f"user=u{rng.randrange(10_000):04d} took={rng.randrange(2_000)}ms\n"
        )
        lines.append(line)
        size += len(line)
    return "".join(lines)


def measure(ask: Any, *args: Any) -> tuple[float, int, int, str]:
    started = time.perf_counter()
    result = ask(*args)
    wall = time.perf_counter() - started
    total = result.usage.total
    return wall, total.calls, total.tokens, result.answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--repl", default="inprocess,sandbox")
    parser.add_argument("--questions", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("DEEPRLM_HOME", tempfile.mkdtemp(prefix="deeprlm-bench-"))

    from deeprlm import RLM

    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(queue,))
    server.start()
    try:
        url = queue.get(timeout=60)
        context = make_context(args.mb)
        later = sorted({2, args.questions})
        rows: list[tuple[str, int, str, float, int, int]] = []
        for kind in args.repl.split(","):
            rlm = RLM(
                "openai/root",
                "openai/sub",
                base_url=url,
                api_key="unused",
                repl=kind,
                max_concurrency=WINDOWS,
            )
            answers: dict[int, str] = {}
            with rlm.session(context) as session:
                for number in range(1, args.questions + 1):
                    wall, calls, tokens, answer = measure(session.ask, question(number))
                    answers[number] = answer
                    assert answer.isdigit(), (kind, number, answer)
                    if number == 1 or number in later:
                        rows.append((kind, number, "session", wall, calls, tokens))
            for number in later:
                wall, calls, tokens, answer = measure(rlm.run, question(number), context)
                assert answer == answers[number], (answer, answers[number])
                rows.append((kind, number, "fresh run", wall, calls, tokens))
    finally:
        server.terminate()
        server.join()

    print(
        f"\nSessions: {args.mb:g} MB context, root {ROOT_LATENCY_S * 1000:.0f} ms, sub-calls "
        f"{SUB_LATENCY_S * 1000:.0f} ms, {WINDOWS} sub-calls to read the context once\n"
    )
    print("| REPL | question | how | wall s | model calls | tokens |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    order = {"session": 0, "fresh run": 1}
    for kind, number, how, wall, calls, tokens in sorted(
        rows, key=lambda r: (r[0], r[1], order[r[2]])
    ):
        print(f"| {kind} | {number} | {how} | {wall:.2f} | {calls} | {tokens:,} |")


if __name__ == "__main__":
    main()
