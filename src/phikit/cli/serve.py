"""``phikit serve``: the OpenAI- and Ollama-compatible server, with the web chat page at ``/``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .core import engine_opts


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8000,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registry name, hub id, directory or .gguf path; with --backend openai, the remote model's name.")] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="auto | llamacpp | transformers | fast (CUDA) | onnx | openai")] = "auto",
    base_url: Annotated[str | None, typer.Option("--base-url", help="--backend openai: the remote server, e.g. http://gpu-box:8000/v1")] = None,
    remote_key: Annotated[str | None, typer.Option("--remote-api-key", help="--backend openai: key for the remote server (or $OPENAI_API_KEY).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="transformers backend: auto | nf4 | bf16 | fp32")] = None,
    attn: Annotated[str | None, typer.Option("--attn", help="transformers backend: attention kernels, auto | flash | sdpa | eager (auto: eager on V100 and older GPUs).")] = None,
    kb: Annotated[list[str], typer.Option("--kb", help="Knowledge base folder (repeatable); the first answers every chat unless a request says phikit.kb=false.")] = [],  # noqa: B006
    api_key: Annotated[str | None, typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' on /v1 and /api (or $PHIKIT_API_KEY).")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests that may wait for the model; more get 429.")] = 16,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request limit in seconds, queueing included.")] = 600.0,
    parallel: Annotated[int | None, typer.Option("--parallel", help="Requests generated at once; on llama.cpp and the fast GPU backend they are decoded together in slots (continuous batching, prefix reuse). Default: from the machine's cores and memory; 1: one at a time.")] = None,
    allow_origin: Annotated[list[str], typer.Option("--allow-origin", help="A browser origin besides the server's own that may call the API, e.g. http://localhost:3000 (repeatable; or $PHIKIT_ALLOW_ORIGINS, comma-separated; * for any).")] = [],  # noqa: B006
    adapter: Annotated[str | None, typer.Option("--adapter", help="LoRA adapter every request gets unless it names another (phikit.adapter or model base:adapter); default: the registry's enabled one.")] = None,
    allowed_hosts: Annotated[str | None, typer.Option("--allowed-hosts", help="Comma-separated Host names to accept besides localhost, 127.0.0.1, [::1] and --host (or $PHIKIT_ALLOWED_HOSTS; * for any).")] = None,
) -> None:
    """Serve a model over OpenAI's and Ollama's APIs, with a chat page at http://HOST:PORT/."""
    from ..errors import BadRequestError
    from ..llm import load

    if max_queue < 0 or timeout <= 0:
        raise BadRequestError("--max-queue must be >= 0 and --timeout > 0")
    if parallel is not None and parallel < 1:
        raise BadRequestError(f"--parallel must be at least 1, got {parallel}")
    kbs = {}
    if kb:
        from ..rag.store import open_kb

        for path in kb:
            open_kb(path)  # fail now, with a clear line, if it is not a knowledge base
            kbs[Path(path).expanduser().resolve().name] = str(Path(path).expanduser().resolve())
    opts = engine_opts(precision, adapter, attn)
    if backend == "openai":
        opts.update(base_url=base_url, api_key=remote_key)
    elif base_url:
        raise BadRequestError("--base-url is for --backend openai")
    llm = load(model, backend=backend, **opts)

    import uvicorn

    from ..serve import create_app

    key = api_key or os.environ.get("PHIKIT_API_KEY")
    origins = [*allow_origin, *_csv(os.environ.get("PHIKIT_ALLOW_ORIGINS"))]
    hosts = _csv(allowed_hosts or os.environ.get("PHIKIT_ALLOWED_HOSTS"))
    server = create_app(llm, api_key=key, kbs=kbs, max_queue=max_queue, timeout_s=timeout, host=host,
                        allowed_hosts=hosts, allow_origins=origins, parallel=parallel)
    print(f"phikit serve · {llm.model} on {llm.backend} · http://{host}:{port}/ (chat page), /v1 (OpenAI), /api (Ollama)"
          f"{' · API key required' if key else ''} · "
          + ("requests are queued one at a time, not batched" if server.state.phikit.worker.concurrency == 1
             else f"up to {server.state.phikit.worker.concurrency} requests at once, "
             + ("decoded together in slots" if getattr(llm.engine, "batcher", None) else "batched by the remote server")),
          file=sys.stderr)
    uvicorn.run(server, host=host, port=port, log_level="warning")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]
