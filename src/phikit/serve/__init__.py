"""phikit's server: OpenAI- and Ollama-compatible HTTP API, Prometheus metrics and a web chat page.

``create_app(llm)`` builds the FastAPI app; ``serve(...)`` loads a model and runs it under uvicorn.
FastAPI is imported only when this package is used, so ``phikit ask`` starts fast.
"""

from __future__ import annotations

from typing import Any


def create_app(llm, **kwargs: Any):
    """See :func:`phikit.serve.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(llm, **kwargs)


__all__ = ["create_app"]
