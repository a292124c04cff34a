"""Shared fixtures: the embedded model on each backend, loaded once per test session."""

from __future__ import annotations

import os
import tempfile
import threading

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The user's LoRA registry stays out of the tests: an enabled adapter there would change every answer.
os.environ["PHIKIT_ADAPTERS"] = os.path.join(tempfile.mkdtemp(prefix="phikit-tests-"), "adapters.json")


def in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a worker thread and return its result, as the server runs generations, so that the
    server and the engine are compared from the same kind of thread (llama.cpp's OpenMP pools are per
    calling thread; docs/benchmarks.md)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)))
    t.start()
    t.join()
    return out[0]


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def llama_llm():
    import phikit

    return phikit.load("smollm2-135m", backend="llamacpp")


@pytest.fixture(scope="session")
def hf_llm():
    import phikit

    return phikit.load("smollm2-135m", backend="transformers")


@pytest.fixture(params=["llamacpp", "transformers"])
def any_llm(request):
    return request.getfixturevalue("llama_llm" if request.param == "llamacpp" else "hf_llm")
