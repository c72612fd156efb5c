"""Model adapters behind one small `LM` protocol, and the specs that name them."""

from deeprlm.lm.base import LM, Completion, Message, SyncLM, ToolCall, ToolSpec
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.lm.specs import DEFAULT_MODEL, SCHEMES, resolve_lm

__all__ = [
    "DEFAULT_MODEL",
    "LM",
    "SCHEMES",
    "Completion",
    "Message",
    "ScriptedLM",
    "SyncLM",
    "ToolCall",
    "ToolSpec",
    "resolve_lm",
]
