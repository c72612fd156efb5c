"""Front ends that serve the RLM to other tools: an OpenAI-compatible HTTP endpoint
(`deeprlm serve`, the serve extra) and an MCP server (`deeprlm mcp`, the mcp extra).

    config      the server's own settings table and the model setups clients pick by name
    options     the command-line options both commands share
    auth        the loopback rule, API keys (checked in constant time), owners
    admission   how many runs at once, the queue, 429 with Retry-After
    uploads     uploaded text files and tar/zip archives made into a context, safely
    sessions    the seam to a loaded context's session
    runs        a served run: status, live progress, trace file
    service     what both front ends share: setups, contexts, runs, the queue
    openai_api  the Chat Completions wire format
    http_app    the HTTP API (Starlette)
    protocol    uvicorn's HTTP protocol with header, write and connection bounds
    server      running an app on uvicorn, in the foreground or on a thread
    cli         `deeprlm serve`
    mcp_tools   the MCP server's tools
    mcp_cli     `deeprlm mcp`

Nothing here is imported by `deeprlm` itself; the web stack loads only for these commands.
"""
