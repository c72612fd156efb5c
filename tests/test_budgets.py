"""Token and USD budgets against a real HTTP server that counts what it serves: they hold
at any concurrency, the usage reported is the usage served, a USD budget needs a price,
and a provider that reports no usage is metered all the same."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from deeprlm import RLM, CostLimitError, InputError, Price, ScriptedLM, TokenLimitError, usage
from deeprlm.budget import Budget
from deeprlm.lm.base import Completion
from deeprlm.settings import Settings
from deeprlm.tokens import TOKENS_PER_MESSAGE
from deeprlm.trace.events import LMCallStarted
from deeprlm.usage import UsageMeter

from conftest import deeprlm, peak_in_flight, repl
from fake_server import FakeReply, last_user_text

PRICE = Price(input=10.0, output=40.0)

BATCH = (
    "r = llm_batch(['x' * 12000 + str(i) for i in range(200)])\n"
    "answered = sum(a == 'ok' for a in r)\n"
    "refused = sum(a.startswith('Error: ') and 'budget reached' in a for a in r)\n"
    "answer['content'] = f'{answered} answered, {refused} refused'\n"
)


def batch_server(chat_server, delay_s: float = 0.2, **reply: object):
    """The root asks for a batch of 200 sub-calls of about 3,000 tokens each."""

    def responder(body):
        if "Query:" in last_user_text(body):
            return repl(BATCH)
        if last_user_text(body).startswith("x"):
            return FakeReply(text="ok", delay_s=delay_s, **reply)
        return "FINAL(done)"

    return chat_server(responder)


def counts(partial: str) -> tuple[int, int]:
    answered, refused = partial.replace(",", "").split()[::2]
    return int(answered), int(refused)


def test_a_token_budget_holds_at_concurrency_64(chat_server):
    server = batch_server(chat_server)
    rlm = RLM(
        "openai/m",
        base_url=server.url,
        max_tokens=300_000,
        max_concurrency=64,
        max_reply_tokens=100,
        repl="inprocess",
    )
    with pytest.raises(TokenLimitError) as caught:
        rlm.run("q", "ctx")
    err = caught.value
    served = server.counted
    assert served.tokens <= 300_000  # not "by one call": not at all
    assert err.usage.total.tokens == served.tokens
    assert err.usage.total.calls == served.calls
    assert err.usage.total.estimated_calls == 0
    answered, refused = counts(err.partial_answer)
    assert answered == served.calls - 1  # every sub-call the server answered was kept
    assert refused == 200 - answered and refused > 0
    assert peak_in_flight(err.result.trace.events, "sub") >= 32


def test_a_usd_budget_holds_at_concurrency_64(chat_server):
    server = batch_server(chat_server)
    rlm = RLM(
        "openai/m",
        base_url=server.url,
        max_usd=3.0,
        max_concurrency=64,
        max_reply_tokens=100,
        prices={"m": PRICE},
        repl="inprocess",
    )
    with pytest.raises(CostLimitError) as caught:
        rlm.run("q", "ctx")
    err = caught.value
    served = server.counted
    served_usd = PRICE.cost(served.prompt_tokens, served.completion_tokens)
    assert served_usd <= 3.0
    assert err.usage.total.usd == pytest.approx(served_usd)
    assert err.usage.total.calls == served.calls
    answered, refused = counts(err.partial_answer)
    assert answered == served.calls - 1 and refused > 0
    assert peak_in_flight(err.result.trace.events, "sub") >= 32


def test_calls_that_fit_once_others_settle_wait_instead_of_being_refused(chat_server):
    """Worst cases (8,192-token reply caps) let only a few calls be in flight at once, but
    the real usage of all of them fits: none is refused."""

    def responder(body):
        text = last_user_text(body)
        if "Query:" in text:
            return repl("r = llm_batch(['y' * 3000] * 20)\nprint(sorted(set(r)))")
        if text.startswith("y"):
            return FakeReply(text="ok", delay_s=0.05)
        return "FINAL(done)"

    server = chat_server(responder)
    rlm = RLM("openai/m", base_url=server.url, max_tokens=60_000, max_concurrency=20)
    result = rlm.run("q", "ctx")
    assert result.answer == "done"
    assert "['ok']" in last_user_text(server.requests[-1])
    assert result.usage.total.tokens == server.counted.tokens <= 60_000
    capped = [r for r in server.requests if last_user_text(r).startswith("y")]
    assert all(r["max_tokens"] <= 8_192 for r in capped)


def test_a_refused_root_call_ends_the_run_with_what_it_had(chat_server):
    server = chat_server(lambda body: repl("answer['content'] = 'so far'\nprint(1)"))
    with pytest.raises(TokenLimitError) as caught:
        RLM("openai/m", base_url=server.url, max_tokens=2_000).run("q", "ctx")
    err = caught.value
    assert err.partial_answer == "so far"
    assert err.usage.total.tokens == server.counted.tokens <= 2_000
    assert err.result.status == "limit"


# --- a USD budget needs a price -------------------------------------------------------------


def test_a_usd_budget_for_an_unpriced_model_is_refused_at_start(chat_server, tmp_path):
    server = chat_server(lambda body: "FINAL(free?)")
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    common = ["ask", "q", "-c", str(doc), "--base-url", server.url, "--quiet", "--json"]
    done = deeprlm(*common, "--model", "openai/qwen-local", "--max-usd", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "needs the price of model 'qwen-local'" in lines[0]
    assert "--price qwen-local=IN,OUT" in lines[0] and "--prices FILE.toml" in lines[0]
    assert server.requests == []  # refused before any call

    done = deeprlm(
        *common, "--model", "openai/qwen-local", "--max-usd", "5", "--price", "qwen-local=1000,2000"
    )
    assert done.returncode == 0, done.stderr
    usage = json.loads(done.stdout)["usage"]["total"]
    assert usage["usd"] == pytest.approx(
        (usage["input_tokens"] * 1000 + usage["output_tokens"] * 2000) / 1e6
    )


def test_prices_come_from_a_toml_file_for_the_cli_and_the_api(chat_server, tmp_path):
    server = chat_server(lambda body: "FINAL(priced)")
    prices = tmp_path / "prices.toml"
    prices.write_text('["qwen-local"]\ninput = 500\noutput = 1500\ncached_input = 50\n')
    assert usage.load_prices(prices) == {"qwen-local": Price(500, 1500, 50)}
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(doc),
        "--base-url",
        server.url,
        "--quiet",
        "--json",
        "--model",
        "openai/qwen-local",
        "--max-usd",
        "5",
        "--prices",
        str(prices),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["total"]["usd"] > 0

    result = RLM("openai/qwen-local", base_url=server.url, prices=prices, max_usd=5.0).run(
        "q", "ctx"
    )
    assert result.usage.total.usd > 0
    with pytest.raises(InputError, match="needs the price of model 'qwen-local'"):
        RLM("openai/qwen-local", base_url=server.url, max_usd=5.0)


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--price", "m=1"], "bad price 'm=1'"),
        (None, ["--price", "m=1,abc"], "must be numbers"),
        (None, ["--price", "m=1,nan"], "finite number of 0 or more"),
        ("[m]\ninput = 1\n", [], "missing output"),
        ("[m]\ninput = 1\noutput = -2\n", [], "finite number of 0 or more"),
        ("[m\n", [], "not valid TOML"),
        (None, ["--prices", "{tmp}/absent.toml"], "prices file not found"),
    ],
)
def test_bad_prices_are_one_line_input_errors(tmp_path, content, args, message):
    prices = tmp_path / "prices.toml"
    if content is not None:
        prices.write_text(content)
        args = [*args, "--prices", str(prices)]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(tmp_path),
        "--model",
        "openai/m",
        "--base-url",
        "http://127.0.0.1:9/v1",
        *args,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


# --- a provider that reports no usage -------------------------------------------------------


def test_missing_usage_is_counted_here_and_marked_estimated(chat_server, tmp_path):
    def responder(body):
        if "Query:" in last_user_text(body):
            return FakeReply(text=repl("print(llm_batch(['a' * 400] * 3))"), usage=False)
        if last_user_text(body).startswith("a"):
            return FakeReply(text="seen", usage=False)
        return FakeReply(text="FINAL(done)", usage=False)

    server = chat_server(responder)
    trace = tmp_path / "trace.jsonl"
    result = RLM("openai/m", base_url=server.url, trace_path=trace).run("q", "ctx")
    total = result.usage.total
    assert total.calls == total.estimated_calls == 5
    # The estimate errs high: never below what the provider itself counted.
    assert total.input_tokens >= server.counted.prompt_tokens > 0
    assert total.output_tokens >= server.counted.completion_tokens > 0
    assert result.to_dict()["usage"]["total"]["estimated_calls"] == 5
    ended = [json.loads(line) for line in trace.read_text().splitlines()]
    calls = [e for e in ended if e["type"] == "lm_call_ended"]
    assert len(calls) == 5 and all(c["estimated"] and c["input_tokens"] > 0 for c in calls)


def test_a_token_budget_holds_when_the_provider_reports_no_usage(chat_server):
    def responder(body):
        if "Query:" in last_user_text(body):
            return FakeReply(
                text=repl("for i in range(100):\n    llm_query('b' * 3000)"), usage=False
            )
        return FakeReply(text="seen", usage=False)

    server = chat_server(responder)
    with pytest.raises(TokenLimitError) as caught:
        RLM("openai/m", base_url=server.url, max_tokens=10_000, repl="inprocess").run("q", "c")
    assert server.counted.tokens <= 10_000
    assert caught.value.usage.total.estimated_calls == caught.value.usage.total.calls
    assert len(server.requests) < 20  # of the 101 the code asked for


def test_a_provider_that_counts_more_than_the_estimate_calibrates_it(chat_server):
    """A provider whose tokenizer yields twice the estimate: after its first reply, every
    reservation uses its rate, so a budget holds even for text the estimate misjudges."""

    def responder(body):
        text = last_user_text(body)
        prompt = math.ceil(len(json.dumps(body["messages"])) / 1.5)  # a "dense" tokenizer
        if "Query:" in text:
            return FakeReply(
                text=repl("for i in range(50):\n    llm_query('z' * 3000)"), prompt_tokens=prompt
            )
        return FakeReply(text="seen", prompt_tokens=prompt)

    server = chat_server(responder)
    with pytest.raises(TokenLimitError) as caught:
        RLM("openai/m", base_url=server.url, max_tokens=30_000, repl="inprocess").run("q", "c")
    assert caught.value.usage.total.tokens == server.counted.tokens <= 30_000


# --- settings that are not numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--max-usd", "nan", "--price", "m=1,1"],
        ["--max-usd=-inf"],
        ["--cell-timeout", "nan"],
        ["--call-timeout", "inf"],
        ["--sub-call-timeout", "nan"],
        ["--timeout", "nan", "--repl", "inprocess"],  # which runs under a watchdog
        ["--cell-timeout", "inf", "--repl", "inprocess"],
    ],
)
def test_nan_and_infinite_settings_are_bad_input(tmp_path, args):
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        "http://127.0.0.1:9/v1",
        *args,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be a finite number" in lines[0], done.stderr


def test_the_bench_refuses_nan_and_infinite_limits_too(tmp_path):
    for args in (["--timeout", "nan"], ["--max-usd", "inf"]):
        done = deeprlm("bench", "run", "--out", str(tmp_path / "out"), *args)
        assert done.returncode == 2
        assert "must be a finite number" in done.stderr, done.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["timeout_s", "max_usd", "cell_timeout_s", "call_timeout_s"])
def test_the_api_refuses_nan_and_infinite_settings_too(name):
    for value in (math.nan, math.inf):
        with pytest.raises(InputError, match=f"{name} must be a finite number"):
            RLM("openai/m", base_url="http://127.0.0.1:9/v1", **{name: value})


def test_a_model_that_counts_its_own_tokens_is_reserved_by_its_count():
    class Counting(ScriptedLM):
        def count_tokens(self, text: str) -> int:
            return len(text)  # one token a character: far above the project's estimate

    root = Counting(["FINAL(counted)"])
    result = RLM(root, max_tokens=50_000).run("q", "ctx")
    prompt = sum(len(m["content"]) + TOKENS_PER_MESSAGE for m in root.calls[0])
    (started,) = result.trace.of_type(LMCallStarted)
    assert started.max_tokens == min(8_192, 50_000 - prompt)
    with pytest.raises(TokenLimitError):
        RLM(Counting(["FINAL(x)"]), max_tokens=prompt).run("q", "ctx")


def test_every_named_model_needs_a_price_under_a_usd_budget():
    common = {"base_url": "http://127.0.0.1:9/v1", "prices": {"m": PRICE}, "max_usd": 1.0}
    with pytest.raises(InputError, match="needs the price of model 'unpriced'"):
        RLM("openai/m", models={"fast": "openai/unpriced"}, **common)
    RLM("openai/m", models={"fast": "openai/m"}, **common)  # priced: fine


def test_a_schema_the_model_reads_is_counted_so_the_next_prompt_keeps_its_reply_cap():
    # The embedded model reads a pack's items from the reply schema, and reports them as
    # prompt: counted without the schema, the pack looked many times its estimate, and the
    # root's next prompt was estimated past the window and sent with a one-token cap.
    class Counting:
        name = "counting"
        context_window = 4_000

        def count_tokens(self, text: str) -> int:
            return len(text.split())

    lm = Counting()
    items = {str(n): {"enum": ["a", "b"], "description": "word " * 300} for n in range(8)}
    schema = {"type": "object", "properties": items}
    pack = [{"role": "user", "content": "label the items"}]
    root = [{"role": "user", "content": "word " * 1_000}]

    async def main() -> int | None:
        budget = Budget(Settings(max_reply_tokens=512), UsageMeter())
        held = await budget.reserve(lm, pack, None, None, schema)
        read = 3 + 8 * 300 + 100  # the prompt, the items, the keys and labels around them
        budget.settle(lm, held, Completion("{}", lm.name, input_tokens=read))
        return (await budget.reserve(lm, root)).max_tokens

    assert asyncio.run(main()) == 512
