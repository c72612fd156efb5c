"""How the embedded model performs on this machine: raw speed, prefix-cache reuse of the root
conversation, and needle-in-a-haystack accuracy and time at several context sizes.

    python benchmarks/local_model.py                          # all three parts
    python benchmarks/local_model.py --skip-needles           # speed only
    python benchmarks/local_model.py --sizes 100k,1m --cases 5 --json out.json

Tables print as Markdown. Times are wall clock on whatever else the machine is doing, so run
it on a quiet machine (and with `nice` on a shared one) to compare numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deeprlm import RLM
from deeprlm.errors import DeepRLMError, LimitError
from deeprlm.lm.llama import LlamaCppLM, available_cores
from deeprlm.local.models import local_lm
from deeprlm.trace.events import LMCallEnded
from deeprlm_bench.tasks.niah import hidden_fact

DEPTHS = (0.05, 0.3, 0.5, 0.7, 0.95)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def show(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Prints a Markdown table, numbers right-aligned, ready to paste into a report."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    left = [h in ("query", "answer", "status") for h in columns]

    def line(values: list[str]) -> str:
        padded = [
            v.ljust(w) if is_left else v.rjust(w)
            for v, w, is_left in zip(values, widths, left, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ("-" if is_left else ":") for w, is_left in zip(widths, left, strict=True)
    )
    print(f"\n{title}\n\n{line(columns)}\n|{rule}|")
    for row in cells:
        print(line(row))
    print(flush=True)


# --- speed ------------------------------------------------------------------------------


def speed(lm: LlamaCppLM) -> dict[str, float]:
    """Prompt and generation tokens per second on a context of its own (nothing cached)."""
    probe = lm.for_role("speed")
    probe.complete([{"role": "user", "content": "Hi."}], max_tokens=1)  # load outside timing
    text = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(150))
    started = time.perf_counter()
    read = probe.complete([{"role": "user", "content": text}], max_tokens=1)
    prompt_s = time.perf_counter() - started
    evaluated = read.input_tokens - read.cached_tokens
    started = time.perf_counter()
    story = probe.complete(
        [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        max_tokens=128,
    )
    gen_s = time.perf_counter() - started
    return {
        "prompt_tokens": evaluated,
        "prompt_s": round(prompt_s, 2),
        "prompt_tok_s": round(evaluated / prompt_s, 1),
        "gen_tokens": story.output_tokens,
        "gen_s": round(gen_s, 2),
        "gen_tok_s": round(story.output_tokens / gen_s, 1),
    }


# --- needles ----------------------------------------------------------------------------


@dataclass
class Turn:
    purpose: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    seconds: float


@dataclass
class Case:
    chars: int
    depth: float
    query: str
    expected: str
    answer: str = ""
    right: bool = False
    seconds: float = 0.0
    iterations: int = 0
    status: str = ""
    turns: list[Turn] = field(default_factory=list)

    def tokens(self, *purposes: str) -> tuple[int, int]:
        picked = [t for t in self.turns if t.purpose in purposes]
        return sum(t.input_tokens for t in picked), sum(t.output_tokens for t in picked)


def run_case(lm: LlamaCppLM, chars: int, depth: float, seed: int, settings: dict[str, Any]) -> Case:
    example = hidden_fact(chars, depth, seed)
    case = Case(chars, depth, example.query, example.answer)

    def on_event(event: object) -> None:
        if isinstance(event, LMCallEnded) and event.error is None:
            case.turns.append(
                Turn(
                    event.purpose,
                    event.input_tokens,
                    event.cached_tokens,
                    event.output_tokens,
                    event.duration_s,
                )
            )

    started = time.perf_counter()
    try:
        result = RLM(lm, on_event=on_event, **settings).run(example.query, example.text)
        case.answer, case.iterations, case.status = result.answer, result.iterations, result.status
    except LimitError as err:
        case.answer, case.status = err.partial_answer, f"limit: {err.limit}"
    except DeepRLMError as err:
        case.answer, case.status = "", f"error: {err}"
    case.seconds = round(time.perf_counter() - started, 1)
    case.right = example.answer.lower() in case.answer.lower()
    return case


def needle_tables(cases: list[Case]) -> None:
    rows = []
    for c in cases:
        root_in, root_out = c.tokens("root", "forced")
        sub_in, sub_out = c.tokens("sub")
        rows.append(
            [
                f"{c.chars:,}",
                f"{c.depth:.0%}",
                "right" if c.right else "wrong",
                c.seconds,
                c.iterations,
                f"{root_in:,}/{root_out:,}",
                f"{sub_in:,}/{sub_out:,}",
                c.status,
                c.answer[:40].replace("\n", " "),
            ]
        )
    show(
        "Needle in a haystack (tokens are prompt/generated)",
        ["chars", "depth", "result", "s", "turns", "root tokens", "sub tokens", "status", "answer"],
        rows,
    )
    summary = []
    for chars in sorted({c.chars for c in cases}):
        group = [c for c in cases if c.chars == chars]
        right = sum(c.right for c in group)
        summary.append(
            [
                f"{chars:,}",
                f"{right}/{len(group)}",
                f"{right / len(group):.0%}",
                round(statistics.median(c.seconds for c in group), 1),
                max(c.seconds for c in group),
            ]
        )
    show("Needle summary per size", ["chars", "right", "accuracy", "median s", "max s"], summary)


def cache_table(cases: list[Case]) -> None:
    """The root's prompt tokens served from cache, by turn number across all runs. `reused`
    compares the cached tokens with all the previous turn left in the cache (its prompt and
    its reply): 100% means the turn evaluated only what was new."""
    by_turn: dict[int, list[tuple[Turn, Turn | None]]] = {}
    for c in cases:
        roots = [t for t in c.turns if t.purpose in ("root", "forced")]
        for number, turn in enumerate(roots, 1):
            before = roots[number - 2] if number > 1 else None
            by_turn.setdefault(number, []).append((turn, before))
    rows = []
    for number, pairs in sorted(by_turn.items()):
        turns = [t for t, _ in pairs]
        prompt = sum(t.input_tokens for t in turns)
        cached = sum(t.cached_tokens for t in turns)
        left = sum(b.input_tokens + b.output_tokens for _, b in pairs if b is not None)
        rows.append(
            [
                number,
                len(turns),
                round(prompt / len(turns)),
                round(cached / len(turns)),
                round((prompt - cached) / len(turns)),
                f"{cached / prompt:.0%}" if prompt else "-",
                f"{min(cached, left) / left:.0%}" if left else "-",
                round(statistics.median(t.seconds for t in turns), 1),
            ]
        )
    every = [t for pairs in by_turn.values() for t, _ in pairs]
    later = [t for n, pairs in by_turn.items() if n > 1 for t, _ in pairs]
    for label, group in (("all", every), ("2+", later)):
        total = sum(t.input_tokens for t in group)
        if total:
            share = sum(t.cached_tokens for t in group) / total
            rows.append([label, len(group), "", "", "", f"{share:.0%}", "", ""])
    show(
        "Root prompt tokens served from the prefix cache, per root turn (means per call)",
        ["turn", "calls", "prompt", "cached", "new", "cached share", "reused", "median s"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1m,4m", help="context sizes in characters")
    parser.add_argument("--cases", type=int, default=5, help="cases per size (depths cycle)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-iterations", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per question")
    parser.add_argument("--repl", default=None, help="REPL kind (default: the library's)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-needles", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)

    lm = local_lm()
    report: dict[str, Any] = {"model": lm.name, "cores": available_cores()}
    print(f"model {lm.name}, {available_cores()} cores, window {lm.context_window:,} tokens")
    if not args.skip_speed:
        numbers = speed(lm)
        report["speed"] = numbers
        show(
            "Speed",
            ["prompt tokens", "s", "prompt tok/s", "generated", "s", "gen tok/s"],
            [list(numbers.values())],
        )
    if not args.skip_needles:
        settings: dict[str, Any] = {
            "max_iterations": args.max_iterations,
            "timeout_s": args.timeout,
        }
        if args.repl:
            settings["repl"] = args.repl
        cases = []
        for size_index, size in enumerate(parse_size(s) for s in args.sizes.split(",")):
            for i in range(args.cases):
                depth = DEPTHS[i % len(DEPTHS)]
                seed = args.seed * 1000 + size_index * 100 + i
                case = run_case(lm, size, depth, seed, settings)
                cases.append(case)
                mark = "right" if case.right else "wrong"
                print(
                    f"{size:>9,} chars  depth {depth:4.0%}  {mark}  {case.seconds:6.1f}s  "
                    f"{case.query}  -> {case.answer[:60]!r}",
                    file=sys.stderr,
                    flush=True,
                )
        needle_tables(cases)
        cache_table(cases)
        report["needles"] = [asdict(c) for c in cases]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
