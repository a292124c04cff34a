"""The layout shows the flow: no import cycles between phikit's packages or between two modules, and no module too big
to hold in one's head. (import-linter's layers contract in pyproject.toml keeps the floors; ``make test``
runs it.)"""

from __future__ import annotations

from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[1] / "src" / "phikit"
MAX_LINES = 430  # the brief asks for ~400


def _unit(module: str) -> str:
    """``phikit.rag.store`` -> ``phikit.rag``: a subpackage counts as one unit, a top-level module as itself."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_packages():
    graph = grimp.build_graph("phikit")
    edges: dict[str, set[str]] = {}
    for m in graph.modules:
        for imported in graph.find_modules_directly_imported_by(m):
            if _unit(imported) != _unit(m) and _unit(imported) != "phikit":
                edges.setdefault(_unit(m), set()).add(_unit(imported))
    cycles = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if a in edges.get(b, ())})
    assert not cycles, f"import cycles: {cycles}"


def test_modules_stay_small():
    big = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these modules: {big}"


def test_no_two_modules_import_each_other():
    graph = grimp.build_graph("phikit")
    pairs = sorted({tuple(sorted((m, i))) for m in graph.modules for i in graph.find_modules_directly_imported_by(m)
                    if m in graph.find_modules_directly_imported_by(i)})
    assert not pairs, f"modules importing each other: {pairs}"
