"""What a benchmark figure needs next to it: the device, the CPU, library versions, the load average, and
peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set, ``VmHWM``).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

PACKAGES = ("phikit", "torch", "triton", "transformers", "llama-cpp-python", "onnxruntime-genai", "bitsandbytes",
            "torchao", "accelerate")


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries behind the figures (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``) and core count, e.g. ``AMD EPYC, 2 cores``."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def has_cuda() -> bool:
    """True when torch is installed and sees a CUDA device (False without torch)."""
    if "torch" not in sys.modules:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return False
    import torch

    return torch.cuda.is_available()


def device() -> str:
    """The GPU's name when there is one, else the CPU (``CPU x86_64, 2 cores``)."""
    if has_cuda():
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU {platform.machine()}, {os.cpu_count()} cores"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (``uptime``); empty where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return []


def reset_peak(dev: str) -> None:
    """Start a new peak-memory window: CUDA's allocator peak, or the process's ``VmHWM``.

    Writing ``5`` to ``/proc/self/clear_refs`` resets the peak resident set (Linux >= 4.0, proc(5)); where that
    is refused the CPU peak is the process's lifetime peak (``ru_maxrss``), which :func:`read_peak_gb` says.
    """
    if dev == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def read_peak_gb(dev: str) -> tuple[float, str]:
    """Peak memory since :func:`reset_peak`, in GB (1e9 bytes), and what was measured.

    Returns:
        (GB, kind): kind is ``"GPU allocated"`` (``torch.cuda.max_memory_allocated``), ``"RSS"`` (``VmHWM``) or
        ``"RSS, process lifetime"`` (``ru_maxrss``, where ``/proc`` is missing).
    """
    if dev == "cuda":
        import torch

        torch.cuda.synchronize()
        return round(torch.cuda.max_memory_allocated() / 1e9, 2), "GPU allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 2), "RSS"
    except OSError:
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kb * 1024 / 1e9, 2), "RSS, process lifetime"


def free_memory() -> None:
    """Collect garbage and give cached CUDA blocks back, so the next backend starts from a clean slate."""
    import gc

    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
