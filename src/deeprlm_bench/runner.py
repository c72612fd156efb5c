"""Running a benchmark grid: tasks x lengths x examples x methods, into an output folder.

The folder holds `run.json` (what the run compares: models, seed, budget) and
`results.jsonl`, one line per finished example, flushed as it finishes. A run started again
on the same folder skips every example already in `results.jsonl`, so an interrupted run
resumes where it stopped; the grid may grow (more tasks, lengths, methods, a larger n) but
the models, seed and budget may not change, since results under different ones would not
be comparable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError
from deeprlm.lm.base import LM
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.lm.specs import check_spec, resolve_lm
from deeprlm.settings import Settings
from deeprlm.usage import UsageReport
from deeprlm_bench.example import Example, example_seed
from deeprlm_bench.methods import MODEL_FREE, Setup, budget_of, get_method
from deeprlm_bench.methods.common import Outcome
from deeprlm_bench.tasks import get_task
from deeprlm_bench.tasks.codeqa import MIN_TOKENS as CODEQA_MIN
from deeprlm_bench.tasks.multihop import MIN_TOKENS as MULTIHOP_MIN
from deeprlm_bench.tokens import format_length

RESULTS = "results.jsonl"
RUN_INFO = "run.json"
TRACES = "traces"
ANSWER_CHARS = 2_000
MIN_TOKENS = {"multihop": MULTIHOP_MIN, "codeqa": CODEQA_MIN}
# What must match for a folder's results to be comparable with a new run's.
FIXED_FIELDS = ("model", "sub_model", "base_url", "seed", "limits", "window")


@dataclass(frozen=True)
class RunConfig:
    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    methods: tuple[str, ...]
    n: int = 3
    seed: int = 0
    model: str | None = None
    sub_model: str | None = None
    base_url: str | None = None
    # The budget of each example (the `BUDGET` fields, fixed for a results folder) and where
    # the engine runs code.
    settings: Settings = field(default_factory=Settings)
    window: int | None = None  # overrides the model's own window, in tokens
    traces: bool = False  # keep each engine run's trace in DIR/traces/

    def check(self) -> None:
        """Raises InputError on the first thing that cannot run."""
        for name, values in (("tasks", self.tasks), ("lengths", self.lengths),
                             ("methods", self.methods)):  # fmt: skip
            if not values:
                raise InputError(f"no {name} given")
        for task in self.tasks:
            get_task(task)
            minimum = MIN_TOKENS.get(task, 0)
            too_short = [format_length(n) for n in self.lengths if n < minimum]
            if too_short:
                raise InputError(
                    f"{task} needs lengths of at least {format_length(minimum)}; got "
                    f"{', '.join(too_short)}"
                )
        for method in self.methods:
            get_method(method)
        if self.n < 1:
            raise InputError(f"--n must be at least 1, got {self.n}")
        if self.window is not None and self.window < 1:
            raise InputError(f"--window must be positive, got {self.window}")
        if self.needs_model() and not self.model:
            raise InputError("--model is required for methods other than oracle")

    def needs_model(self) -> bool:
        return any(m not in MODEL_FREE for m in self.methods)

    def fixed(self) -> dict[str, Any]:
        data = {**asdict(self), "limits": budget_of(self.settings)}
        return {key: data[key] for key in FIXED_FIELDS}


@dataclass(frozen=True)
class Cell:
    """One grid item: the example (task, length, index) and the method run on it."""

    task: str
    length: int
    index: int
    method: str

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.task, self.length, self.index, self.method)


@dataclass(frozen=True)
class Result:
    task: str
    length: int
    index: int
    method: str
    seed: int
    score: float
    context_tokens: int
    usage: dict[str, dict[str, float]]  # per model: calls, input/output tokens, usd
    tokens_in: int
    tokens_out: int
    usd: float
    wall_s: float
    iterations: int
    sub_calls: int
    answer: str
    gold: str
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def trace_name(cell: Cell) -> str:
    return f"{cell.task}_{format_length(cell.length)}_{cell.index}_{cell.method}.jsonl"


def grid(config: RunConfig) -> list[Cell]:
    """Short lengths first, so every method's results at a length arrive together."""
    return [
        Cell(task, length, index, method)
        for length in sorted(config.lengths)
        for task in config.tasks
        for index in range(config.n)
        for method in config.methods
    ]


def read_results(out: Path) -> list[dict[str, Any]]:
    """Every complete line of results.jsonl; a line cut short by an interrupt is skipped."""
    path = out / RESULTS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _prepare_folder(out: Path, config: RunConfig) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    fixed = config.fixed()
    previous = read_run_info(out)
    for key in FIXED_FIELDS:
        if key in previous and previous[key] != fixed[key]:
            raise InputError(
                f"{out} holds results run with {key}={previous[key]!r}, not "
                f"{fixed[key]!r}; use another --out to compare"
            )
    tasks = list(dict.fromkeys([*previous.get("tasks", []), *config.tasks]))
    lengths = sorted({*previous.get("lengths", []), *config.lengths})
    methods = list(dict.fromkeys([*previous.get("methods", []), *config.methods]))
    info = {**fixed, "tasks": tasks, "lengths": lengths, "methods": methods}
    (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    results = out / RESULTS
    # An interrupted write may have left a partial last line; start the next one afresh.
    if results.exists() and results.stat().st_size:
        with results.open("rb") as handle:
            handle.seek(-1, 2)
            last = handle.read(1)
        if last != b"\n":
            with results.open("a", encoding="utf-8") as handle:
                handle.write("\n")


def read_run_info(out: Path) -> dict[str, Any]:
    """The folder's run.json; empty when it is missing or unreadable."""
    try:
        info = json.loads((out / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def pending(config: RunConfig, out: Path) -> list[Cell]:
    done = {(r["task"], r["length"], r["index"], r["method"]) for r in read_results(out)}
    return [cell for cell in grid(config) if cell.key not in done]


def _models(config: RunConfig) -> tuple[LM, LM]:
    if not config.needs_model():
        placeholder = ScriptedLM([""], name="none")
        return placeholder, placeholder
    assert config.model is not None
    model = resolve_lm(config.model, base_url=config.base_url)
    sub = resolve_lm(config.sub_model, base_url=config.base_url) if config.sub_model else model
    return model, sub


def _usage_fields(usage: UsageReport) -> dict[str, Any]:
    total = usage.total
    return {
        "usage": {
            name: {
                "calls": u.calls,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "usd": u.usd,
            }
            for name, u in usage.by_model.items()
        },
        "tokens_in": total.input_tokens,
        "tokens_out": total.output_tokens,
        "usd": total.usd,
    }


def run_cell(cell: Cell, example: Example, setup: Setup) -> Result:
    """Runs one method on one example. A failure is a result too: score 0, with the error."""
    task = get_task(cell.task)
    started = time.perf_counter()
    try:
        outcome = get_method(cell.method).run(example, setup)
    except Exception as err:  # any failure of one example must not end the grid
        outcome = Outcome("", UsageReport(), error=f"{type(err).__name__}: {err}")
    wall = time.perf_counter() - started
    # A method that could not even try (too long for the window) scores 0 without scoring.
    score = task.score(example, outcome.answer) if outcome.answer else 0.0
    return Result(
        task=cell.task,
        length=cell.length,
        index=cell.index,
        method=cell.method,
        seed=example.seed,
        score=score,
        context_tokens=example.tokens(),
        **_usage_fields(outcome.usage),
        wall_s=round(wall, 3),
        iterations=outcome.iterations,
        sub_calls=outcome.sub_calls,
        answer=outcome.answer[:ANSWER_CHARS],
        gold=str(example.gold)[:ANSWER_CHARS],
        error=outcome.error,
    )


def run(
    config: RunConfig,
    out: Path,
    *,
    on_start: Callable[[int], None] | None = None,
    on_cell: Callable[[Cell], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
    models: tuple[LM, LM] | None = None,
) -> list[Result]:
    """Runs every pending cell of the grid, appending each result as it finishes.
    `models` (root, sub) replaces resolving `config.model`, for callers holding LM objects."""
    config.check()
    if models is None and config.needs_model():
        # Only the spec's form: making the model may load weights, and a finished grid
        # resumed needs none.
        for spec in filter(None, (config.model, config.sub_model)):
            check_spec(spec)
    _prepare_folder(out, config)
    todo = pending(config, out)
    if on_start is not None:
        on_start(len(todo))
    if not todo:
        return []
    model, sub = models or _models(config)
    setup = Setup(model, sub, config.settings, config.window or model.context_window)
    results = []
    with (out / RESULTS).open("a", encoding="utf-8") as handle:
        for cell, example in _with_examples(todo, config.seed):
            if on_cell is not None:
                on_cell(cell)
            cell_setup = setup
            if config.traces:
                (out / TRACES).mkdir(exist_ok=True)
                cell_setup = replace(setup, trace_path=out / TRACES / trace_name(cell))
            result = run_cell(cell, example, cell_setup)
            handle.write(result.to_json() + "\n")
            handle.flush()
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _with_examples(cells: list[Cell], seed: int) -> Iterator[tuple[Cell, Example]]:
    """Each example is generated once for all the methods that run on it in a row."""
    current: tuple[tuple[str, int, int], Example] | None = None
    for cell in cells:
        key = (cell.task, cell.length, cell.index)
        if current is None or current[0] != key:
            task = get_task(cell.task)
            current = (key, task.generate(example_seed(seed, *key), cell.length))
        yield cell, current[1]
