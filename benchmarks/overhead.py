"""Engine overhead over models with fixed latencies.

Root calls take 50 ms and sub-calls 200 ms. The context is 0.4, 4 or 40 MB of text with
one hidden fact; the root's code cuts it into 64 windows, sends them through `llm_batch`,
and returns what comes back. Two transports: `http`, a local OpenAI-compatible server in
its own process reached through the openai SDK (what a user of vLLM or llama.cpp's server
gets), and `direct`, scripted models with the same latencies and no HTTP (the engine
alone). Each case runs in a fresh process, so its peak memory is its own.

    .venv/bin/python benchmarks/overhead.py [--sizes 0.4,4,40] [--concurrency 64]
        [--repeat 3] [--repl inprocess,sandbox] [--transport http,direct]

Columns: wall time; the LM-latency floor (two root turns + one round of sub-calls); engine
overhead = wall - floor; the process's CPU time during the run (less sensitive to a busy
machine than the wall); peak memory above the process's baseline (MB, and as a multiple of
the context); trace size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import subprocess
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
FACT = "The secret launch code is 7309-ALPHA."

ROOT_CODE = f"""```repl
n = len(context)
step = -(-n // {WINDOWS})
ask = "Report the secret launch code in this text, or say none.\\n"
replies = llm_batch([ask + context[i:i + step] for i in range(0, n, step)])
found = [r for r in replies if r != "none"]
print(len(replies), found)
```"""


def reply_to(model: str, text: str) -> str:
    """What both transports answer: the sub model finds the code, the root runs ROOT_CODE."""
    if model == "sub":
        return "7309-ALPHA" if "7309-ALPHA" in text else "none"
    return ROOT_CODE if text.startswith("Query:") else 'FINAL_VAR("found")'


def responder(body: dict[str, Any]) -> Any:
    from fake_server import FakeReply, last_user_text

    delay = SUB_LATENCY_S if body["model"] == "sub" else ROOT_LATENCY_S
    return FakeReply(text=reply_to(body["model"], last_user_text(body)), delay_s=delay)


def serve(url_queue: multiprocessing.Queue) -> None:
    from fake_server import FakeChatServer

    server = FakeChatServer(responder, record=False).start()
    url_queue.put(server.url)
    while True:
        time.sleep(3600)


def make_context(megabytes: float, seed: int = 7) -> str:
    rng = random.Random(seed)
    words = ("river", "stone", "lamp", "orchard", "window", "engine", "paper", "garden")
    line = " ".join(rng.choice(words) for _ in range(14)) + ".\n"
    target = int(megabytes * 1_000_000)
    body = line * (target // len(line) + 1)
    at = int(target * 0.62)
    return body[:at] + FACT + "\n" + body[at : target - len(FACT) - 1]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def make_rlm(transport: str, url: str | None, concurrency: int, repl: str) -> Any:
    from deeprlm import RLM, ScriptedLM

    if transport == "http":
        return RLM(
            "openai/root", "openai/sub", base_url=url, max_concurrency=concurrency, repl=repl
        )
    root = ScriptedLM(
        lambda m: reply_to("root", m[-1]["content"]), name="root", delay=ROOT_LATENCY_S
    )
    sub = ScriptedLM(lambda m: reply_to("sub", m[-1]["content"]), name="sub", delay=SUB_LATENCY_S)
    return RLM(root, sub, max_concurrency=concurrency, repl=repl)


def run_one(case: dict[str, Any]) -> dict[str, Any]:
    rlm = make_rlm(case["transport"], case["url"], case["concurrency"], case["repl"])
    # Warm imports, clients and the REPL so the measured run is the engine, not first use.
    rlm.run("warm up", "tiny context with 7309-ALPHA")
    baseline = rss_mb()
    context = make_context(case["mb"])
    with tempfile.TemporaryDirectory() as tmp:
        rlm.trace_path = Path(tmp) / "trace.jsonl"
        started, cpu_started = time.perf_counter(), time.process_time()
        result = rlm.run("What is the secret launch code?", context)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        trace_kb = rlm.trace_path.stat().st_size / 1000
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000 - baseline
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_mb": peak_mb,
        "peak_x": peak_mb / (len(context) / 1e6),
        "trace_kb": trace_kb,
        "right": "7309-ALPHA" in result.answer and result.sub_calls == WINDOWS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.4,4,40")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repl", default="inprocess,sandbox")
    parser.add_argument("--transport", default="http,direct")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(json.loads(args.one))))
        return

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    url = queue.get(timeout=30)
    floor = 2 * ROOT_LATENCY_S + SUB_LATENCY_S * -(-WINDOWS // args.concurrency)
    print(
        f"root {ROOT_LATENCY_S * 1000:.0f} ms, sub {SUB_LATENCY_S * 1000:.0f} ms, {WINDOWS} "
        f"windows, max_concurrency {args.concurrency}, best of {args.repeat}, "
        f"{os.cpu_count()} cores\n"
    )
    columns = (
        "transport",
        "repl",
        "context",
        "wall",
        "floor",
        "overhead",
        "CPU",
        "peak mem",
        "trace",
        "right",
    )
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    try:
        for transport in args.transport.split(","):
            for repl in args.repl.split(","):
                for size in (float(s) for s in args.sizes.split(",")):
                    case = {
                        "transport": transport,
                        "repl": repl,
                        "mb": size,
                        "url": url,
                        "concurrency": args.concurrency,
                    }
                    runs = [
                        json.loads(
                            subprocess.run(
                                [sys.executable, __file__, "--one", json.dumps(case)],
                                capture_output=True,
                                text=True,
                                check=True,
                            ).stdout.splitlines()[-1]
                        )
                        for _ in range(args.repeat)
                    ]
                    best = min(runs, key=lambda r: r["wall_s"])
                    peak = max(runs, key=lambda r: r["peak_mb"])
                    cells = (
                        transport,
                        repl,
                        f"{size:g} MB",
                        f"{best['wall_s'] * 1000:.0f} ms",
                        f"{floor * 1000:.0f} ms",
                        f"{(best['wall_s'] - floor) * 1000:.0f} ms",
                        f"{min(r['cpu_s'] for r in runs) * 1000:.0f} ms",
                        f"{peak['peak_mb']:.0f} MB ({peak['peak_x']:.1f}x)",
                        f"{best['trace_kb']:.0f} KB",
                        "yes" if all(r["right"] for r in runs) else "NO",
                    )
                    print("| " + " | ".join(cells) + " |", flush=True)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
