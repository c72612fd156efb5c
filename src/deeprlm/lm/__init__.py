"""Model adapters behind one small `LM` protocol, and the specs that name them."""

from deeprlm.lm.base import LM, Completion, LMDefaults, Message, ToolCall, ToolSpec, complete_sync
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.lm.specs import DEFAULT_MODEL, SCHEMES, resolve_lm

__all__ = [
    "DEFAULT_MODEL",
    "LM",
    "SCHEMES",
    "Completion",
    "LMDefaults",
    "Message",
    "ScriptedLM",
    "ToolCall",
    "ToolSpec",
    "complete_sync",
    "resolve_lm",
]
