"""`deeprlm serve` as a real process: cancelling a run when its client goes away (and its
sandbox worker with it), keys and who sees what, and clients that open connections and
never read."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx2 as httpx
import openai
import pytest

from deeprlm.errors import InputError
from deeprlm.serve import auth
from deeprlm.serve.auth import KeyRing, check_bind, needs_key

from conftest import repl
from serve_support import (
    clean_env,
    descendants,
    open_fds,
    scripted,
    serve_process,
    served,
    wait_for,
)

SLEEPER = repl("import time\ntime.sleep(120)\nseen = 'woke up'")
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def runs(url: str) -> list[dict]:
    return httpx.get(url + "/v1/runs", timeout=10).json()["data"]


@pytest.fixture
def sleeper(chat_server):
    return chat_server(scripted(SLEEPER))


def test_a_stream_closed_by_its_client_cancels_the_run_and_its_worker(sleeper):
    with serve_process("--model", "openai/root", "--base-url", sleeper.url) as (process, url):
        assert descendants(process.pid) == set()
        body = {
            "model": "deeprlm",
            "messages": [{"role": "user", "content": "q?"}],
            "context": "c",
            "stream": True,
        }
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if "running code" in line:
                    break
            workers = descendants(process.pid)
            assert workers, "the sandbox worker runs the cell"
        # The connection is closed here, with the cell still sleeping.
        wait_for(lambda: runs(url)[0]["status"] == "cancelled")
        wait_for(lambda: not descendants(process.pid), timeout_s=30)
        assert process.poll() is None


def test_a_client_that_hangs_up_on_a_plain_request_cancels_its_run(sleeper):
    with serve_process("--model", "openai/root", "--base-url", sleeper.url) as (process, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps(
            {"model": "deeprlm", "messages": [{"role": "user", "content": "q?"}], "context": "c"}
        ).encode()
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(lambda: "running code" in runs(url)[0]["progress"]["line"])
        assert descendants(process.pid)
        s.close()  # hang up while the cell sleeps
        run = wait_for(lambda: [r for r in runs(url) if r["status"] == "cancelled"])[0]
        assert run["progress"]["turn"] == 1
        wait_for(lambda: not descendants(process.pid), timeout_s=30)


def test_the_bind_rule_needs_a_key_off_loopback():
    for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        assert not needs_key(host), host
    for host in ("0.0.0.0", "::", "192.0.2.2", "no-such-host.invalid"):
        assert needs_key(host), host
    with pytest.raises(InputError, match="API key"):
        check_bind("0.0.0.0", ())
    check_bind("0.0.0.0", (KEY_A,))
    check_bind("127.0.0.1", ())


def test_serve_refuses_a_public_address_without_a_key():
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "API key" in done.stderr


def test_serve_refuses_a_short_key():
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", "serve", "--api-key", "short", "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 2 and "at least 16 characters" in done.stderr


def test_every_key_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    ring = KeyRing((KEY_A, KEY_B, "key-c-0123456789abcdef"))
    assert ring.owner(f"Bearer {KEY_A}") == auth.owner_id(KEY_A)
    # All three were compared although the first matched.
    assert len(calls) == 3


def test_a_server_with_keys_lets_in_only_its_keys_and_keeps_owners_apart(chat_server):
    upstream = chat_server(scripted())
    with served(upstream.url, keys=(KEY_A, KEY_B)) as server:
        base = server.url + "/v1"
        with pytest.raises(openai.AuthenticationError) as wrong:
            openai.OpenAI(base_url=base, api_key="not-a-key").models.list()
        missing = httpx.get(base + "/models")
        health = httpx.get(server.url + "/health")
        a = openai.OpenAI(base_url=base, api_key=KEY_A)
        made = httpx.post(
            base + "/contexts",
            json={"context": "a's secret"},
            headers={"Authorization": f"Bearer {KEY_A}"},
        ).json()
        done = a.chat.completions.create(
            model="deeprlm",
            messages=[{"role": "user", "content": "q"}],
            extra_body={"context_id": made["id"]},
        )
        run_id = done.model_extra["deeprlm"]["run_id"]
        as_b = {"Authorization": f"Bearer {KEY_B}"}
        b_context = httpx.get(base + f"/contexts/{made['id']}", headers=as_b)
        b_contexts = httpx.get(base + "/contexts", headers=as_b).json()["data"]
        b_run = httpx.get(base + f"/runs/{run_id}", headers=as_b)
        b_trace = httpx.get(base + f"/runs/{run_id}/trace", headers=as_b)
        b_runs = httpx.get(base + "/runs", headers=as_b).json()["data"]
        with pytest.raises(openai.NotFoundError):
            openai.OpenAI(base_url=base, api_key=KEY_B).chat.completions.create(
                model="deeprlm",
                messages=[{"role": "user", "content": "q"}],
                extra_body={"context_id": made["id"]},
            )
        a_run = httpx.get(base + f"/runs/{run_id}", headers={"Authorization": f"Bearer {KEY_A}"})
    assert wrong.value.status_code == 401 and wrong.value.body["code"] == "invalid_api_key"
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert health.status_code == 200
    assert done.choices[0].message.content == "a's secret"
    assert b_context.status_code == b_run.status_code == b_trace.status_code == 404
    assert b_contexts == [] and b_runs == []
    assert a_run.status_code == 200 and a_run.json()["answer"] == "a's secret"


def test_the_server_survives_a_thousand_connections_that_never_read(chat_server):
    upstream = chat_server(scripted())
    args = ("--model", "openai/root", "--base-url", upstream.url, "--header-timeout", "2")
    with serve_process(*args) as (process, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        baseline = open_fds(process.pid)
        sockets = []
        try:
            for i in range(1_000):
                s = socket.create_connection((host, int(port)), timeout=10)
                if i % 3 == 0:  # a whole request, whose response is never read
                    s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
                elif i % 3 == 1:  # headers that never finish
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
                sockets.append(s)  # and the rest send nothing at all
            wait_for(lambda: open_fds(process.pid) >= baseline + 900, timeout_s=20)
            # A well-behaved client is still served while they hang on.
            started = time.monotonic()
            listed = openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=10).models.list()
            assert [m.id for m in listed.data] == ["deeprlm"]
            assert time.monotonic() - started < 5
            # Within the header timeout (and the keep-alive one), the server lets them go.
            wait_for(lambda: open_fds(process.pid) <= baseline + 10, timeout_s=20)
            closed = sum(1 for s in sockets if _closed_by_peer(s))
            assert closed == len(sockets)
        finally:
            for s in sockets:
                s.close()
        assert process.poll() is None
        answer = httpx.post(
            url + "/v1/chat/completions",
            json={
                "model": "deeprlm",
                "messages": [{"role": "user", "content": "q"}],
                "context": "ok",
            },
            timeout=60,
        )
        assert json.loads(answer.text)["choices"][0]["message"]["content"] == "ok"


def _closed_by_peer(s: socket.socket) -> bool:
    """True when the server has closed its end (reading gives EOF or a reset)."""
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass  # the response the client never read, then the end
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_a_client_that_stops_reading_a_large_response_is_dropped():
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from deeprlm.serve.config import ServerSettings
    from deeprlm.serve.server import ServerThread

    total = 64 * 1024 * 1024
    sent = {"ended": False}

    async def big(request):
        async def body():
            try:
                for _ in range(total // 65536):
                    yield b"\0" * 65536
            finally:
                sent["ended"] = True

        return StreamingResponse(body())

    app = Starlette(routes=[Route("/big", big)])
    limits = ServerSettings(port=0, write_timeout_s=1.0)
    with ServerThread(app, limits) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        # The client reads nothing; the buffers fill and, a second later, the server lets go
        # (otherwise the stream would wait for the client forever).
        wait_for(lambda: sent["ended"], timeout_s=15)
        received = 0
        s.settimeout(5)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        s.close()
    # The stream ended without the client: dropped, not delivered.
    assert received < total


def test_a_body_that_stops_arriving_gets_408(chat_server):
    upstream = chat_server(scripted())
    with served(upstream.url, server={"body_timeout_s": 1.0}) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model": '
        )
        started = time.monotonic()
        reply = b""
        while b"stalled" not in reply and (chunk := s.recv(65536)):
            reply += chunk  # headers and body may come in separate reads
        s.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"stalled" in reply
    assert time.monotonic() - started < 5


def test_a_chunked_upload_over_the_limit_is_413(chat_server):
    upstream = chat_server(scripted())

    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    with served(upstream.url, server={"max_body_mb": 0.005}) as server:
        done = httpx.post(
            server.url + "/v1/contexts",
            content=chunks(),
            headers={"Content-Type": "text/plain"},
            timeout=30,
        )
    assert done.status_code == 413 and done.json()["error"]["code"] == "too_large"


def test_a_provider_failing_mid_stream_ends_it_with_an_error_chunk(chat_server):
    from fake_server import FakeReply

    upstream = chat_server(scripted(on_second=lambda body: FakeReply("quota gone", status=403)))
    with served(upstream.url) as server:
        stream = openai.OpenAI(base_url=server.url + "/v1", api_key="x").chat.completions.create(
            model="deeprlm",
            messages=[{"role": "user", "content": "q"}],
            extra_body={"context": "c"},
            stream=True,
        )
        received = []
        with pytest.raises(openai.APIError) as failed:
            for chunk in stream:
                received.append(chunk)
    assert received and received[0].choices[0].delta.role == "assistant"
    assert "quota gone" in str(failed.value)
    assert failed.value.body["usage"]["prompt_tokens"] > 0
    assert failed.value.body["deeprlm"]["status"] == "error"


def test_a_config_file_names_the_models_and_their_limits(chat_server, tmp_path):
    upstream = chat_server(scripted(answer="FINAL(done)"))
    config = tmp_path / "serve.toml"
    config.write_text(
        "[server]\nmax_runs = 2\n\n"
        f'[models.quick]\nmodel = "openai/root"\nbase_url = "{upstream.url}"\n'
        "max_iterations = 1\n\n"
        f'[models.full]\nmodel = "openai/root"\nbase_url = "{upstream.url}"\n'
    )
    with serve_process("--config", str(config)) as (_, url):
        api = openai.OpenAI(base_url=url + "/v1", api_key="x")
        models = {m.id: m.model_extra["deeprlm"] for m in api.models.list().data}
        quick = api.chat.completions.create(
            model="quick", messages=[{"role": "user", "content": "q"}], extra_body={"context": "c"}
        )
        full = api.chat.completions.create(
            model="full", messages=[{"role": "user", "content": "q"}], extra_body={"context": "c"}
        )
    assert sorted(models) == ["full", "quick"]
    assert models["quick"]["settings"]["max_iterations"] == 1
    assert quick.model_extra["deeprlm"]["forced"] is True  # one turn, then the forced answer
    assert full.model_extra["deeprlm"]["forced"] is False
    assert full.choices[0].message.content == "done"


def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text('[models.x]\nmodel = "openai/root"\nmax_iterations = "lots"\nrepl = "x"\n')
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "models.x" in done.stderr
