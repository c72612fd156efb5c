"""What `deeprlm serve` adds to a run, next to calling the library in one process.

A fake OpenAI-compatible upstream in its own process answers every call after a fixed
latency (20 ms): the root's first turn runs a cell with one sub-call, its second answers.
The same question is asked by 1, 8 and 32 concurrent clients:

- `direct`: `RLM.arun` in this process (asyncio.gather), the sandbox REPL as in the server;
- `served`: `deeprlm serve` in its own process, through the `openai` SDK (AsyncOpenAI),
  non-streaming, then streaming (with progress chunks).

Columns: requests per second and p50/p95 latency as the client sees them; the server's
overhead per request as the client sees it, its latency minus the run's own wall time
(`wall_s`, which the response carries): HTTP both ways, the SDK, parsing, queueing and
response building around the run; the same measured inside the server (the
`Server-Timing` header: the handler's total minus the run), which leaves out the client,
the sockets and the waits for a CPU on a busy machine; and per streamed chunk, the extra
time of a streamed request over a plain one, divided by the chunks it received.

    .venv/bin/python benchmarks/serve.py [--requests 32] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

from deeprlm import RLM

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

UPSTREAM = """
import sys, time
sys.path.insert(0, {tests!r})
from fake_server import FakeChatServer, FakeReply, last_user_text
CODE = "```repl\\nseen = context[:10]\\nprint(llm_query('say ok'))\\n```"

def responder(body):
    if body["messages"][0]["role"] != "system":
        return FakeReply("ok", delay_s={latency})
    first = "Query:" in last_user_text(body)
    return FakeReply(CODE if first else 'FINAL_VAR("seen")', delay_s={latency})

server = FakeChatServer(responder, record=False).start()
print(server.url, flush=True)
time.sleep(10 ** 6)
"""
CONTEXT = "benchmark context " * 100
QUESTION = "what does it start with?"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start(command: list[str], pattern: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stream = process.stderr if "serve" in command else process.stdout
    assert stream is not None
    line = stream.readline()
    found = re.search(pattern, line)
    if not found:
        process.kill()
        raise SystemExit(f"could not start {command[:4]}: {line}")
    return process, found.group(1)


async def direct(upstream: str, clients: int, requests: int) -> tuple[list[float], list[float]]:
    rlm = RLM("openai/root", base_url=upstream, repl="sandbox")
    latencies: list[float] = []
    walls: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            result = await rlm.arun(QUESTION, CONTEXT)
            latencies.append(time.perf_counter() - t0)
            walls.append(result.wall_s)
            assert result.answer == CONTEXT[:10], result.answer

    await asyncio.gather(*(client(requests // clients) for _ in range(clients)))
    return latencies, walls


async def served(
    url: str, clients: int, requests: int, stream: bool
) -> tuple[list[float], list[float], list[int], list[float]]:
    api = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    latencies: list[float] = []
    walls: list[float] = []
    chunks: list[int] = []
    inside: list[float] = []  # the handler's own time: Server-Timing total - run
    request: dict[str, Any] = {
        "model": "deeprlm",
        "messages": [{"role": "user", "content": QUESTION}],
        "extra_body": {"context": CONTEXT},
    }

    async def client(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            if stream:
                received = [
                    c async for c in await api.chat.completions.create(**request, stream=True)
                ]
                latencies.append(time.perf_counter() - t0)
                walls.append(received[-1].model_extra["deeprlm"]["wall_s"])
                chunks.append(len(received))
                assert received[-2].choices[0].delta.content == CONTEXT[:10]
            else:
                raw = await api.chat.completions.with_raw_response.create(**request)
                latencies.append(time.perf_counter() - t0)
                done = raw.parse()
                walls.append(done.model_extra["deeprlm"]["wall_s"])
                assert done.choices[0].message.content == CONTEXT[:10]
                timing = dict(re.findall(r"(\w+);dur=([\d.]+)", raw.headers["server-timing"]))
                inside.append((float(timing["total"]) - float(timing["run"])) / 1000)

    await asyncio.gather(*(client(requests // clients) for _ in range(clients)))
    await api.close()
    return latencies, walls, chunks, inside


async def round_trips(url: str, count: int) -> list[float]:
    """GET /v1/models through the same SDK: the floor any request pays on this machine
    (client, sockets, scheduling), with next to nothing done in the server."""
    api = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        await api.models.list()
        times.append(time.perf_counter() - t0)
    await api.close()
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=32, help="per concurrency level")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args()

    script = UPSTREAM.format(tests=str(TESTS), latency=args.latency_ms / 1000)
    upstream, upstream_url = start([sys.executable, "-c", script], r"(http://\S+)")
    env_server = [sys.executable, "-m", "deeprlm", "serve", "--port", "0"]
    env_server += ["--model", "openai/root", "--base-url", upstream_url]
    env_server += ["--max-runs", "32", "--max-queued", "64"]
    server, url = start(env_server, r"listening on (http://\S+)")
    rows = []
    try:
        asyncio.run(served(url, 1, 2, False))  # warm up both sides
        asyncio.run(direct(upstream_url, 1, 2))
        floor = asyncio.run(round_trips(url, 50))
        for clients in (int(c) for c in args.clients.split(",")):
            n = max(args.requests, clients) // clients * clients
            t0 = time.perf_counter()
            d_lat, d_wall = asyncio.run(direct(upstream_url, clients, n))
            d_rps = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            s_lat, s_wall, _, s_inside = asyncio.run(served(url, clients, n, False))
            s_rps = n / (time.perf_counter() - t0)
            st_lat, st_wall, st_chunks, _ = asyncio.run(served(url, clients, n, True))
            plain = [lat - wall for lat, wall in zip(s_lat, s_wall, strict=True)]
            streamed = [lat - wall for lat, wall in zip(st_lat, st_wall, strict=True)]
            per_chunk = (
                statistics.median(streamed) - statistics.median(plain)
            ) / statistics.median(st_chunks)
            direct_over = [lat - wall for lat, wall in zip(d_lat, d_wall, strict=True)]
            rows.append(
                (
                    str(clients),
                    f"{d_rps:.1f}",
                    f"{ms(statistics.median(d_lat))} / {ms(quantile(d_lat, 0.95))}",
                    f"{s_rps:.1f}",
                    f"{ms(statistics.median(s_lat))} / {ms(quantile(s_lat, 0.95))}",
                    f"{ms(statistics.median(direct_over))}",
                    f"{ms(statistics.median(plain))} / {ms(quantile(plain, 0.95))}"
                    f" (min {ms(min(plain))})",
                    f"{ms(statistics.median(s_inside))} / {ms(quantile(s_inside, 0.95))}",
                    f"{ms(statistics.median(st_lat))} / {ms(quantile(st_lat, 0.95))}",
                    f"{statistics.median(st_chunks):.0f}",
                    f"{per_chunk * 1000:.2f}",
                )
            )
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(15)
        upstream.wait(15)

    header = (
        "clients",
        "direct req/s",
        "direct p50 / p95 ms",
        "served req/s",
        "served p50 / p95 ms",
        "library overhead p50 ms",
        "server overhead p50 / p95 ms (client's view)",
        "in the handler p50 / p95 ms",
        "streamed p50 / p95 ms",
        "chunks",
        "per chunk ms",
    )
    print(f"upstream latency {args.latency_ms:g} ms per call, 3 calls per run, sandbox REPL")
    print(
        f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
        f" on {os.cpu_count()} cores (uptime's 1/5/15-minute averages)"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"floor: GET /v1/models through the same SDK takes {ms(statistics.median(floor))} ms "
        f"p50, {ms(quantile(floor, 0.95))} ms p95 on this machine now"
    )
    print("goal: server overhead p50 <= 5 ms")


if __name__ == "__main__":
    main()
