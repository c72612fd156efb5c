"""How long the trace viewer takes on big traces: building the page, and opening it.

    python benchmarks/viewer.py [--sizes 1000 10000 100000] [--keep DIR]

For each size it writes a synthetic trace of that many events shaped like a real run tree
(root turns whose cells fire batches of sub-calls at a concurrency of 16, and child runs
doing the same), with sub-call prompts of about 1.5K characters, so 100K events make a file
of about 100 MB. It then times `build_page` (read, fold, write), and, in headless Chromium,
loading the page until it is drawn, and finding its last sub-call in the tree (what a
click on the timeline does). Prints one table.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deeprlm.trace.viewer import build_page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BATCH = 200  # sub-calls per batch, fewer in small traces
CONCURRENCY = 16
CHILD_EVERY = 3  # every third root turn starts a child run that runs one batch


class Texts:
    """Slices of one random text, so 100 MB of trace costs no time to invent."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        words = ["alpha", "river", "ledger", "cat", "invoice", "the", "of", "42", "query"]
        self.base = " ".join(rng.choice(words) for _ in range(40_000))
        self.rng = rng

    def take(self, size: int) -> str:
        start = self.rng.randrange(0, len(self.base) - size)
        return self.base[start : start + size]


def synthetic_events(target: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """About `target` events of one run tree, in the order an engine would write them."""
    texts = Texts(seed)
    size = max(10, min(BATCH, target // 10))
    counter = 0
    t = 0.0
    emitted = 0

    def new_id(prefix: str) -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}{counter}"

    def event(type_: str, t: float, id: str, run: str, parent: str | None, **kw: Any):
        nonlocal emitted
        emitted += 1
        return {"type": type_, "t": round(t, 6), "id": id, "run_id": run, "parent_id": parent, **kw}

    def lm_call(run: str, parent: str, purpose: str, start: float, dur: float, prompt: str):
        call = new_id("call")
        model = "gpt-5-mini" if purpose == "root" else "gpt-5-nano"
        reply = texts.take(400 if purpose == "sub" else 900)
        yield event("lm_call_started", start, call, run, parent, purpose=purpose, model=model)
        yield event(
            "lm_call_ended",
            start + dur,
            call,
            run,
            parent,
            purpose=purpose,
            model=model,
            start=start,
            duration_s=dur,
            prompt=prompt,
            prompt_chars=len(prompt),
            reply=reply,
            input_tokens=len(prompt) // 4,
            output_tokens=len(reply) // 4,
            usd=round(len(prompt) * 1e-8, 8),
        )

    def batch(run: str, cell: str, start: float) -> Iterator[dict[str, Any]]:
        b = new_id("batch")
        yield event("batch_started", start, b, run, cell, kind="llm", size=size)
        # A pool of CONCURRENCY workers, each taking the next sub-call when free.
        free = [start] * CONCURRENCY
        calls = []
        for _ in range(size):
            slot = min(range(CONCURRENCY), key=free.__getitem__)
            begin = free[slot]
            dur = 0.2 + (counter % 17) * 0.05
            free[slot] = begin + dur
            calls.append((begin, dur))
        for begin, dur in calls:  # written in start order; ends interleave in a real file
            yield from lm_call(run, b, "sub", begin, dur, texts.take(1500))
        end = max(free)
        yield event(
            "batch_ended",
            end,
            b,
            run,
            cell,
            kind="llm",
            size=size,
            start=start,
            duration_s=end - start,
        )

    def turn(run: str, number: int, start: float) -> Iterator[dict[str, Any]]:
        nonlocal t
        yield from lm_call(run, run, "root", start, 2.0, texts.take(600))
        cell = new_id("cell")
        cell_start = start + 2.1
        code = "parts = llm_batch([f'summarize {c}' for c in chunks])\nprint(parts[:3])"
        yield event("cell_started", cell_start, cell, run, run, iteration=number, code=code)
        end = cell_start
        for e in batch(run, cell, cell_start + 0.05):
            end = max(end, e["t"])
            yield e
        if run == "root" and number % CHILD_EVERY == 0:
            child = new_id("run")
            yield event(
                "run_started",
                end,
                child,
                child,
                cell,
                depth=1,
                query="look closer",
                model="gpt-5-mini",
            )
            child_end = end + 0.1
            for e in turn(child, 1, end + 0.1):
                child_end = max(child_end, e["t"])
                yield e
            yield from lm_call(child, child, "root", child_end + 0.1, 1.0, "Output: ...")
            yield event(
                "run_ended",
                child_end + 1.2,
                child,
                child,
                cell,
                status="answered",
                answer="closer look done",
                iterations=2,
                wall_s=child_end + 1.2 - end,
            )
            end = child_end + 1.3
        yield event(
            "cell_ended",
            end + 0.05,
            cell,
            run,
            run,
            iteration=number,
            start=cell_start,
            duration_s=end + 0.05 - cell_start,
            output=texts.take(2000),
            output_chars=2000,
        )
        t = end + 0.1

    yield event(
        "run_started",
        0.0,
        "root",
        "root",
        None,
        query="Summarize the ledger",
        model="gpt-5-mini",
        sub_model="gpt-5-nano",
        repl="inprocess",
    )
    number = 0
    while emitted < target - 4:
        number += 1
        yield from turn("root", number, t)
    yield from lm_call("root", "root", "root", t, 1.5, "Output: ...")
    yield event(
        "run_ended",
        t + 1.6,
        "root",
        "root",
        None,
        status="answered",
        answer="The ledger balances.",
        iterations=number + 1,
        wall_s=t + 1.6,
    )


def write_trace(path: Path, target: int) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for event in synthetic_events(target):
            f.write(json.dumps(event, ensure_ascii=False) + "\n")
            count += 1
    return count


def open_in_chromium(pages: list[Path]) -> list[tuple[float, float]]:
    """Seconds to load each page until drawn, and to find and open its last sub-call."""
    from playwright.sync_api import sync_playwright

    timings = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for page_path in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(300_000)
            started = time.perf_counter()
            page.goto(page_path.resolve().as_uri(), wait_until="commit")
            page.wait_for_selector("html[data-ready='1']")
            loaded = time.perf_counter() - started
            # Find the last sub-call in the tree, as a click on its timeline bar does.
            last = page.evaluate(
                "deeprlmViewer.nodes.findLastIndex(n => n.k === 'lm' && n.purpose === 'sub')"
            )
            started = time.perf_counter()
            page.evaluate(f"deeprlmViewer.reveal({last})")
            page.wait_for_selector(f".node[data-i='{last}'] .block")
            expanded = time.perf_counter() - started
            timings.append((loaded, expanded))
            page.close()
        browser.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--keep", type=Path, help="keep the traces and pages in this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="viewer-bench-"))
    folder.mkdir(parents=True, exist_ok=True)

    rows = []
    pages = []
    for size in args.sizes:
        trace = folder / f"trace-{size}.jsonl"
        events = write_trace(trace, size)
        started = time.perf_counter()
        page = build_page(trace)
        build_s = time.perf_counter() - started
        pages.append(page)
        rows.append([events, trace.stat().st_size / 1e6, page.stat().st_size / 1e6, build_s])
    for row, (loaded, expanded) in zip(rows, open_in_chromium(pages), strict=True):
        row += [loaded, expanded]

    header = ["events", "trace MB", "page MB", "build s", "open s", "find call s"]
    print(" | ".join(f"{h:>12}" for h in header))
    print(" | ".join("-" * 12 for _ in header))
    for events, trace_mb, page_mb, build_s, loaded, expanded in rows:
        cells = [
            f"{events:,}",
            f"{trace_mb:.1f}",
            f"{page_mb:.1f}",
            f"{build_s:.2f}",
            f"{loaded:.2f}",
            f"{expanded:.3f}",
        ]
        print(" | ".join(f"{c:>12}" for c in cells))
    if args.keep is None:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
