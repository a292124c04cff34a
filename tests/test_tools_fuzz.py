"""The calculator under hypothesis: any input gives a number or a CalculationError, fast and small."""

from __future__ import annotations

import resource
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phikit.tools.builtins import CalculationError, calculate_value

ATOMS = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["pi", "e", "x", "__import__", "os", "''", "[]", "()", "None", "True", "1j", "0", "9" * 40]),
)
OPS = st.sampled_from([" + ", " - ", " * ", " / ", " // ", " % ", " ** ", ".", ",", " if ", " and ", "@"])
CALLS = st.sampled_from(["sqrt", "factorial", "log", "abs", "round", "exec", "eval", "getattr", "open"])


@st.composite
def expressions(draw, depth=0):
    kind = draw(st.integers(0, 3 if depth < 4 else 0))
    if kind == 0:
        return draw(ATOMS)
    if kind == 1:
        return f"{draw(expressions(depth + 1))}{draw(OPS)}{draw(expressions(depth + 1))}"
    if kind == 2:
        return f"({draw(expressions(depth + 1))})" if draw(st.booleans()) else f"-{draw(expressions(depth + 1))}"
    return f"{draw(CALLS)}({draw(expressions(depth + 1))})"


def _check(expr: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        value = calculate_value(expr)
    except CalculationError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(value, int):
            assert value.bit_length() <= 4096
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_structured_expressions_give_a_number_or_a_clear_error(expr):
    _check(expr)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_never_runs_code(text):
    _check(text)


def test_power_towers_and_huge_values_are_bounded():
    for expr in ["2 ** 2 ** 2 ** 2 ** 2", "(10 ** 1000) * (10 ** 1000)", "factorial(500) * factorial(500)",
                 "9" * 499, "((((((((((1))))))))))" * 1, "-" * 400 + "1", "(" * 200 + "1" + ")" * 200]:
        _check(expr)
