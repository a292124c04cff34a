"""The fast GPU backend: Phi-3-family models (Phi-4-mini) with a static KV cache and CUDA-graph decoding.

``model.py`` is the network, ``generate.py`` the decode loop, ``engine.py`` the backend. Nothing here imports
a CUDA-only library at import time, so the CPU tests can check the model and the loop.
"""

from .engine import FastEngine, build

__all__ = ["FastEngine", "build"]
