"""Resuming a run that stopped early: a crash, a kill, a limit.

A resumed run is the same question asked again, with the same context, settings and run
token, through the same sub-call cache. Every model call the first run made is then a
cache hit: the root's turns come back as they were, the cells run again and rebuild the
REPL (their sub-calls are hits too), and at the first call the cache does not hold, the
run is where the first one stopped and goes on live. The limit that stopped it is raised.

What replays comes from the cache, not from the trace: the trace clips long texts (a
sub-call's prompt to 2,000 characters) and is meant for reading, while the cache holds
every reply in full under a key made of its full request. Replay is therefore by content,
not by position: a cell whose output differs the second time (it read the clock, say)
makes the next turn a miss, and the run goes on live from there rather than feeding the
model a reply to a conversation it is no longer in. A run made without a cache has
nothing to replay from and cannot be resumed: that is said in one line.

The prompts must come out the same for the replay to hit, so a resumed run's prompts are
made with the settings the first run's were: a raised iteration limit shows only from
the turn where the first run stopped (`prompt_iterations`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from deeprlm.cache import Cache
from deeprlm.errors import InputError
from deeprlm.settings import Settings
from deeprlm.trace.events import RunEnded, RunStarted
from deeprlm.trace.jsonl import read_jsonl

# The setting each kind of stop raises; doubled unless the caller already set it higher.
RAISED = {
    "iterations": "max_iterations",
    "sub_calls": "max_sub_calls",
    "time": "timeout_s",
    "tokens": "max_tokens",
    "usd": "max_usd",
}


@dataclass(frozen=True)
class Recorded:
    """What a trace and its cache say about the run to resume."""

    trace: str
    token: str
    cache_path: str
    sampled: bool
    query: str
    settings: dict[str, Any]
    context_sha256: str
    prompt_iterations: int
    status: str  # how the root ended; "killed" when the trace stops before its end
    stopped_by: str | None  # a key of RAISED
    record: dict[str, Any]  # the cache's record of the run: specs, context sources


def read(trace: str | Path, cache: Cache | None = None) -> Recorded:
    """Reads what resuming needs; raises InputError with one line when it cannot be done."""
    path = Path(trace)
    try:
        events, _ = read_jsonl(path)
    except OSError as err:
        raise InputError(f"cannot read the trace {path}: {err.strerror or err}") from None
    root = next((e for e in events if isinstance(e, RunStarted) and e.parent_id is None), None)
    if root is None:
        raise InputError(f"{path} holds no run to resume (no root run_started event)")
    if not root.cache.get("run"):
        raise InputError(
            f"{path}: that run was made without a sub-call cache, so there is nothing to "
            "replay its calls from; run it with --cache to make it resumable"
        )
    cache_path = str(root.cache.get("path", ""))
    if cache is None or str(cache.path) != cache_path:
        cache = Cache(cache_path, sampled=bool(root.cache.get("sampled")))
    if not Path(cache_path).exists():
        raise InputError(f"{path}: its cache {cache_path} is gone; nothing to replay from")
    record = cache.get_run(str(root.cache["run"]))
    if record is None:
        raise InputError(
            f"{path}: the cache {cache_path} holds no record of this run (moved aside as "
            "damaged, or another file?)"
        )
    ended = next((e for e in events if isinstance(e, RunEnded) and e.id == root.id), None)
    status = ended.status if ended is not None else "killed"
    stopped_by = None
    if ended is not None and ended.status == "limit":
        stopped_by = ended.limit or None
    elif ended is not None and ended.status == "forced":
        stopped_by = "iterations"
    settings = dict(root.settings)
    return Recorded(
        trace=str(path),
        token=str(root.cache["run"]),
        cache_path=cache_path,
        sampled=bool(root.cache.get("sampled")),
        query=str(record.get("query", root.query)),
        settings=settings,
        context_sha256=str(root.context.get("sha256", "")),
        prompt_iterations=int(
            root.cache.get("prompt_iterations", settings.get("max_iterations", 0)) or 0
        ),
        status=status,
        stopped_by=stopped_by,
        record=record,
    )


def recorded_settings(recorded: Recorded) -> dict[str, Any]:
    """The first run's settings, as keyword arguments this version knows."""
    known = {f.name for f in fields(Settings)}
    return {k: v for k, v in recorded.settings.items() if k in known}


def raised(settings: Settings, recorded: Recorded) -> Settings:
    """`settings` with the limit that stopped the first run raised: doubled from what the
    first run had, unless `settings` already holds more."""
    if recorded.stopped_by not in RAISED:
        return settings
    name = RAISED[recorded.stopped_by]
    before = recorded.settings.get(name)
    now = getattr(settings, name)
    if before is None or (now is not None and now > before):
        return settings
    return replace(settings, **{name: type(before)(before * 2)})


def note(recorded: Recorded, settings: Settings) -> str:
    what = {"killed": "was interrupted"}.get(recorded.status, f"ended: {recorded.status}")
    text = f"resumed from {recorded.trace} (the run {what}); its calls replay from the cache"
    if recorded.stopped_by in RAISED:
        name = RAISED[recorded.stopped_by]
        text += f"; {name} raised to {getattr(settings, name)}"
    return text
