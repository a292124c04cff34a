"""Knowledge-base commands: `phikit kb ...` and `phikit eval rag`."""

from __future__ import annotations

from . import app  # noqa: F401
