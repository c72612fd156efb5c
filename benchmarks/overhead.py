"""Engine overhead over a local OpenAI-compatible server with fixed latencies.

The server (its own process) answers the root in 50 ms and each sub-call in 200 ms. The
context is 0.4, 4 or 40 MB of text with one hidden fact; the root's code cuts it into 64
windows, sends them through `llm_batch`, and returns what comes back. Each size runs in a
fresh process, so its peak memory is its own.

    .venv/bin/python benchmarks/overhead.py [--sizes 0.4,4,40] [--concurrency 64] [--repeat 3]

Columns: wall time; the LM-latency floor (two root turns + one round of sub-calls); engine
overhead = wall - floor; the server's own time spent reading and parsing requests (part of
the wall, not of the engine); peak memory above the process's baseline, as a multiple of
the context; trace size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def responder(body: dict) -> object:
    from deeprlm.lm.fake_server import FakeReply, last_user_text

    text = last_user_text(body)
    if body["model"] == "sub":
        found = "7309-ALPHA" if "7309-ALPHA" in text else "none"
        return FakeReply(text=found, delay_s=SUB_LATENCY_S)
    reply = ROOT_CODE if text.startswith("Query:") else 'FINAL_VAR("found")'
    return FakeReply(text=reply, delay_s=ROOT_LATENCY_S)


def serve(port_queue: multiprocessing.Queue) -> None:
    from deeprlm.lm.fake_server import FakeChatServer

    server = FakeChatServer(responder, record=False).start()
    port_queue.put(server.url)
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


def run_one(url: str, megabytes: float, concurrency: int) -> dict:
    from deeprlm import RLM

    rlm = RLM("openai/root", "openai/sub", base_url=url, max_concurrency=concurrency)
    # Warm the client and imports so the measured run is the engine, not first-use costs.
    rlm.run("warm up", "tiny context with 7309-ALPHA")
    baseline = rss_mb()
    context = make_context(megabytes)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        rlm.trace_path = trace
        started = time.perf_counter()
        result = rlm.run("What is the secret launch code?", context)
        wall = time.perf_counter() - started
        trace_bytes = trace.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000
    context_mb = len(context) / 1e6
    return {
        "mb": megabytes,
        "wall_s": wall,
        "right": "7309-ALPHA" in result.answer,
        "peak_x": (peak - baseline) / context_mb,
        "trace_kb": trace_bytes / 1000,
        "sub_calls": result.sub_calls,
    }


def measure_server_parse(megabytes: float) -> float:
    """Seconds the server spends decoding one round of request bodies, measured apart."""
    context = make_context(megabytes)
    step = -(-len(context) // WINDOWS)
    bodies = [
        json.dumps(
            {"model": "sub", "messages": [{"role": "user", "content": context[i : i + step]}]}
        )
        for i in range(0, len(context), step)
    ]
    started = time.perf_counter()
    for body in bodies:
        json.loads(body)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.4,4,40")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.url, args.one, args.concurrency)))
        return

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    url = queue.get(timeout=30)
    floor = 2 * ROOT_LATENCY_S + SUB_LATENCY_S * -(-WINDOWS // args.concurrency)
    print(
        f"root {ROOT_LATENCY_S * 1000:.0f} ms, sub {SUB_LATENCY_S * 1000:.0f} ms, "
        f"{WINDOWS} windows, max_concurrency {args.concurrency}, best of {args.repeat}\n"
    )
    header = (
        f"| {'context':>8} | {'wall':>8} | {'floor':>7} | {'overhead':>8} | {'server parse':>12} "
        f"| {'peak mem':>8} | {'trace':>8} | right |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    try:
        for size in [float(s) for s in args.sizes.split(",")]:
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        str(size),
                        "--url",
                        url,
                        "--concurrency",
                        str(args.concurrency),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            best = min(runs, key=lambda r: r["wall_s"])
            parse = statistics.median(measure_server_parse(size) for _ in range(3))
            print(
                f"| {size:>5g} MB | {best['wall_s'] * 1000:>5.0f} ms | {floor * 1000:>4.0f} ms "
                f"| {(best['wall_s'] - floor) * 1000:>5.0f} ms | {parse * 1000:>9.0f} ms "
                f"| {max(r['peak_x'] for r in runs):>6.2f} x | {best['trace_kb']:>5.0f} KB "
                f"| {'yes' if all(r['right'] for r in runs) else 'NO':>5} |"
            )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
