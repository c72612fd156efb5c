"""`deeprlm mcp` driven by the `mcp` SDK's own client over stdio: the server is a real
process, as a desktop agent starts it, in front of a fake upstream model."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx2 as httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from conftest import repl
from serve_support import clean_env, scripted, serve_process

LIST_AND_COUNT = repl(
    "seen = ', '.join(sorted(context)) + ' / ' + str(len(llm_batch(['a', 'b', 'c'])))"
)


def mcp_server(root, upstream_url: str, *more: str) -> StdioServerParameters:
    args = ["-m", "deeprlm", "mcp", "--root", str(root), "--model", "openai/root"]
    return StdioServerParameters(
        command=sys.executable,
        args=[*args, "--base-url", upstream_url, *more],
        env=clean_env(),
    )


def test_an_agent_loads_a_folder_asks_and_gets_progress_and_the_answer(chat_server, tmp_path):
    upstream = chat_server(scripted(LIST_AND_COUNT, delay_s=0.2))
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('main')\n")
    (project / "NOTES.md").write_text("notes\n")
    (project / "image.bin").write_bytes(b"\x00\x01binary")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the agent")
    (project / "link.txt").symlink_to(outside)

    async def session():
        progress: list[tuple[float, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, message))

        async with Client(mcp_server(project, upstream.url)) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            loaded = await client.call_tool("load_context", {"paths": [str(project)]})
            context_id = loaded.structured_content["id"]
            answer = await client.call_tool(
                "ask",
                {"context_id": context_id, "question": "what files are there?"},
                progress_callback=on_progress,
            )
            listed = await client.call_tool("list_contexts", {})
            summary = await client.call_tool(
                "trace_summary", {"run_id": answer.structured_content["run_id"]}
            )
            escape = await client.call_tool("load_context", {"paths": [str(outside)]})
            unknown = await client.call_tool("ask", {"context_id": "ctx-nope", "question": "q"})
            return tools, loaded, answer, listed, summary, escape, unknown, progress

    tools, loaded, answer, listed, summary, escape, unknown, progress = asyncio.run(session())
    assert tools == {"load_context", "ask", "list_contexts", "unload_context", "trace_summary"}
    assert loaded.structured_content["files"] == 2
    # The binary file and the link out of the root were left out.
    assert sorted(loaded.structured_content["skipped"]) == ["image.bin", "link.txt"]
    result = answer.structured_content
    assert result["answer"] == "NOTES.md, src/main.py / 3"
    assert result["status"] == "answered" and result["tokens"]["input"] > 0
    assert progress, "progress notifications arrived while the run worked"
    values = [value for value, _ in progress]
    assert values == sorted(values) and all(message for _, message in progress)
    assert any("turn 1" in (message or "") for _, message in progress)
    assert [c["id"] for c in listed.structured_content["result"]] == [
        loaded.structured_content["id"]
    ]
    assert listed.structured_content["result"][0]["questions"] == 1
    tree = summary.structured_content
    assert tree["status"] == "answered" and tree["sub_calls"] == 3
    assert tree["tree"][0]["turns"] == 2
    assert escape.is_error and "outside the allowed folders" in escape.content[0].text
    assert unknown.is_error and "no context with id" in unknown.content[0].text


def test_mcp_needs_a_root(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", "mcp", "--model", "openai/x", "--base-url", "http://x"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 2 and "--root" in done.stderr


def test_mcp_over_streamable_http_with_a_key(chat_server, tmp_path):
    upstream = chat_server(scripted())
    (tmp_path / "a.txt").write_text("alpha")
    key = "mcp-key-0123456789abcdef"
    args = ["--transport", "http", "--root", str(tmp_path), "--model", "openai/root"]
    args += ["--base-url", upstream.url]
    with serve_process(*args, command="mcp", env=clean_env(DEEPRLM_API_KEY=key)) as (_, url):
        refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})

        async def session():
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(headers=headers, timeout=60) as http:
                transport = streamable_http_client(url, http_client=http)
                async with Client(transport) as client:
                    loaded = await client.call_tool("load_context", {"paths": ["a.txt"]})
                    return await client.call_tool(
                        "ask",
                        {"context_id": loaded.structured_content["id"], "question": "q"},
                    )

        answer = asyncio.run(session())
    assert refused.status_code == 401
    assert answer.structured_content["answer"] == "alpha"
