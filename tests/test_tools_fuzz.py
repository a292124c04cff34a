"""The calculator under hypothesis: any input gives a number or a CalculationError, fast and small."""

from __future__ import annotations

import gc
import resource
import time
from contextlib import contextmanager

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


@contextmanager
def cpu_bound(limit: float, what: str = ""):
    """The block's own work stays under ``limit`` seconds: this thread's CPU time, with the garbage collector held
    off. Wall time failed on a busy 2-core CI machine (one call stalled 1.1 s), and process time once counted
    1.1 s in a call that takes 2 ms (other threads of the suite, or a collection of the heap earlier tests left)."""
    gc.disable()
    t0 = time.thread_time()
    try:
        yield
    finally:
        spent = time.thread_time() - t0
        gc.enable()
    assert spent < limit, f"{what}: {spent:.3f} s of CPU"


def _check(expr: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with cpu_bound(1.0, expr):
        try:
            value = calculate_value(expr)
        except CalculationError as exc:
            assert str(exc) and "\n" not in str(exc)
            value = 0
    assert isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(value, int):
        assert value.bit_length() <= 4096
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


# Every allowed operator and function, with one or two arguments that may be huge, tiny, negative, fractional
# or themselves nested calls: each call returns or errors within 1 s, never hangs the interpreter.
from phikit.tools.builtins import _FUNCS, MAX_ROUND_DIGITS  # noqa: E402

BIG = st.sampled_from(["10**9", "10**4000", "-10**9", "9" * 400, "1e308", "1e-300", "2**4096", "0.5", "-0",
                       "factorial(500)", "10**10000", "1/3", "pi", "-1", "0", "7"])
ALL_OPS = st.sampled_from([" + ", " - ", " * ", " / ", " // ", " % ", " ** "])


@st.composite
def hard_expressions(draw, depth=0):
    kind = draw(st.integers(0, 2 if depth < 3 else 0))
    if kind == 0:
        return draw(BIG)
    if kind == 1:
        return f"({draw(hard_expressions(depth + 1))}){draw(ALL_OPS)}({draw(hard_expressions(depth + 1))})"
    name = draw(st.sampled_from(sorted(_FUNCS)))
    args = [draw(hard_expressions(depth + 1)) for _ in range(draw(st.integers(1, 3)))]
    return f"{name}({', '.join(args)})"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hard_expressions())
def test_every_operator_and_function_with_large_nested_arguments_is_bounded(expr):
    _check(expr)


def test_round_digits_and_arity_are_bounded():
    for expr in ["round(1, 10**9)", "round(1, -10**9)", "round(1.5, 10**9)", "round(1/3, 10**7)", "round(2, 0.5)",
                 "floor(1, 10**9)", "factorial(1, 2)", "log(1, 2, 3)", "sqrt()"]:
        with cpu_bound(0.1, expr):
            try:
                calculate_value(expr)
            except CalculationError as exc:
                assert str(exc)
            else:
                raise AssertionError(f"{expr} should be refused")
    assert calculate_value(f"round(1/3, {MAX_ROUND_DIGITS})") == 1 / 3
    assert calculate_value("round(2.675, 2)") == 2.68 and calculate_value("round(7/2)") == 4  # exact decimals
    assert calculate_value("log(8, 2)") == 3.0
