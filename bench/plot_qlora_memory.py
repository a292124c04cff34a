"""Draw what holds GPU memory at a QLoRA step's peak, from ``bench/qlora_memory.py`` JSON files (one bar each).

    python bench/plot_qlora_memory.py docs/lora-memory.png \
        "peft prep, chunk 1,024=bench/results/session8/d2_mem_peft.json" \
        "phikit prep, chunk 1,024=bench/results/session8/d2_mem_phikit.json" \
        "phikit prep, chunk 256 (now)=bench/results/session8/d4_mem_default.json"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PARTS = [  # (label, test on a row of alive_at_peak)
    ("embedding / output head", lambda r: any("embedding" in k for k in r["known"])),
    ("nf4 weights + absmax", lambda r: "bitsandbytes" in r["where"]),
    ("loss chunk: logits + gradient", lambda r: r["where"].endswith(" part") or any("logits" in k for k in r["known"])
     or (r["where"].endswith("MB blocks") and r["mb"] > 100)),
    ("checkpointed layer inputs", lambda r: "modeling_layers.py" in r["where"]),
    ("LoRA + AdamW state", lambda r: "_run_epoch" in r["where"] or "cast_adapter_dtype" in r["where"]),
]


def split(result: dict) -> dict[str, float]:
    """MB per part at the peak; what no part claims (and the small tensors past the table) is "other"."""
    out = {label: 0.0 for label, _ in PARTS}
    for row in result["alive_at_peak"]:
        label = next((label for label, test in PARTS if test(row)), None)
        if label:
            out[label] += row["mb"]
    out["other"] = max(0.0, result["peak_memory_mb_trace"] - sum(out.values()))
    return out


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, specs = Path(sys.argv[1]), [a.split("=", 1) for a in sys.argv[2:]]
    runs = [(name, split(json.loads(Path(path).read_text()))) for name, path in specs]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, (_, parts) in enumerate(runs):
        left = 0.0
        for j, (label, mb) in enumerate(parts.items()):
            ax.barh(i, mb / 1024, left=left / 1024, color=f"C{j}", label=label if i == 0 else None)
            left += mb
        ax.text(left / 1024 + 0.05, i, f"{left / 1024:.2f} GiB", va="center")
    ax.set_yticks(range(len(runs)), [name for name, _ in runs])
    ax.invert_yaxis()
    ax.set_xlabel("GPU memory alive at the training peak (GiB)")
    ax.set_xlim(0, 8.5)
    ax.set_title("QLoRA step on Phi-4-mini's shape, 2,048 packed tokens (H200)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.45, -0.22), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
