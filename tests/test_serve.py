"""`deeprlm serve` driven by the real `openai` SDK: a real uvicorn server on 127.0.0.1 in
front of a fake upstream model, and the sandbox running the model's code."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import zipfile

import httpx2 as httpx
import openai
import pytest

from conftest import repl
from fake_server import FakeReply
from serve_support import scripted, served, wait_for


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("key", "unused"), **kwargs)


def ask(server, question="what is in it?", **kwargs):
    return client(server).chat.completions.create(
        model="deeprlm", messages=[{"role": "user", "content": question}], **kwargs
    )


@pytest.fixture
def upstream(chat_server):
    return chat_server(scripted())


def test_a_completion_answers_from_the_earlier_messages_with_usage(upstream):
    with served(upstream.url) as server:
        done = client(server).chat.completions.create(
            model="deeprlm",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "the launch code is 7731"},
                {"role": "user", "content": "what is the launch code?"},
            ],
        )
    answer = done.choices[0].message.content
    # The earlier messages were the context, as one transcript; the last one the question.
    assert answer.startswith("[system]\nbe brief\n\n[user]\nthe launch code is 7731")
    assert "what is the launch code?" not in answer
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.usage.prompt_tokens_details.cached_tokens == 0
    extension = done.model_extra["deeprlm"]
    assert extension["run_id"].startswith("run-") and extension["status"] == "answered"
    assert extension["iterations"] == 2 and extension["sub_calls"] == 1
    assert extension["usd"] == 0.0  # the fake model has no price
    assert extension["usage_by_model"]["root"]["calls"] == 3


def test_usd_comes_from_the_provider_and_the_context_field_joins_the_messages(chat_server):
    def priced(body):
        reply = scripted()(body)
        text = reply.text if isinstance(reply, FakeReply) else reply
        return FakeReply(text, cost_usd=0.25)

    upstream = chat_server(priced)
    with served(upstream.url) as server:
        done = client(server).chat.completions.create(
            model="deeprlm",
            messages=[{"role": "user", "content": "earlier"}, {"role": "user", "content": "q?"}],
            extra_body={"context": {"notes.txt": "the notes"}},
        )
    assert done.choices[0].message.content == "conversation | notes.txt"
    assert done.model_extra["deeprlm"]["usd"] == pytest.approx(0.75)


def test_streaming_sends_progress_then_the_answer_then_usage(upstream):
    with served(upstream.url) as server:
        stream = ask(server, stream=True, extra_body={"context": "streamed context"})
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    progress = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks[1:-2]]
    assert progress and all(line and line.endswith("\n") for line in progress)
    assert chunks[-2].choices[0].delta.content == "streamed context"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert last.model_extra["deeprlm"]["status"] == "answered"
    assert len({c.id for c in chunks}) == 1


def test_streaming_with_include_usage_ends_with_the_usage_chunk(upstream):
    with served(upstream.url) as server:
        chunks = list(
            ask(
                server,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"context": "x", "deeprlm": {"progress": "none"}},
            )
        )
    assert [c.choices[0].delta.content for c in chunks[:-1]] == ["", "x", None]
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].usage is None
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_progress_as_sse_comments_leaves_the_chunks_plain(chat_server):
    upstream = chat_server(scripted(delay_s=0.3))
    body = {
        "model": "deeprlm",
        "messages": [{"role": "user", "content": "q?"}],
        "context": "c",
        "stream": True,
        "deeprlm": {"progress": "comments"},
    }
    url = "/v1/chat/completions"
    with served(upstream.url) as server, httpx.stream("POST", server.url + url, json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert any("turn 1" in line for line in comments)
    assert any("sub-calls done" in line for line in comments)
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert all("reasoning_content" not in d["choices"][0]["delta"] for d in data if d["choices"])
    assert lines[-1] == "data: [DONE]"


def upload(server, key="unused", headers=None, **kwargs) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/contexts",
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
        **kwargs,
    )


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def test_an_uploaded_folder_is_reused_by_id_across_questions(upstream):
    archive = tar_of(
        {
            "repo/src/app.py": b"print('hi')\n",
            "repo/README.md": b"# the readme\n",
            "repo/logo.png": b"\x89PNG\x00\x00binary",
            "repo/.git/config": b"[core]\n",
        },
        links={"repo/escape": "/etc/passwd"},
    )
    with served(upstream.url) as server:
        made = upload(server, files={"file": ("repo.tar.gz", archive)})
        assert made.status_code == 201, made.text
        context = made.json()
        assert context["files"] == 2 and context["kind"] == "dict"
        assert sorted(context["skipped"]) == ["repo/escape", "repo/logo.png"]
        answers = []
        for question in ("first?", "second?"):
            done = client(server).chat.completions.create(
                model="deeprlm",
                messages=[{"role": "user", "content": question}],
                extra_body={"context_id": context["id"]},
            )
            answers.append(done.choices[0].message.content)
            assert done.model_extra["deeprlm"]["context_id"] == context["id"]
        listed = httpx.get(server.url + "/v1/contexts").json()["data"]
        deleted = httpx.delete(server.url + f"/v1/contexts/{context['id']}")
        missing = httpx.post(
            server.url + "/v1/chat/completions",
            json={
                "model": "deeprlm",
                "messages": [{"role": "user", "content": "q"}],
                "context_id": context["id"],
            },
        )
    assert answers == ["repo/README.md | repo/src/app.py"] * 2
    assert [c["questions"] for c in listed] == [2]
    assert deleted.json()["deleted"] is True
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "context_not_found"


def test_uploads_of_text_json_and_zip(upstream):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("docs/a.txt", "alpha")
        archive.writestr("docs/b.txt", "beta")
    with served(upstream.url) as server:
        text = upload(server, content=b"plain text", headers={"Content-Type": "text/plain"})
        as_json = upload(server, json={"context": ["one", "two"], "name": "pair"})
        as_zip = upload(server, files={"file": ("docs.zip", buffer.getvalue())})
        both = upload(server, files=[("file", ("a.txt", b"A")), ("file", ("b.txt", b"B"))])
    assert text.json()["kind"] == "str" and text.json()["chars"] == 10
    assert as_json.json()["kind"] == "list" and as_json.json()["name"] == "pair"
    assert as_zip.json()["files"] == 2
    assert both.json()["files"] == 2 and both.json()["kind"] == "dict"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"files": {"file": ("x.bin", b"\x00\x01\x02binary")}}, 422, "binary_upload"),
        (
            {"files": {"file": ("evil.tar.gz", tar_of({"../../etc/cron.d/x": b"boom"}))}},
            422,
            "unsafe_path",
        ),
        ({"files": {"file": ("abs.tar.gz", tar_of({"/etc/passwd": b"boom"}))}}, 422, "unsafe_path"),
        (
            {"files": {"file": ("junk.tar.gz", b"\x1f\x8b" + b"not gzip at all")}},
            422,
            "bad_archive",
        ),
        ({"files": {"file": ("big.txt", b"x" * 3_000)}}, 413, "too_large"),
        ({"content": b"", "headers": {"Content-Type": "text/plain"}}, 422, "no_text"),
        ({"json": {"nothing": 1}}, 400, None),
    ],
)
def test_bad_uploads_are_refused_with_the_right_status(upstream, body, status, code):
    with served(upstream.url, server={"max_body_mb": 0.002}) as server:
        done = upload(server, **body)
    assert done.status_code == status, done.text
    assert done.json()["error"]["message"]
    if code:
        assert done.json()["error"]["code"] == code


def test_an_archive_that_unpacks_past_the_limit_is_refused_before_unpacking(upstream):
    # 20 MB of zeros compress to about 20 kB: the declared size trips the limit.
    bomb = tar_of({"zeros.txt": b"0" * 20_000_000})
    assert len(bomb) < 100_000
    with served(upstream.url, server={"max_context_mb": 1}) as server:
        done = upload(server, files={"file": ("bomb.tar.gz", bomb)})
    assert done.status_code == 413 and "over the server's limit" in done.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (
            {"model": "nope", "messages": [{"role": "user", "content": "q"}], "context": "c"},
            404,
            "model_not_found",
        ),
        (
            {"model": "deeprlm", "messages": [{"role": "user", "content": "q"}]},
            400,
            "missing_context",
        ),
        ({"model": "deeprlm", "messages": []}, 400, "missing_messages"),
        (
            {
                "model": "deeprlm",
                "messages": [{"role": "user", "content": "q"}],
                "context_id": "ctx-nope",
            },
            404,
            "context_not_found",
        ),
        (
            {
                "model": "deeprlm",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
                "context": "c",
            },
            422,
            "unsupported_content",
        ),
        (
            {
                "model": "deeprlm",
                "messages": [{"role": "user", "content": "q"}],
                "context": "c",
                "deeprlm": {"repl": "inprocess"},
            },
            400,
            "bad_setting",
        ),
        (
            {
                "model": "deeprlm",
                "messages": [{"role": "user", "content": "q"}],
                "context": "c",
                "deeprlm": {"max_iterations": "many"},
            },
            400,
            "bad_setting",
        ),
        (
            {"model": "deeprlm", "messages": [{"role": "user", "content": "q"}], "context": 5},
            400,
            "bad_context",
        ),
    ],
)
def test_bad_requests_get_openai_style_errors(upstream, body, status, code):
    with served(upstream.url) as server:
        if isinstance(body, bytes):
            done = httpx.post(server.url + "/v1/chat/completions", content=body)
        else:
            done = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert done.status_code == status, done.text
    error = done.json()["error"]
    assert error["code"] == code and error["message"] and "Traceback" not in done.text


def test_unknown_ids_and_routes_are_404_and_a_big_body_413(upstream):
    with served(upstream.url, server={"max_body_mb": 0.01}) as server:
        run = httpx.get(server.url + "/v1/runs/run-nope")
        trace = httpx.get(server.url + "/v1/runs/run-nope/trace")
        route = httpx.get(server.url + "/v1/nothing-here")
        big = httpx.post(server.url + "/v1/chat/completions", content=b"x" * 20_000)
    assert run.status_code == trace.status_code == route.status_code == 404
    assert run.json()["error"]["code"] == "run_not_found"
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"


def test_the_openai_sdk_raises_its_own_errors(upstream):
    with served(upstream.url) as server:
        with pytest.raises(openai.NotFoundError) as missing:
            client(server).chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "q"}],
                extra_body={"context": "c"},
            )
        with pytest.raises(openai.BadRequestError):
            ask(server)
    assert "deeprlm" in str(missing.value)


def test_a_request_may_lower_the_servers_bounds_but_not_raise_them(upstream):
    with served(upstream.url, settings={"max_iterations": 3, "max_depth": 1}) as server:
        done = ask(
            server,
            extra_body={
                "context": "c",
                "deeprlm": {"max_iterations": 50, "max_depth": 0, "max_tokens": 5000},
            },
        )
        run_id = done.model_extra["deeprlm"]["run_id"]
        trace = httpx.get(server.url + f"/v1/runs/{run_id}/trace").text
    settings = json.loads(trace.splitlines()[0])["settings"]
    assert settings["max_iterations"] == 3  # capped at the server's
    assert settings["max_depth"] == 0  # lowered
    assert settings["max_tokens"] == 5000  # the server set no bound
    assert settings["repl"] == "sandbox"


def test_a_usd_budget_needs_the_models_price(upstream, tmp_path):
    body = {"context": "c", "deeprlm": {"max_usd": 0.5}}
    with served(upstream.url) as server, pytest.raises(openai.BadRequestError) as unpriced:
        ask(server, extra_body=body)
    prices = tmp_path / "prices.toml"
    prices.write_text('["root"]\ninput = 1.0\noutput = 2.0\n')
    with served(
        upstream.url,
        models={
            "priced": {"model": "openai/root", "base_url": upstream.url, "prices": str(prices)}
        },
    ) as server:
        done = client(server).chat.completions.create(
            model="priced", messages=[{"role": "user", "content": "q"}], extra_body=body
        )
    assert "needs the price of model 'root'" in unpriced.value.body["message"]
    assert done.model_extra["deeprlm"]["usd"] > 0


def test_a_limit_returns_the_partial_answer_cut_short(chat_server):
    looping = repl("answer['content'] = 'partial so far'\nprint(llm_query('again'))")
    upstream = chat_server(scripted(looping, answer=looping))
    with served(upstream.url) as server:
        done = ask(server, extra_body={"context": "c", "deeprlm": {"max_sub_calls": 1}})
    assert done.choices[0].message.content == "partial so far"
    assert done.choices[0].finish_reason == "length"
    extension = done.model_extra["deeprlm"]
    assert extension["status"] == "limit" and "sub-call" in extension["error"]
    assert done.usage.prompt_tokens > 0


def test_a_failing_provider_is_a_502_with_the_usage_so_far(chat_server):
    def second(body):
        return FakeReply("the provider refused", status=400)

    upstream = chat_server(scripted(on_second=second))
    with served(upstream.url) as server:
        with pytest.raises(openai.APIStatusError) as failed:
            ask(server, extra_body={"context": "c"})
        run_id = failed.value.body["deeprlm"]["run_id"]
        status = httpx.get(server.url + f"/v1/runs/{run_id}").json()
    assert failed.value.status_code == 502
    body = failed.value.body
    assert "the provider refused" in body["message"] and body["code"] == "model_failed"
    assert body["usage"]["prompt_tokens"] > 0  # the first turn and the sub-call were paid for
    assert body["deeprlm"]["status"] == "error"
    assert status["status"] == "error" and "the provider refused" in status["error"]


def test_a_full_queue_answers_429_with_retry_after(chat_server):
    upstream = chat_server(scripted(delay_s=1.5))
    with served(upstream.url, server={"max_runs": 1, "max_queued": 0}) as server:
        first: dict = {}
        worker = threading.Thread(
            target=lambda: first.update(done=ask(server, extra_body={"context": "c"}))
        )
        worker.start()
        wait_for(lambda: server.service.admission.running == 1)
        with pytest.raises(openai.RateLimitError) as refused:
            client(server, max_retries=0).chat.completions.create(
                model="deeprlm",
                messages=[{"role": "user", "content": "q"}],
                extra_body={"context": "c"},
            )
        worker.join(60)
    assert refused.value.response.status_code == 429
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    assert refused.value.body["code"] == "queue_full"
    assert first["done"].choices[0].message.content == "c"


def test_runs_status_trace_and_view_while_running_and_after(chat_server):
    upstream = chat_server(scripted(delay_s=1.0))
    with served(upstream.url) as server:
        worker = threading.Thread(target=lambda: ask(server, extra_body={"context": "c"}))
        worker.start()
        run_id = wait_for(
            lambda: [r["id"] for r in httpx.get(server.url + "/v1/runs").json()["data"]]
        )[0]
        wait_for(
            lambda: httpx.get(server.url + f"/v1/runs/{run_id}").json()["progress"]["turn"] >= 1
        )
        running = httpx.get(server.url + f"/v1/runs/{run_id}").json()
        partial = httpx.get(server.url + f"/v1/runs/{run_id}/trace").text
        page_running = httpx.get(server.url + f"/v1/runs/{run_id}/view")
        worker.join(60)
        finished = httpx.get(server.url + f"/v1/runs/{run_id}").json()
        trace = httpx.get(server.url + f"/v1/runs/{run_id}/trace").text
    assert running["status"] == "running" and "turn" in running["progress"]["line"]
    assert partial.endswith("\n") and json.loads(partial.splitlines()[0])["type"] == "run_started"
    assert page_running.status_code == 200 and "<html" in page_running.text.lower()
    assert finished["status"] == "answered" and finished["answer"] == "c"
    events = [json.loads(line) for line in trace.splitlines()]
    assert events[-1]["type"] == "run_ended" and len(events) > len(partial.splitlines())


def test_ask_never_loads_the_web_stack():
    code = (
        "import sys, deeprlm.cli\n"
        "deeprlm.cli.build_parser('ask')\n"
        "heavy = ('starlette', 'uvicorn', 'sse_starlette', 'mcp', 'multipart')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_served_code_always_runs_in_the_sandbox():
    from deeprlm.errors import InputError
    from deeprlm.serve.config import build_config
    from deeprlm.serve.service import Service

    config = build_config(
        {"models": {"trusting": {"model": "openai/root", "base_url": "http://127.0.0.1:9"}}},
        server_flags={},
        cli_setup=None,
        setting_flags={"repl": "inprocess"},
        environ={},
    )
    with pytest.raises(InputError, match="sandbox"):
        Service(config, force_sandbox=True)


def test_a_stream_waiting_in_line_says_so_then_runs(chat_server):
    upstream = chat_server(scripted(delay_s=0.5))
    with served(upstream.url, server={"max_runs": 1, "max_queued": 1}) as server:
        first = threading.Thread(target=lambda: ask(server, extra_body={"context": "one"}))
        first.start()
        wait_for(lambda: server.service.admission.running == 1)
        chunks = list(ask(server, stream=True, extra_body={"context": "two"}))
        first.join(60)
    lines = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks[1:-2]]
    assert lines[0] == "waiting for a free run slot\n"
    assert any(line and line.startswith("turn") for line in lines[1:])
    assert chunks[-2].choices[0].delta.content == "two"
