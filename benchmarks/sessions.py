"""The sub-call cache and resumed runs, measured over a local OpenAI-compatible server.

    .venv/bin/python benchmarks/sessions.py [--examples 6] [--chars 400000] [--entries 20000]

Three measurements, one table:

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
import os
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
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--chars", type=int, default=400_000)
    parser.add_argument("--entries", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = repeated_run(args.examples, args.chars, folder)
        rows += lookup_overhead(args.entries, folder)
        rows += resume_after_kill(folder)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
