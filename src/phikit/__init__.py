"""phikit: run Phi-4-mini (and any small chat model) privately and cheaply, as an agent.

Start with ``phikit.load()`` or ``phikit.ask("...")``.
"""

from .engines.base import Done, SamplingParams, TextDelta, Usage
from .errors import BadRequestError, ModelNotFoundError, PhikitError
from .llm import LLM, ChatResult, ask, load
from .tools import tool  # noqa: F401  (@phikit.tool)

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "BadRequestError",
    "ChatResult",
    "Done",
    "ModelNotFoundError",
    "PhikitError",
    "SamplingParams",
    "TextDelta",
    "Usage",
    "ask",
    "load",
]
