"""What the sandbox costs next to the in-process REPL.

    .venv/bin/python benchmarks/sandbox.py [--cells 300] [--calls 200] [--sizes 0.4,4,40]

Rows:
- empty cell: one `pass` cell, host to worker and back (median and 95th percentile).
- llm_query round trip: one sub-call from the code to a host that answers at once, the
  channel's whole cost (measured over many calls in one cell).
- llm_query via a local server: a sub-call through the engine and the OpenAI adapter to a
  fake chat server on 127.0.0.1 that answers at once (the server runs in this process).
- llm_batch of 100: one batch of 100 prompts, a single request on the channel.
- load N MB: `start()` with an N MB text context (worker start, isolation, context load)
  plus a first cell reading `len(context)`; and the worker's memory above a worker holding
  an empty context, as a multiple of the context's size.

Targets: an empty cell round trip <= 10 ms; a 40 MB context loaded in under 1 s with
about one extra copy of memory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deeprlm import RLM
from deeprlm.repl import REPL, make_repl
from deeprlm.repl.base import REPLSettings
from deeprlm.repl.sandbox import SandboxREPL
from deeprlm.trace.events import CellEnded

# The fake chat server is test support (tests/fake_server.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_server import FakeChatServer, FakeReply, last_user_text

KINDS = ("inprocess", "sandbox")


class InstantHost:
    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        return "ok"

    async def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return ["ok"] * len(prompts)

    async def rlm_query(self, query: str, context: Any = None) -> str:
        return "ok"

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        return ["ok"] * len(pairs)


async def started(kind: str, context: Any) -> REPL:
    repl = make_repl(kind)
    await repl.start(context, InstantHost(), REPLSettings())
    return repl


async def cell_times(kind: str, code: str, count: int) -> list[float]:
    repl = await started(kind, "context")
    try:
        await repl.run(code)  # warm: the first cell compiles, imports, pages in
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            cell = await repl.run(code)
            times.append(time.perf_counter() - t0)
            assert cell.error is None, cell.error
        return times
    finally:
        await repl.close()


async def per_call(kind: str, calls: int) -> float:
    code = f"for _ in range({calls}):\n    llm_query('x')"
    times = await cell_times(kind, code, 5)
    return statistics.median(times) / calls


async def load(kind: str, megabytes: float) -> tuple[float, float | None]:
    """Seconds to start and read `len(context)`; worker memory over an empty worker (MB)."""
    context = "abcdefghij" * int(megabytes * 100_000)
    t0 = time.perf_counter()
    repl = await started(kind, context)
    cell = await repl.run("len(context)")
    elapsed = time.perf_counter() - t0
    assert cell.output.strip() == str(len(context)), cell
    extra = None
    if isinstance(repl, SandboxREPL):
        empty = await started(kind, "")
        extra = (worker_rss(repl) - worker_rss(empty)) / 1e6
        await empty.close()
    await repl.close()
    return elapsed, extra


def worker_rss(repl: SandboxREPL) -> int:
    """The resident memory of the process running the code: the first process of the
    worker's pid namespace, the only child of the supervisor the host started."""
    worker = repl._worker
    assert worker is not None
    pid = worker.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pid = int(f.read().split()[0])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def via_server(kind: str, calls: int) -> float:
    def responder(body: dict[str, Any]) -> FakeReply:
        if body["model"] == "sub":
            return FakeReply(text="ok")
        if last_user_text(body).startswith("Query:"):
            code = f"for _ in range({calls}):\n    llm_query('x')"
            return FakeReply(text=f"```repl\n{code}\n```")
        return FakeReply(text="FINAL(done)")

    with FakeChatServer(responder, record=False) as server:
        rlm = RLM("openai/root", "openai/sub", base_url=server.url, api_key="x", repl=kind)
        result = rlm.run("q", "context")
    cell = result.trace.of_type(CellEnded)[0]
    return cell.duration_s / calls


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--sizes", default="0.4,4,40")
    args = parser.parse_args()

    rows: list[tuple[str, str, str, str]] = []
    empty = {k: asyncio.run(cell_times(k, "pass", args.cells)) for k in KINDS}
    rows.append(
        (
            "empty cell (median / p95)",
            *(
                f"{ms(statistics.median(t))} / {ms(statistics.quantiles(t, n=20)[-1])}"
                for t in empty.values()
            ),
            "<= 10 ms",
        )
    )
    call = {k: asyncio.run(per_call(k, args.calls)) for k in KINDS}
    rows.append(("llm_query round trip", *(ms(call[k]) for k in KINDS), ""))
    served = {k: via_server(k, 50) for k in KINDS}
    rows.append(("llm_query via a local server", *(ms(served[k]) for k in KINDS), ""))
    batch = {k: asyncio.run(cell_times(k, "llm_batch(['x'] * 100)", 20)) for k in KINDS}
    rows.append(("llm_batch of 100", *(ms(statistics.median(batch[k])) for k in KINDS), ""))
    for size in (float(s) for s in args.sizes.split(",")):
        results = {k: asyncio.run(load(k, size)) for k in KINDS}
        extra = results["sandbox"][1]
        memory = f", +{extra:.0f} MB ({extra / size:.2f}x)" if extra is not None else ""
        rows.append(
            (
                f"load {size:g} MB + len(context)",
                f"{results['inprocess'][0]:.3f} s",
                f"{results['sandbox'][0]:.3f} s{memory}",
                "< 1 s at 40 MB" if size >= 40 else "",
            )
        )

    header = ("", "inprocess", "sandbox", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
