"""Prometheus metrics (prometheus-client), one registry per app so several servers can share a process.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms); the TTFT buckets are
vLLM's ``vllm:time_to_first_token_seconds`` buckets, cut to what a CPU serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40)


class Metrics:
    """The server's counters and histograms; ``render()`` returns the text exposition format."""

    def __init__(self, worker=None, engine=None):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("phikit_requests", "HTTP requests by route and status code", ["route", "status"], registry=r)
        self.latency = Histogram(
            "phikit_request_latency_seconds", "Request latency, to the last byte", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram("phikit_ttft_seconds", "Time from request to first generated token", ["route"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("phikit_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("phikit_completion_tokens", "Tokens generated", registry=r)
        self.tool_calls = Counter("phikit_tool_calls", "Tool calls returned or executed", registry=r)
        self.errors = Counter("phikit_errors", "Error responses by OpenAI error type", ["type"], registry=r)
        self.finish = Counter("phikit_generations", "Finished generations by finish reason", ["finish_reason"], registry=r)
        if worker is not None:
            s = worker.stats
            Gauge("phikit_queue_waiting", "Requests waiting for the model", registry=r).set_function(lambda: worker.waiting)
            Gauge("phikit_queue_running", "Generations running", registry=r).set_function(lambda: worker.running)
            Gauge("phikit_cancelled_generations", "Generations cancelled by a disconnect or timeout", registry=r
                  ).set_function(lambda: s.cancelled)
            Gauge("phikit_rejected_requests", "Requests refused with 429 (queue full)", registry=r
                  ).set_function(lambda: s.rejected)
        batcher = getattr(engine, "batcher", None)
        if batcher is not None:  # continuous batching (llama.cpp or fast-path slots)
            b = batcher.stats
            for name, doc, read in [
                ("phikit_slots", "Slots (sequences decoded together)", lambda: batcher.n_slots),
                ("phikit_slots_active", "Slots holding a sequence", lambda: b.active),
                ("phikit_slots_waiting", "Sequences waiting for a slot", lambda: b.waiting),
                ("phikit_batch_size_last", "Sequences in the last decode step", lambda: b.last_batch),
                ("phikit_batch_size_mean", "Mean sequences per decode step", lambda: b.mean_batch),
                ("phikit_decode_steps", "Decode steps (one llama_decode each)", lambda: b.steps),
                ("phikit_prefix_cache_hit_rate", "Share of prompt tokens whose KV came from the prefix cache",
                 lambda: b.prefix_hit_rate),
                ("phikit_prompt_tokens_reused", "Prompt tokens taken from the prefix cache", lambda: b.reused_tokens),
            ]:
                Gauge(name, doc, registry=r).set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def slot_stats(engine) -> dict | None:
    """The batcher's slots for ``/health`` (None when the engine runs one generation at a time)."""
    batcher = getattr(engine, "batcher", None)
    if batcher is None:
        return None
    b = batcher.stats
    return {"total": batcher.n_slots, "active": b.active, "waiting": b.waiting, "steps": b.steps,
            "batch_size_last": b.last_batch, "batch_size_mean": round(b.mean_batch, 2),
            "prefix_cache_hit_rate": round(b.prefix_hit_rate, 3), "prompt_tokens_reused": b.reused_tokens,
            "context_per_slot": batcher.slot_ctx}
