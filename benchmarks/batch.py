"""Batch throughput: `deeprlm batch` with the local executor and on Ray.

200 questions over one 4 MB shared context, against a fake OpenAI-compatible server in a
process of its own: root calls take 50 ms, sub-calls 200 ms, and each question's code sends
16 sub-calls through `llm_batch` (each with a 1,000-character piece of the context), then
answers. So a question waits at least 2 x 50 + 200 = 300 ms on its models; the rest is the
engine, the REPL (the sandbox by default, a process per question) and, on Ray, the cost of
a task: scheduling, fetching the context from the object store, the permit broker's round
trips around each model call, sending the result back.

Rows: the local executor at 1, 4 and 16 questions at once, and Ray with 1, 2 and 4 worker
processes (a local cluster of that many CPUs, one question per worker at a time). Each Ray
cluster is started and warmed up (its workers import deeprlm, once) before it is timed;
both costs are shown apart, since a long batch pays them once.

    .venv/bin/python benchmarks/batch.py [--questions 200] [--repl sandbox|inprocess]
        [--local 1,4,16] [--ray 1,2,4]

Columns: wall time of the batch, questions per minute, mean time of one question inside
its worker (the engine's own wall), the driver's CPU per question, and for Ray the time it
adds per question over the local executor at the same concurrency. Then a projection of a
10,000-question run on a 10-node cluster, from these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

ROOT_LATENCY_S = 0.050
SUB_LATENCY_S = 0.200
SUB_CALLS = 16
CONTEXT_MB = 4.0
PIECE = 1_000

ROOT_CODE = f"""```repl
step = len(context) // {SUB_CALLS}
replies = llm_batch([f"Summarise: {{context[i * step:i * step + {PIECE}]}}"
                     for i in range({SUB_CALLS})])
print(len(replies), sum(r == "ok" for r in replies))
```"""


def responder(body: dict[str, Any]) -> Any:
    from fake_server import FakeReply

    messages = body["messages"]
    if body["model"] == "sub":
        return FakeReply(text="ok", delay_s=SUB_LATENCY_S)
    if len(messages) == 2:
        return FakeReply(text=ROOT_CODE, delay_s=ROOT_LATENCY_S)
    output = messages[-1]["content"]
    answer = "all 16" if f"{SUB_CALLS} {SUB_CALLS}" in output else "missing"
    return FakeReply(text=f"FINAL({answer})", delay_s=ROOT_LATENCY_S)


def serve(url_queue: multiprocessing.Queue) -> None:
    from fake_server import FakeChatServer

    server = FakeChatServer(responder, record=False).start()
    url_queue.put(server.url)
    while True:
        time.sleep(3600)


def make_context(path: Path) -> None:
    rng = random.Random(3)
    words = ("harbour", "ledger", "copper", "meadow", "signal", "lantern", "quarry", "thread")
    line = " ".join(rng.choice(words) for _ in range(12)) + ".\n"
    target = int(CONTEXT_MB * 1_000_000)
    path.write_text((line * (target // len(line) + 1))[:target])


def make_questions(path: Path, count: int, prefix: str) -> None:
    lines = [
        json.dumps({"id": f"{prefix}{i}", "query": f"Summarise part {i}.", "shared": "doc"})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(folder: Path, url: str, questions: Path, out: Path, repl: str, executor: Any) -> dict:
    from deeprlm.batch import BatchConfig, Models, run_batch
    from deeprlm.batch.store import read_jsonl
    from deeprlm.settings import Settings

    config = BatchConfig(
        questions=questions,
        out=out,
        models=Models("openai/root", "openai/sub", base_url=url),
        settings=Settings(repl=repl, max_concurrency=SUB_CALLS),
        shared={"doc": (str(folder / "context.txt"),)},
        provider_concurrency=1024,  # the provider is not what this measures
    )
    started, cpu = time.perf_counter(), time.process_time()
    children = children_cpu()
    report = asyncio.run(run_batch(config, executor=executor))
    wall = time.perf_counter() - started
    rows = list(read_jsonl(out / "results.jsonl"))
    right = sum(r["answer"] == "all 16" for r in rows)
    n = len(rows)
    return {
        "n": n,
        "right": right,
        "wall": wall,
        "qpm": 60 * n / wall,
        "inside": sum(r["wall_s"] for r in rows) / n,
        "driver_cpu": (time.process_time() - cpu) / n,
        "local_cpu": (time.process_time() - cpu + children_cpu() - children) / n,
        "statuses": dict(report.statuses),
    }


def local(folder: Path, url: str, questions: Path, repl: str, workers: int) -> dict:
    from deeprlm.batch.executors import LocalExecutor

    warm = folder / "warm.jsonl"
    make_questions(warm, workers, "w")
    run(folder, url, warm, folder / f"warm-local{workers}", repl, LocalExecutor(workers, 1024))
    out = folder / f"local{workers}"
    return run(folder, url, questions, out, repl, LocalExecutor(workers, 1024))


def on_ray(folder: Path, url: str, questions: Path, repl: str, workers: int) -> dict:
    from deeprlm.batch.ray_executor import LOCAL_ONLY_ENV, RayExecutor

    os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import ray

    temp = tempfile.mkdtemp(prefix="raybench", dir="/tmp")
    started = time.perf_counter()
    ray.init(
        num_cpus=workers,
        object_store_memory=200 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=temp,
    )
    try:
        cluster_s = time.perf_counter() - started
        warm = folder / "warm.jsonl"
        make_questions(warm, workers * 2, "w")
        started = time.perf_counter()
        run(folder, url, warm, folder / f"warm-ray{workers}", repl,
            RayExecutor(workers=workers, provider_concurrency=1024))  # fmt: skip
        warm_s = time.perf_counter() - started
        result = run(folder, url, questions, folder / f"ray{workers}", repl,
                     RayExecutor(workers=workers, provider_concurrency=1024))  # fmt: skip
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return {**result, "cluster_s": cluster_s, "warm_s": warm_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--repl", default="sandbox")
    parser.add_argument("--local", default="1,4,16")
    parser.add_argument("--ray", default="1,2,4")
    args = parser.parse_args()

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    url = queue.get(timeout=30)
    floor = 2 * ROOT_LATENCY_S + SUB_LATENCY_S
    print(
        f"{args.questions} questions over a {CONTEXT_MB:g} MB shared context; root "
        f"{ROOT_LATENCY_S * 1000:.0f} ms, sub {SUB_LATENCY_S * 1000:.0f} ms, {SUB_CALLS} "
        f"sub-calls each (model wait per question: {floor * 1000:.0f} ms); repl {args.repl}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start\n"
    )
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_context(folder / "context.txt")
        questions = folder / "questions.jsonl"
        make_questions(questions, args.questions, "q")
        for workers in (int(w) for w in args.local.split(",") if w):
            results[("local", workers)] = local(folder, url, questions, args.repl, workers)
        for workers in (int(w) for w in args.ray.split(",") if w):
            results[("ray", workers)] = on_ray(folder, url, questions, args.repl, workers)
    server.terminate()

    columns = ("executor", "at once", "wall", "questions/min", "in worker", "driver CPU",
               "Ray adds", "cluster start + warm-up", "right")  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for (kind, workers), r in results.items():
        same = results.get(("local", workers))
        adds = ""
        if kind == "ray" and same is not None:
            # Per question, at the same number at once: the extra wall each one costs.
            adds = f"{(r['wall'] - same['wall']) * workers / r['n'] * 1000:+.0f} ms"
        start = f"{r['cluster_s']:.1f} s + {r['warm_s']:.1f} s" if kind == "ray" else ""
        cells = (kind, str(workers), f"{r['wall']:.1f} s", f"{r['qpm']:.0f}",
                 f"{r['inside'] * 1000:.0f} ms", f"{r['driver_cpu'] * 1000:.1f} ms", adds,
                 start, f"{r['right']}/{r['n']}")  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    project(results, args.repl)


def project(results: dict[tuple[str, int], dict], repl: str) -> None:
    """10,000 questions on 10 nodes, from what one node did here."""
    rays = {w: r for (kind, w), r in results.items() if kind == "ray"}
    if not rays:
        return
    best_w = max(rays, key=lambda w: rays[w]["qpm"])
    best = rays[best_w]
    per_node = best["qpm"]
    total = 10 * per_node
    minutes = 10_000 / total
    driver_qpm = 60 / best["driver_cpu"] if best["driver_cpu"] else float("inf")
    in_flight = total / 60 * (SUB_CALLS * SUB_LATENCY_S + 2 * ROOT_LATENCY_S)
    local_cpu = results.get(("local", 1), {}).get("local_cpu")
    print(
        f"\nProjection (not a measurement): 10,000 questions of this profile on 10 nodes "
        f"like this one ({os.cpu_count()} cores, {best_w} workers each, repl {repl}) run at "
        f"about 10 x {per_node:.0f} = {total:.0f} questions/min, so in about {minutes:.0f} "
        f"minutes, if the model servers take about {in_flight:.0f} calls in flight "
        f"(Little's law: {total / 60:.1f} questions/s x ({SUB_CALLS} x "
        f"{SUB_LATENCY_S * 1000:.0f} ms + 2 x {ROOT_LATENCY_S * 1000:.0f} ms)) and the driver "
        f"keeps up: it spent "
        f"{best['driver_cpu'] * 1000:.1f} ms of CPU per question here, so one driver core "
        f"handles about {driver_qpm:.0f} questions/min."
    )
    if local_cpu is not None:
        print(
            f"A question costs about {local_cpu * 1000:.0f} ms of CPU in one process (the "
            f"local executor, REPL processes included): a node of C cores runs at most about "
            f"C / {local_cpu:.2f} questions/s, whatever its number of workers."
        )


if __name__ == "__main__":
    main()
