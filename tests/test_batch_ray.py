"""`deeprlm batch` and `deeprlm bench run` on a real local Ray cluster (one for the whole
session, started by the `ray_cluster` fixture), against the fake HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from deeprlm.batch import BatchConfig, Models, run_batch
from deeprlm.batch.ray_executor import RayExecutor
from deeprlm.batch.store import FINAL
from deeprlm.batch.work import CacheChoice
from deeprlm.settings import Settings
from deeprlm_bench.runner import RunConfig, read_results, run

from batch_helpers import Script, mixed_batch, query, question_of
from batch_helpers import read_results as batch_results
from batch_helpers import write_questions as write
from conftest import ctrl_c_works

INPROCESS = Settings(repl="inprocess")


def config(questions: Path, out: Path, server, **changes) -> BatchConfig:
    base = dict(
        questions=questions,
        out=out,
        models=Models("openai/m", base_url=server.url),
        settings=INPROCESS,
    )
    return BatchConfig(**{**base, **changes})


def on_ray(cfg: BatchConfig, **options) -> tuple[object, RayExecutor]:
    executor = RayExecutor(
        workers=cfg.workers,
        provider_concurrency=cfg.provider_concurrency or cfg.settings.max_concurrency,
        **options,
    )
    # A permit a dead worker never gave back would stall the batch: bounded, it fails.
    report = asyncio.run(asyncio.wait_for(run_batch(cfg, executor=executor), 150))
    return report, executor


def overlap(rows: list[dict]) -> int:
    """The most questions that were running at one moment."""
    edges = sorted([(r["started_at"], 1) for r in rows] + [(r["finished_at"], -1) for r in rows])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_fifty_questions_give_the_same_answers_locally_and_on_ray(
    ray_cluster, chat_server, tmp_path
):
    server = chat_server(Script())
    questions, answers, shared = mixed_batch(tmp_path, 50)
    local = asyncio.run(
        run_batch(config(questions, tmp_path / "local", server, shared=shared, workers=4))
    )
    shares = []
    executor = RayExecutor(workers=8, provider_concurrency=16)
    real_share = executor.share

    async def counting(value):
        shares.append(value)
        return await real_share(value)

    executor.share = counting  # type: ignore[method-assign]
    ray = asyncio.run(
        run_batch(config(questions, tmp_path / "ray", server, shared=shared), executor=executor)
    )
    assert local.statuses == ray.statuses == Counter(answered=50)
    local_answers = {r["id"]: r["answer"] for r in batch_results(tmp_path / "local")}
    ray_rows = batch_results(tmp_path / "ray")
    assert local_answers == {r["id"]: r["answer"] for r in ray_rows} == answers
    # Answered by Ray's workers, not by this process.
    workers = {r["worker"] for r in ray_rows}
    assert f":{os.getpid()}" not in " ".join(workers) and len(workers) > 1
    # Each context many questions share went to the object store once: the shared corpus
    # (17 questions) and four folders (4 or 5 questions each); inline texts travel inline.
    assert len(shares) == 5
    assert "ray, 8 at once" in ray.where


def test_the_sandbox_runs_inside_ray_workers(ray_cluster, chat_server, tmp_path):
    server = chat_server(Script())
    rows = [{"id": f"s{i}", "query": query("ab", f"s{i}"), "context": "ab " * (i + 1)}
            for i in range(3)]  # fmt: skip
    questions = write(tmp_path / "q.jsonl", rows)
    cfg = config(questions, tmp_path / "out", server, settings=Settings(repl="sandbox"))
    report, _ = on_ray(cfg)
    assert report.statuses == Counter(answered=3)
    answers = {r["id"]: r["answer"] for r in batch_results(tmp_path / "out")}
    assert answers == {f"s{i}": f"ab={i + 1} doubled={2 * (i + 1)}" for i in range(3)}
    trace = (tmp_path / "out" / "traces" / "s0.jsonl").read_text()
    assert '"repl": "sandbox"' in trace


def test_ray_workers_share_one_cache_file(ray_cluster, chat_server, tmp_path):
    server = chat_server(Script(sub_delay=0.05))
    rows = [
        {"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w " * (i + 1)} for i in range(12)
    ]
    questions = write(tmp_path / "q.jsonl", rows)
    cache = CacheChoice(str(tmp_path / "cache.sqlite"), sampled=True)
    first, _ = on_ray(config(questions, tmp_path / "a", server, workers=4, cache=cache))
    assert first.statuses == Counter(answered=12)
    assert len(server.requests) == 36
    rows_a = batch_results(tmp_path / "a")
    assert len({r["worker"] for r in rows_a}) > 1  # several processes wrote the file
    # A second batch over the same questions: every reply is in the file, whichever worker
    # stored it, and no request is sent.
    second, _ = on_ray(config(questions, tmp_path / "b", server, workers=4, cache=cache))
    assert second.statuses == Counter(answered=12) and len(server.requests) == 36
    rows_b = {r["id"]: r for r in batch_results(tmp_path / "b")}
    assert {r["id"]: r["answer"] for r in rows_a} == {k: r["answer"] for k, r in rows_b.items()}
    assert all(r["usage"]["total"]["cache_hits"] == 3 for r in rows_b.values())


def test_the_provider_limit_holds_across_the_cluster(ray_cluster, chat_server, tmp_path):
    server = chat_server(Script(batch=6, sub_delay=0.1))
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(16)]
    questions = write(tmp_path / "q.jsonl", rows)
    cfg = config(questions, tmp_path / "out", server, workers=8, provider_concurrency=3)
    report, executor = on_ray(cfg)
    assert report.statuses == Counter(answered=16)
    rows = batch_results(tmp_path / "out")
    # Eight Ray workers ran questions at once, each asking for six sub-calls at a time...
    assert overlap(rows) == 8 and len({r["worker"] for r in rows}) >= 8
    # ...and the server never had more than three requests in flight.
    assert server.max_in_flight == 3
    assert executor.permit_stats["peak"] == {"m": 3}


def test_the_batch_budget_holds_across_the_cluster(ray_cluster, chat_server, tmp_path):
    # As the local test: about 1,100 tokens a question, 4,000 for the batch, four Ray
    # workers at once; the broker holds each call's worst case for the whole cluster.
    server = chat_server(Script(root_delay=0.05, sub_delay=0.05))
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(12)]
    questions = write(tmp_path / "q.jsonl", rows)
    settings = Settings(repl="inprocess", max_reply_tokens=200)
    cfg = config(questions, tmp_path / "out", server, settings=settings, workers=4,
                 max_tokens=4_000)  # fmt: skip
    report, executor = on_ray(cfg)
    assert server.counted.tokens <= 4_000
    assert report.tally.tokens == server.counted.tokens
    assert executor.permit_stats["tokens"] == server.counted.tokens
    assert report.stopped == "budget" and report.not_run > 0
    results = batch_results(tmp_path / "out")
    assert len({r["worker"] for r in results}) > 1
    stopped = [r for r in results if r["status"] == "stopped"]
    assert stopped and all(r["error"].startswith("batch budget reached") for r in stopped)


def test_a_worker_killed_mid_question_is_retried_and_reported(ray_cluster, chat_server, tmp_path):
    # The server kills the Ray worker of q3 once and of q5 every time, during a model call:
    # the worker holds a permit then, and with one permit a leaked one would stall the rest.
    script = Script(kill={"q3": 1, "q5": 99})
    server = chat_server(script)
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(8)]
    questions = write(tmp_path / "q.jsonl", rows)
    # A batch budget too, far from reached: the dead worker's reservations are freed too.
    cfg = config(questions, tmp_path / "out", server, workers=4, provider_concurrency=1,
                 retries=1, max_tokens=1_000_000)  # fmt: skip
    report, executor = on_ray(cfg)
    results = batch_results(tmp_path / "out")
    assert Counter(r["id"] for r in results) == Counter(f"q{i}" for i in range(8))
    by_id = {r["id"]: r for r in results}
    assert report.statuses == Counter(answered=7, error=1)
    assert by_id["q3"]["status"] == "answered" and by_id["q3"]["attempts"] == 2
    assert by_id["q3"]["answer"] == "w=1 doubled=2"
    (failure,) = by_id["q3"]["failures"]
    assert failure.startswith("attempt 1: WorkerCrashedError")
    assert by_id["q5"]["status"] == "error" and by_id["q5"]["attempts"] == 2
    assert by_id["q5"]["error"].startswith("its worker was lost 2 time(s); last: ")
    assert len(by_id["q5"]["failures"]) == 2
    assert sorted(qid for qid, _ in script.killed) == ["q3", "q5", "q5"]
    assert all(by_id[f"q{i}"]["attempts"] == 1 for i in (0, 1, 2, 4, 6, 7))
    # Each sub-call lost with its worker is charged its worst case (a short prompt and the
    # whole reply cap, 8,192 tokens under a budget): what it cost is unknown.
    lost = executor.permit_stats["tokens"] - server.counted.tokens
    assert 3 * 8_192 < lost < 3 * (8_192 + 100)


def test_resume_on_ray_after_the_driver_is_killed(ray_cluster, chat_server, tmp_path):
    server = chat_server(Script(root_delay=0.2))
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w " * i + "end"}
            for i in range(12)]  # fmt: skip
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    args = [sys.executable, "-m", "deeprlm", "batch", str(questions), "--out", str(out),
            "--model", "openai/m", "--base-url", server.url, "--repl", "inprocess", "--executor",
            "ray", "--ray-address", ray_cluster, "--workers", "2", "--quiet"]  # fmt: skip
    driver = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            results = out / "results.jsonl"
            if results.exists() and len(results.read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate()
    finished = {r["id"] for r in batch_results(out) if r["status"] in FINAL}
    assert 4 <= len(finished) < 12
    time.sleep(1.0)  # what the dead driver's tasks still had in flight
    seen = len(server.requests)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert not {question_of(b) for b in server.requests[seen:]} & finished
    final = Counter(r["id"] for r in batch_results(out) if r["status"] in FINAL)
    assert final == Counter({f"q{i}": 1 for i in range(12)})


def test_the_bench_grid_runs_on_ray_as_it_does_here(ray_cluster, chat_server, tmp_path):
    server = chat_server(lambda body: "Answer: 1234567")
    grid = RunConfig(
        tasks=("niah", "aggregate-labelled"),
        lengths=(2048,),
        methods=("oracle", "base"),
        n=2,
        seed=5,
        model="openai/m",
        base_url=server.url,
        settings=Settings(repl="inprocess"),
    )
    here = run(grid, tmp_path / "here", trajectories=True)
    executor = RayExecutor(workers=4, provider_concurrency=2)
    shares = []
    real_share = executor.share

    async def counting(value):
        shares.append(value)
        return await real_share(value)

    executor.share = counting  # type: ignore[method-assign]
    there = run(grid, tmp_path / "ray", executor=executor, trajectories=True)

    def key(r):
        return (r.task, r.index, r.method)

    assert len(here) == len(there) == 8
    assert {key(r): (r.score, r.answer) for r in here} == {
        key(r): (r.score, r.answer) for r in there
    }
    assert {key(r): r.score for r in there if r.method == "oracle"} == {
        ("niah", 0, "oracle"): 1.0, ("niah", 1, "oracle"): 1.0,
        ("aggregate-labelled", 0, "oracle"): 1.0, ("aggregate-labelled", 1, "oracle"): 1.0,
    }  # fmt: skip
    # One object per example, for both methods that read it.
    assert len(shares) == 4
    assert len(read_results(tmp_path / "ray")) == 8
    trajectories = [json.loads(line) for line in (tmp_path / "ray" / "trajectories.jsonl").open()]
    assert {(t["source"]["task"], t["source"]["method"]) for t in trajectories} == {
        (task, method) for task in grid.tasks for method in grid.methods
    }
    for t in trajectories:
        assert t["reward"] == next(r.score for r in there if r.task == t["source"]["task"]
                                   and r.index == t["source"]["index"]
                                   and r.method == t["source"]["method"])  # fmt: skip
    # A finished grid on Ray resumes like one run here: nothing to do.
    assert run(grid, tmp_path / "ray", executor=RayExecutor(provider_concurrency=2)) == []


def test_bench_run_takes_the_executor_flags(ray_cluster, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", "bench", "run", "--tasks", "niah", "--lengths", "2k",
         "--methods", "oracle", "--n", "2", "--out", str(tmp_path / "out"), "--repl",
         "inprocess", "--executor", "ray", "--ray-address", ray_cluster, "--quiet",
         "--export-trajectories"],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_results(tmp_path / "out")
    assert sorted((r["index"], r["score"]) for r in rows) == [(0, 1.0), (1, 1.0)]
    assert len((tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_on_ray_cancels_the_running_tasks_and_keeps_what_they_spent(
    ray_cluster, chat_server, tmp_path
):
    # Sub-calls far longer than the grace a cancelled task has to hand back what it did:
    # the cancel must reach a task waiting on its call at once, not when the call returns.
    server = chat_server(Script(sub_delay=60))
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(8)]
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    args = [sys.executable, "-m", "deeprlm", "batch", str(questions), "--out", str(out),
            "--model", "openai/m", "--base-url", server.url, "--repl", "inprocess", "--executor",
            "ray", "--ray-address", ray_cluster, "--workers", "2", "--json"]  # fmt: skip
    driver = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=ctrl_c_works)  # fmt: skip
    # Interrupt once two questions are waiting on their sub-calls (their root calls spent).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        asked = {question_of(b) for b in list(server.requests) if len(b["messages"]) == 1}
        if len(asked) >= 2:
            break
        time.sleep(0.05)
    interrupted = time.monotonic()
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=60)
    assert time.monotonic() - interrupted < 30  # not after the sub-calls' 60 s
    assert driver.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["stopped"] == "interrupted" and summary["not_run"] == 8
    rows = batch_results(out)
    cancelled = [r for r in rows if r["status"] == "cancelled"]
    assert len(cancelled) == 2 and {r["id"] for r in cancelled} == asked
    # Cancelled on their workers, they handed back what they had spent: the root call.
    assert all(r["usage"]["total"]["calls"] >= 1 for r in cancelled)
    assert all(f":{os.getpid()}" not in r["worker"] for r in cancelled)
