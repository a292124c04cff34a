"""Cost per 1,000 queries: from measured throughput at an hourly machine price, and from hosted APIs' token prices.

A query is a profile of ``prompt_tokens`` in and ``answer_tokens`` out. A self-hosted machine answering a batch
of ``B`` such queries takes (from a measured cell at the nearest prompt length)

    batch_s = TTFT + B * (answer_tokens - 1) / (aggregate decode tok/s)

so 1,000 queries cost ``price_per_hour / 3600 * batch_s * 1000 / B``: the price of a machine kept busy with
full batches (idle time is not counted). A hosted API charges ``1000 * (prompt * in + answer * out) / 1e6``
for prices per million tokens. Prices live in ``phikit/data/prices.json`` with their source and date.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def prices() -> dict:
    """The price table (``phikit/data/prices.json``): ``gpu_default``, ``cpu_default`` and ``hosted`` entries,
    each with ``source`` (URL) and ``as_published`` (month year)."""
    return json.loads(resources.files("phikit").joinpath("data/prices.json").read_text())


def batch_seconds(ttft_ms: float, decode_tok_s: float, batch: int, answer_tokens: int) -> float:
    """Seconds for a batch of ``batch`` queries of ``answer_tokens`` each, from a cell's TTFT (ms) and aggregate
    decode rate (tokens/s over the batch).

    Raises:
        ValueError: a non-positive rate or batch.
    """
    if decode_tok_s <= 0 or batch < 1:
        raise ValueError("the decode rate and the batch must be positive")
    return ttft_ms / 1000 + batch * max(0, answer_tokens - 1) / decode_tok_s


def cost_per_1000(batch_s: float, batch: int, usd_per_hour: float) -> float:
    """Dollars for 1,000 queries when a batch of ``batch`` takes ``batch_s`` seconds on a ``usd_per_hour`` machine."""
    return usd_per_hour / 3600 * batch_s * 1000 / batch


def hosted_per_1000(entry: dict, prompt_tokens: int, answer_tokens: int) -> float:
    """Dollars for 1,000 queries on a hosted API (``usd_per_1m_input``/``usd_per_1m_output`` per million tokens)."""
    return 1000 * (prompt_tokens * entry["usd_per_1m_input"] + answer_tokens * entry["usd_per_1m_output"]) / 1e6


def row_costs(cells: list[dict], *, prompt_tokens: int, answer_tokens: int, usd_per_hour: float) -> dict:
    """Per batch size, the cost of 1,000 queries of the profile from the cells at the nearest prompt length.

    Args:
        cells: a row's measured cells (``batch``, ``prompt_tokens``, ``ttft_ms``, ``decode_tok_s``).

    Returns:
        ``{"from_prompt_tokens": L, "per_batch": {B: dollars}, "best_batch": B, "best": dollars}``; empty
        when no cell was measured.
    """
    done = [c for c in cells if c.get("decode_tok_s")]
    if not done:
        return {}
    nearest = min({c["prompt_tokens"] for c in done}, key=lambda n: (abs(n - prompt_tokens), n))
    per = {}
    for c in sorted((c for c in done if c["prompt_tokens"] == nearest), key=lambda c: c["batch"]):
        s = batch_seconds(c["ttft_ms"], c["decode_tok_s"], c["batch"], answer_tokens)
        per[c["batch"]] = round(cost_per_1000(s, c["batch"], usd_per_hour), 4)
    best = min(per, key=per.get)
    return {"from_prompt_tokens": nearest, "per_batch": per, "best_batch": best, "best": per[best]}


def hosted_table(prompt_tokens: int, answer_tokens: int) -> list[dict]:
    """The hosted APIs of the price table with their cost per 1,000 queries of the profile."""
    return [{**e, "usd_per_1000_queries": round(hosted_per_1000(e, prompt_tokens, answer_tokens), 4)}
            for e in prices()["hosted"]]
