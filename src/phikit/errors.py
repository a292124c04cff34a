"""One root error type whose message is written for the user (simonw/llm's habit).

The CLI prints ``str(err)`` as one line and exits 2; ``PHIKIT_RAISE_ERRORS=1`` re-raises for debugging.
"""


class PhikitError(Exception):
    """A mistake the user can fix: the message names the problem and what to do."""


class ModelNotFoundError(PhikitError):
    """The model is neither known, on disk, nor reachable on the hub."""


class BadRequestError(PhikitError, ValueError):
    """A parameter or message is invalid (empty prompt, max tokens <= 0, temperature < 0, ...)."""


class EngineUnavailableError(PhikitError):
    """A remote engine cannot be reached or answered 503 (the server answers 503)."""


class EngineError(PhikitError):
    """A remote engine failed: a 5xx, a broken stream, a lost connection mid-answer (the server answers 502)."""
