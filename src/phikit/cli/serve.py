"""`phikit serve`: the OpenAI- and Ollama-compatible server."""

from __future__ import annotations

from . import app  # noqa: F401
