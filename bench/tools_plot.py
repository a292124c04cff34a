"""Plot docs/bench-tools.json: parseable, schema-valid and right-tool rates, unconstrained vs constrained.

    .venv/bin/python bench/tools_plot.py [docs/bench-tools.json] [docs/bench-tools.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(src: str = "docs/bench-tools.json", dst: str = "docs/bench-tools.png") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(src).read_text())
    metrics = [("parseable_rate", "parseable"), ("schema_valid_rate", "schema-valid"), ("right_tool_rate", "right tool")]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.38
    for i, (mode, color) in enumerate([("unconstrained", "#bbbbbb"), ("constrained", "#2b6cb0")]):
        vals = [report["summary"][mode][k] * 100 for k, _ in metrics]
        xs = [j + (i - 0.5) * width for j in range(len(metrics))]
        bars = ax.bar(xs, vals, width, label=f"{mode} ({'tool_choice=required' if i else 'auto'})", color=color)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8)
    ax.set_xticks(range(len(metrics)), [m for _, m in metrics])
    ax.set_ylim(0, 110)
    ax.set_ylabel("% of cases")
    ax.set_title(f"Tool calls by {report['model']} on {report['cases']} cases (greedy)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:])
