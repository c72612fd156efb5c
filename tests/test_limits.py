"""Budgets shared by the run tree: each one ends the run with a typed error that carries
the partial answer and the usage so far."""

from __future__ import annotations

import asyncio
import time

import pytest

from deeprlm import (
    RLM,
    Completion,
    CostLimitError,
    LimitError,
    Price,
    ScriptedLM,
    SubCallLimitError,
    TimeLimitError,
    TokenLimitError,
)
from deeprlm.trace.events import BatchEnded, LMCallEnded, LMCallStarted, RunEnded

from conftest import outputs, repl


def test_sub_call_budget_stops_the_run_even_if_the_code_swallows_the_error():
    code = (
        "answer['content'] = 'half done'\n"
        "for i in range(10):\n"
        "    try:\n"
        "        llm_query(str(i))\n"
        "    except Exception:\n"
        "        pass\n"
    )
    root = ScriptedLM([repl(code), "FINAL(never)"])
    sub = ScriptedLM(lambda m: "ok", name="sub")
    with pytest.raises(SubCallLimitError) as caught:
        RLM(root, sub, max_sub_calls=3).run("q", "ctx")
    err = caught.value
    assert err.partial_answer == "half done"
    assert err.usage.by_model["sub"].calls == 3
    assert err.result.status == "limit"
    assert err.result.sub_calls == 3
    assert len(root.calls) == 1  # no further root turn after the limit


def test_sub_call_budget_inside_a_batch_stops_the_batch():
    code = "answer['content'] = 'before'\nllm_batch([str(i) for i in range(20)])"
    root = ScriptedLM([repl(code), "FINAL(never)"])
    sub = ScriptedLM(["ok"], name="sub", delay=5.0)
    started = time.monotonic()
    with pytest.raises(SubCallLimitError) as caught:
        RLM(root, sub, max_sub_calls=5).run("q", "ctx")
    # The batch needs more than the budget leaves: it is refused before any call is made,
    # and the run ends at once with what it had.
    assert time.monotonic() - started < 3
    assert "a batch of 20 needs more than the 5 sub-calls left" in str(caught.value)
    trace = caught.value.result.trace
    assert [e for e in trace.of_type(LMCallEnded) if e.purpose == "sub"] == []
    assert trace.of_type(BatchEnded) == []
    assert sub.calls == []
    assert caught.value.result.sub_calls == 0
    assert caught.value.partial_answer == "before"
    assert len(root.calls) == 1


def test_a_token_budget_reserves_each_calls_worst_case():
    """Each call reserves its prompt plus its reply cap; near the end the cap shrinks to
    what is left, then a call that cannot fit is refused: the total never passes."""
    big = Completion(text=repl("print(1)"), model="m", input_tokens=600, output_tokens=10)
    root = ScriptedLM([big] * 50)
    with pytest.raises(TokenLimitError) as caught:
        RLM(root, max_tokens=10_000).run("q", "ctx")
    err = caught.value
    assert err.usage.total.tokens <= 10_000
    assert err.usage.total.calls == len(root.calls)
    caps = [e.max_tokens for e in err.result.trace.of_type(LMCallStarted)]
    assert caps[0] == 8_192  # the default cap under a budget
    assert caps == sorted(caps, reverse=True) and caps[-1] < 1_000
    assert "the next call needs about" in str(err)
    assert err.partial_answer == repl("print(1)")


def test_cost_budget_uses_the_price_table():
    reply = Completion(text=repl("print(1)"), model="pricey", input_tokens=1_000_000)
    root = ScriptedLM([reply] * 5, name="pricey")
    rlm = RLM(root, prices={"pricey": Price(input=2.0, output=8.0)}, max_usd=5.0)
    with pytest.raises(CostLimitError) as caught:
        rlm.run("q", "ctx")
    # Each call costs $2; the third would make $6, so it is refused before it is sent.
    assert caught.value.usage.total.usd == pytest.approx(4.0)
    assert len(root.calls) == 2


def test_provider_reported_cost_wins_over_the_table():
    reply = Completion(text="FINAL(x)", model="gpt-5", input_tokens=10, cost_usd=0.5)
    result = RLM(ScriptedLM([reply])).run("q", "ctx")
    assert result.usage.total.usd == 0.5


def test_timeout_interrupts_a_running_cell():
    root = ScriptedLM([repl("answer['content'] = 'looping'\nwhile True:\n    pass"), "FINAL(x)"])
    started = time.monotonic()
    with pytest.raises(TimeLimitError) as caught:
        RLM(root, timeout_s=1.0).run("q", "ctx")
    assert time.monotonic() - started < 10  # interrupted, not waited for
    assert caught.value.partial_answer == "looping"
    ended = caught.value.result.trace.of_type(RunEnded)
    assert ended[-1].status == "limit"


def test_timeout_interrupts_a_slow_model_call():
    class Slow(ScriptedLM):
        async def acomplete(self, messages, **kwargs):
            await asyncio.sleep(60)
            return await super().acomplete(messages, **kwargs)

    started = time.monotonic()
    with pytest.raises(TimeLimitError):
        RLM(Slow(["FINAL(x)"]), timeout_s=0.5).run("q", "ctx")
    assert time.monotonic() - started < 5


def test_timeout_interrupts_a_cell_waiting_on_slow_sub_calls():
    root = ScriptedLM([repl("print(llm_batch(['a', 'b']))"), "FINAL(x)"])
    sub = ScriptedLM(["late"], delay=60)
    started = time.monotonic()
    with pytest.raises(TimeLimitError):
        RLM(root, sub, timeout_s=0.5).run("q", "ctx")
    assert time.monotonic() - started < 5


def test_cell_timeout_stops_the_cell_and_the_run_goes_on():
    root = ScriptedLM([repl("x = 1\nwhile True:\n    pass"), repl("print(x + 1)"), "FINAL(ok)"])
    result = RLM(root, cell_timeout_s=0.5).run("q", "ctx")
    assert (
        "TimeoutError: the cell ran longer than 0.5s and was stopped"
        in root.calls[1][-1]["content"]
    )
    assert outputs(root.calls[2][-1]["content"]) == ["2"]  # x survived the stop
    assert result.answer == "ok"


def test_limits_in_a_child_run_end_the_whole_tree():
    def policy(messages):
        if "Query: child" in messages[1]["content"]:
            return repl("while True:\n    llm_query('again')")
        return repl("rlm_query('child', 'text')")

    root = ScriptedLM(policy)
    with pytest.raises(SubCallLimitError) as caught:
        RLM(root, ScriptedLM(["ok"]), max_sub_calls=4).run("q", "ctx")
    ended = caught.value.result.trace.of_type(RunEnded)
    # The child stopped at the limit, and so did the root: no second root turn.
    assert [(e.status, e.sub_calls) for e in ended] == [("limit", 3), ("limit", 1)]
    assert caught.value.result.sub_calls == 4
    assert sum(1 for m in root.calls if "Query: child" not in m[1]["content"]) == 1


def test_limit_errors_share_a_base_class():
    for cls in (TokenLimitError, CostLimitError, TimeLimitError, SubCallLimitError):
        assert issubclass(cls, LimitError)
