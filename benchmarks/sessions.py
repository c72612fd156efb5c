"""Sessions, the sub-call cache and resumed runs, measured over a local OpenAI-compatible
server.

    .venv/bin/python benchmarks/sessions.py [--parts sessions,cache] [--mb 40]
        [--repl inprocess,sandbox] [--questions 10] [--examples 6] [--chars 400000]
        [--entries 20000]

Sessions (`--parts sessions`): the second and tenth question of a session against a fresh
run of each. The context is `--mb` MB of log lines (`2025-01-03 10:00:00 service=svc07
level=ERROR ...`). Each question asks how many errors one service logged. A root that
starts from nothing parses the whole context into a counter in its first turn, and has the
sub-model read every window of it once (64 sub-calls over the whole text, in batches of 32,
as an RLM does to label records it cannot match with code), then answers. In a session,
the root of a later question is told which variables exist (the recap), so it looks the
count up in the `index` the first question left, and answers; no sub-calls. The server
runs in a process of its own (root calls take 50 ms, sub-calls 200 ms, as in overhead.py).
Rows: the session's first question (what it pays once, like a fresh run), its second and
tenth, and a fresh run of the second and tenth questions; wall time, model calls, tokens.

The cache (`--parts cache`), three measurements, one table:

- a repeated bench run: `--examples` needle-in-a-haystack questions (the bench's own
  generator), each answered by a root that cuts the text into 16 windows and asks a
  sub-model about each (`llm_batch`); the whole set is run twice over one cache file.
  Hit rate, model calls paid, tokens paid and saved, wall time, per pass.
- lookup overhead per call: what the cache adds to a call, on a file of `--entries`
  replies: the key of a 4,000-character prompt plus the read, for a hit and for a miss
  (the goal is at most 1 ms).
- resume after a kill at 50%: a 10-turn run whose every turn makes a batch of 8 sub-calls
  (root calls 50 ms, sub-calls 200 ms at the server) is run by the CLI, killed with
  SIGKILL when turn 6 starts, and resumed with `deeprlm ask --resume`: how long the replay
  takes to get back to where the run stopped (the resumed run's first call made), the
  time to finish (the command's start-up included) against the whole run's, the calls
  replayed and made, and the calls the server saw twice (those in flight at the kill,
  which had no reply to store).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from deeprlm import RLM
from deeprlm.cache import Cache, RunCache
from deeprlm.lm.base import Completion
from deeprlm.lm.openai_compat import OpenAICompatibleLM
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.trace.events import LMCallEnded
from deeprlm.trace.jsonl import read_jsonl
from deeprlm_bench.tasks.niah import hidden_fact

from fake_server import FakeChatServer, FakeReply, last_user_text

# --- sessions ---------------------------------------------------------------------------

SESSION_ROOT_S = 0.050
SESSION_SUB_S = 0.200
SESSION_WINDOWS = 64
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
        return code.format(windows=SESSION_WINDOWS, service=service)
    printed = re.search(r"Output:\n(\S+)", last)
    return f"FINAL({printed.group(1) if printed else 'unknown'})"


def responder(body: dict[str, Any]) -> Any:
    from fake_server import FakeReply, last_user_text

    if body["model"] == "sub":
        return FakeReply(text="none look unhealthy", delay_s=SESSION_SUB_S)
    first = str(body["messages"][1]["content"])
    return FakeReply(text=root_reply(first, last_user_text(body)), delay_s=SESSION_ROOT_S)


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


def session_questions(megabytes: float, kinds: list[str], questions: int) -> None:
    """Prints the sessions table."""
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(queue,))
    server.start()
    try:
        url = queue.get(timeout=60)
        context = make_context(megabytes)
        later = sorted({2, questions})
        rows: list[tuple[str, int, str, float, int, int]] = []
        for kind in kinds:
            rlm = RLM(
                "openai/root",
                "openai/sub",
                base_url=url,
                api_key="unused",
                repl=kind,
                max_concurrency=SESSION_WINDOWS,
            )
            answers: dict[int, str] = {}
            # Without the cache: the rows compare a REPL kept warm with none (the cache has
            # its own part), and one kind's session would otherwise replay the other's calls.
            with rlm.session(context, cache="off") as session:
                for number in range(1, questions + 1):
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
        f"\nSessions: {megabytes:g} MB context, root {SESSION_ROOT_S * 1000:.0f} ms, sub-calls "
        f"{SESSION_SUB_S * 1000:.0f} ms, {SESSION_WINDOWS} sub-calls to read the context once\n"
    )
    print("| REPL | question | how | wall s | model calls | tokens |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    order = {"session": 0, "fresh run": 1}
    for kind, number, how, wall, calls, tokens in sorted(
        rows, key=lambda r: (r[0], r[1], order[r[2]])
    ):
        print(f"| {kind} | {number} | {how} | {wall:.2f} | {calls} | {tokens:,} |")


# --- the cache and resume ------------------------------------------------------------------

WINDOWS = 16
ROOT_S, SUB_S = 0.050, 0.200
TURNS, KILL_AT, BATCH = 10, 6, 8

SCAN = f"""```repl
step = len(context) // {WINDOWS} + 1
windows = [context[i:i + step] for i in range(0, len(context), step)]
found = [a for a in llm_batch(["Quote the sentence with a number in it, or say NONE.\\n" + w
                               for w in windows]) if a != "NONE"]
print(found)
```"""


def bench_root(body: dict[str, Any]) -> str:
    messages = body["messages"]
    if messages[0]["role"] == "system":
        turn = sum(m["role"] == "assistant" for m in messages)
        return SCAN if turn == 0 else 'FINAL_VAR("found")'
    text = last_user_text(body)
    return next((line for line in text.split(". ") if "magic" in line), "NONE")


def repeated_run(examples: int, chars: int, folder: Path) -> list[list[str]]:
    rows = []
    facts = [hidden_fact(chars, depth=(i + 0.5) / examples, seed=i) for i in range(examples)]
    with FakeChatServer(bench_root) as server:
        lm = OpenAICompatibleLM("bench", base_url=server.url, temperature=0.0)
        cache = Cache(folder / "bench.sqlite")
        for name in ("first run", "second run"):
            before = len(server.requests)
            paid = hits = tokens = saved = 0
            started = time.perf_counter()
            for fact in facts:
                result = RLM(lm, cache=cache, repl="inprocess").run(fact.query, fact.text)
                total = result.usage.total
                paid, hits = paid + total.calls, hits + total.cache_hits
                tokens, saved = tokens + total.tokens, saved + total.saved_tokens
            wall = time.perf_counter() - started
            rows.append(
                [
                    f"bench {name}",
                    f"{hits / (hits + paid):.0%} hits",
                    f"{paid} paid ({len(server.requests) - before} at the server)",
                    f"{tokens:,} tok paid, {saved:,} saved",
                    f"{wall:.2f} s",
                ]
            )
    return rows


def lookup_overhead(entries: int, folder: Path) -> list[list[str]]:
    cache = Cache(folder / "lookup.sqlite")
    cache.open()
    lm = ScriptedLM(["x"], temperature=0.0)
    runner = RunCache(cache)
    prompt = "word " * 800
    reply = Completion(text="a reply " * 50, model="m", input_tokens=1000, output_tokens=100)
    keys = []
    write = cache._write
    assert write is not None
    write.execute("BEGIN")
    for i in range(entries):
        key, _ = runner.key(
            lm,
            [{"role": "user", "content": f"{i} {prompt}"}],
            tools=None,
            max_tokens=None,
            schema=None,
        )
        keys.append(key)
        write.execute(
            "INSERT OR REPLACE INTO replies (key, model, reply, created) VALUES (?, ?, ?, 0)",
            (key, "m", json.dumps({"text": reply.text, "model": "m"})),
        )
    write.execute("COMMIT")

    def timed(offset: int) -> list[float]:
        times = []
        for i in range(2000):
            n = (i * 7919) % entries + offset
            started = time.perf_counter()
            key, _ = runner.key(
                lm,
                [{"role": "user", "content": f"{n} {prompt}"}],
                tools=None,
                max_tokens=None,
                schema=None,
            )
            cache.get(key)
            times.append((time.perf_counter() - started) * 1000)
        return times

    rows = []
    for name, offset in (("hit", 0), ("miss", entries)):
        times = sorted(timed(offset))
        rows.append(
            [
                f"lookup, {name}",
                f"{entries:,} entries",
                f"mean {statistics.fmean(times):.3f} ms",
                f"p99 {times[int(len(times) * 0.99)]:.3f} ms",
                "goal <= 1 ms",
            ]
        )
    return rows


def resume_after_kill(folder: Path) -> list[list[str]]:
    marker = folder / "half"

    def script(body: dict[str, Any]) -> FakeReply | str:
        messages = body["messages"]
        if messages[0]["role"] != "system":
            return FakeReply(text=f"seen {last_user_text(body)[:20]}", delay_s=SUB_S)
        turn = sum(m["role"] == "assistant" for m in messages) + 1
        if turn > TURNS:
            return FakeReply(text='FINAL_VAR("notes")', delay_s=ROOT_S)
        mark = ""
        if turn == KILL_AT:
            mark = f"open({str(marker)!r}, 'a').close()\n"
        code = (
            f"{mark}notes = globals().get('notes', []) + "
            f"llm_batch([f'turn {turn} part {{i}}' for i in range({BATCH})])\nprint(len(notes))"
        )
        return FakeReply(text=f"```repl\n{code}\n```", delay_s=ROOT_S)

    doc = folder / "doc.txt"
    doc.write_text("some context")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    rows = []
    with FakeChatServer(script) as server:
        common = [
            "--model",
            "openai/m",
            "--base-url",
            server.url,
            "--repl",
            "inprocess",
            "--quiet",
            "--json",
            "--max-iterations",
            str(TURNS + 2),
        ]

        def ask(*args: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "deeprlm", "ask", *args, *common],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        started = time.perf_counter()
        full = ask("q", "-c", str(doc), "--cache", str(folder / "full.sqlite"))
        full.communicate(timeout=300)
        whole = time.perf_counter() - started
        full_calls = len(server.requests)
        marker.unlink()  # the whole run passed turn 6 too

        server.requests.clear()
        trace = folder / "run.jsonl"
        killed = ask(
            "q", "-c", str(doc), "--cache", str(folder / "kill.sqlite"), "--trace", str(trace)
        )
        while not marker.exists():
            time.sleep(0.01)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        started = time.perf_counter()
        resumed = ask("--resume", str(trace))
        out, err = resumed.communicate(timeout=300)
        took = time.perf_counter() - started
        assert resumed.returncode == 0, err
        bodies = [json.dumps(b, sort_keys=True) for b in server.requests]
        twice = len(bodies) - len(set(bodies))
        total = json.loads(out)["usage"]["total"]
        events, _ = read_jsonl(folder / "run.resumed.jsonl")
        calls = [e for e in events if isinstance(e, LMCallEnded)]
        replayed_s = next(e.start for e in calls if not e.cache)  # the first call made
        rows.append(
            [
                f"resume after a kill at turn {KILL_AT}/{TURNS}",
                f"back at the kill in {replayed_s:.2f} s; done {took:.2f} s after the "
                f"command started (whole run {whole:.2f} s)",
                f"{total['cache_hits']} calls replayed, {total['calls']} made",
                # A call in flight when the process died had no reply to store.
                f"{twice} in flight at the kill, sent again",
                f"{full_calls} calls in the whole run",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="sessions,cache")
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--repl", default="inprocess,sandbox")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--chars", type=int, default=400_000)
    parser.add_argument("--entries", type=int, default=20_000)
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # A session's questions use the sub-call cache by default: keep it out of the home.
        os.environ.setdefault("DEEPRLM_HOME", str(folder / "home"))
        if "sessions" in parts:
            session_questions(args.mb, args.repl.split(","), args.questions)
        if "cache" not in parts:
            return
        rows = repeated_run(args.examples, args.chars, folder)
        rows += lookup_overhead(args.entries, folder)
        rows += resume_after_kill(folder)
    print()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
