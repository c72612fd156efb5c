"""Token and USD budgets under concurrency, as the provider counts them.

A local OpenAI-compatible server (in a thread of this process) answers the root, whose code
sends one `llm_batch` of 200 sub-calls of about 3,000 prompt tokens each, far more than the
budget allows; each reply takes 50 ms and is about 50 tokens. The server counts every call
it answers and the tokens it bills for them. For each concurrency and each kind of budget
the table shows what the server served against what deeprlm reported, and the overshoot
(served beyond the budget; the goal is 0).

    .venv/bin/python benchmarks/budgets.py [--concurrency 1,16,64] [--items 200]
        [--max-tokens 300000] [--max-usd 3] [--reply-cap 256]

Columns: sent (requests the server received), served (replies it sent), refused (batch items
that came back as a budget error), peak (sub-calls in flight at once), tokens and USD as
the server counted them, as deeprlm reported them, and the overshoot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from deeprlm import RLM, LimitError, Price
from deeprlm.trace.events import Event, LMCallEnded, LMCallStarted

# The fake chat server is test support (tests/fake_server.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_server import FakeChatServer, FakeReply, last_user_text

PRICE = Price(input=10.0, output=40.0)  # USD per million tokens
PROMPT_CHARS = 12_000
REPLY = "The passage mentions nothing about the question; no relevant facts here. " * 3
DELAY_S = 0.05


def root_code(items: int) -> str:
    return (
        "```repl\n"
        f"r = llm_batch(['x' * {PROMPT_CHARS} + str(i) for i in range({items})])\n"
        "refused = sum(a.startswith('Error: ') and 'budget reached' in a for a in r)\n"
        "answer['content'] = str(refused)\n"
        "```"
    )


def peak_in_flight(events: list[Event]) -> int:
    running = peak = 0
    for event in events:
        if isinstance(event, LMCallStarted) and event.purpose == "sub":
            running += 1
            peak = max(peak, running)
        elif isinstance(event, LMCallEnded) and event.purpose == "sub":
            running -= 1
    return peak


def run_case(kind: str, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    def responder(body: dict[str, Any]) -> Any:
        if last_user_text(body).startswith("x"):
            return FakeReply(text=REPLY, delay_s=DELAY_S)
        return root_code(args.items)

    budget: dict[str, Any] = (
        {"max_tokens": args.max_tokens} if kind == "tokens" else {"max_usd": args.max_usd}
    )
    with FakeChatServer(responder) as server:
        rlm = RLM(
            "openai/m",
            base_url=server.url,
            prices={"m": PRICE},
            max_concurrency=concurrency,
            max_reply_tokens=args.reply_cap,
            repl="inprocess",
            **budget,
        )
        started = time.perf_counter()
        try:
            result = rlm.run("q", "ctx")
        except LimitError as err:
            result = err.result
        wall = time.perf_counter() - started
        served = server.counted
        sent = len(server.requests)
    served_usd = PRICE.cost(served.prompt_tokens, served.completion_tokens)
    reported = result.usage.total
    overshoot = (
        max(0, served.tokens - args.max_tokens)
        if kind == "tokens"
        else max(0.0, served_usd - args.max_usd)
    )
    return {
        "budget": f"{args.max_tokens:,} tok" if kind == "tokens" else f"${args.max_usd:.2f}",
        "conc": concurrency,
        "sent": sent,
        "served": served.calls,
        "refused": int(result.answer or 0),
        "peak": peak_in_flight(result.trace.events),
        "served tok": f"{served.tokens:,}",
        "reported tok": f"{reported.tokens:,}",
        "served $": f"{served_usd:.4f}",
        "reported $": f"{reported.usd:.4f}",
        "overshoot": f"{overshoot:,}" if kind == "tokens" else f"${overshoot:.4f}",
        "wall s": f"{wall:.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=300_000)
    parser.add_argument("--max-usd", type=float, default=3.0)
    parser.add_argument("--reply-cap", type=int, default=256)
    args = parser.parse_args()
    rows = [
        run_case(kind, int(c), args)
        for kind in ("tokens", "usd")
        for c in args.concurrency.split(",")
    ]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |", flush=True)


if __name__ == "__main__":
    main()
