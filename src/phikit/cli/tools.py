"""Tool-calling commands: `phikit audit verify`, `phikit demo-db`."""

from __future__ import annotations

from . import app  # noqa: F401
