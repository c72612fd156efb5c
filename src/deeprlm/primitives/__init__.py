"""Decomposition primitives: what a model's code calls to split a context and hand the pieces
to sub-calls in one line instead of a loop it may get wrong.

Two kinds live here. Pure functions over a context value (`search`, `chunk_text`,
`parse_records`) run inside the REPL's own process, sandbox or not, with no round trip to
the host; they import nothing but the standard library. The sub-call primitives
(`map_items`, `classify_items`) are async functions over a metered sub-call the engine hands
them, so they know nothing of budgets, traces or providers.
"""
