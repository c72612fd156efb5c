"""deeprlm: Recursive Language Models over any chat model.

from deeprlm import RLM
result = RLM(model="openai/gpt-5-mini").run("Which customer complained most?", logs)
print(result.answer)
"""

from deeprlm.cache import Cache
from deeprlm.context import ContextInfo, load_paths
from deeprlm.errors import (
    CostLimitError,
    DeepRLMError,
    InputError,
    LimitError,
    LMError,
    OutputError,
    SandboxError,
    SubCallLimitError,
    TimeLimitError,
    TokenLimitError,
)
from deeprlm.lm import LM, Completion, LMDefaults, ScriptedLM, complete_sync, resolve_lm
from deeprlm.repl.sandbox import SandboxSettings
from deeprlm.rlm import RLM, RLMResult
from deeprlm.settings import Settings
from deeprlm.usage import Price, UsageReport, load_prices, register_price

__version__ = "0.1.0"

__all__ = [
    "LM",
    "RLM",
    "Cache",
    "Completion",
    "ContextInfo",
    "CostLimitError",
    "DeepRLMError",
    "InputError",
    "LMDefaults",
    "LMError",
    "LimitError",
    "OutputError",
    "Price",
    "RLMResult",
    "SandboxError",
    "SandboxSettings",
    "ScriptedLM",
    "Settings",
    "SubCallLimitError",
    "TimeLimitError",
    "TokenLimitError",
    "UsageReport",
    "complete_sync",
    "load_paths",
    "load_prices",
    "register_price",
    "resolve_lm",
]
