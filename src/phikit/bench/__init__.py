"""``phikit bench``: backends side by side in one run, with plain HF ``generate`` as the baseline.

- :mod:`.matrix`: the run (every backend and precision at every batch size and prompt length);
- :mod:`.cells`: how one cell is timed (TTFT, aggregate decode tok/s), shared with ``bench/gpu_fast_bench.py``;
- :mod:`.backends`: loading each backend and driving its batches;
- :mod:`.cost`: cost per 1,000 queries from throughput and prices (``phikit/data/prices.json``);
- :mod:`.report`: JSON, Markdown and PNG;
- :mod:`.machine`: device, CPU, versions, load average, peak memory;
- :mod:`.stream`: figures through the event stream users see (the pre-matrix ``phikit bench``).
"""

from __future__ import annotations

from .machine import device, versions
from .stream import PROMPT, BackendFigures, as_dicts, bench_backend, first_token_seconds

__all__ = ["PROMPT", "BackendFigures", "as_dicts", "bench_backend", "device", "first_token_seconds", "versions"]
