"""Built-in tools: ``calculate`` (a whitelisted AST, never ``eval``), ``get_order_status`` (SQLite) and
``get_weather`` (bundled offline demo data). Address them by name: ``tools=["calculate"]``.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import os
import re
import sqlite3
import tempfile
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Literal

from ..errors import PhikitError
from .schema import Tool, tool

MAX_EXPRESSION_CHARS = 500
MAX_NODES = 200
MAX_EXPONENT = 10_000
MAX_RESULT_BITS = 4_096  # about 1,233 decimal digits
MAX_FACTORIAL = 500
MAX_ROUND_DIGITS = 1_000  # round(x, n) builds 10**n: bound n like every other size

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: None,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "floor": math.floor, "ceil": math.ceil, "abs": abs, "round": round, "factorial": math.factorial,
}
_ARITY = {name: (1, 1) for name in _FUNCS} | {"log": (1, 2), "round": (1, 2)}  # (fewest, most) arguments
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


class CalculationError(PhikitError):
    """The expression is not allowed arithmetic, or its value is out of bounds."""


def _check(value):
    """Bound the size of every intermediate value (exact integers and fractions can grow without limit)."""
    if isinstance(value, Fraction):
        if value.numerator.bit_length() > MAX_RESULT_BITS or value.denominator.bit_length() > MAX_RESULT_BITS:
            raise CalculationError(f"the result is larger than {MAX_RESULT_BITS} bits; calculate bounds results")
    elif isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is not a finite number (overflow or an undefined operation)")
    return value


def _whole(value, what: str, limit: int) -> int:
    """``value`` as an int with ``|value| <= limit``, else a CalculationError naming ``what``."""
    if not (isinstance(value, Fraction) and value.denominator == 1):
        raise CalculationError(f"{what} must be a whole number")
    if abs(value) > limit:
        raise CalculationError(f"{what} is {value}; the limit is {limit}")
    return int(value)


def _pow(base, exp):
    if isinstance(exp, Fraction) and exp.denominator == 1:
        n = exp.numerator
        if abs(n) > MAX_EXPONENT:
            raise CalculationError(f"exponent {n} is too large; the limit is {MAX_EXPONENT}")
        if isinstance(base, Fraction):
            size = max(base.numerator.bit_length(), base.denominator.bit_length())
            if size * abs(n) > MAX_RESULT_BITS:
                raise CalculationError(f"the result is larger than {MAX_RESULT_BITS} bits; calculate bounds results")
            if base == 0 and n < 0:
                raise CalculationError("division by zero (0 to a negative power)")
        return base**n
    try:
        out = float(base) ** float(exp)
    except OverflowError:
        raise CalculationError("the result overflows a float") from None
    if isinstance(out, complex):
        raise CalculationError("the result is a complex number (a negative number to a fractional power)")
    return out


def _call(name: str, args: list):
    """One allowed function on already-bounded arguments; every argument that sets a size is bounded here."""
    if name == "factorial":
        n = args[0]
        if not (isinstance(n, Fraction) and n.denominator == 1 and 0 <= n <= MAX_FACTORIAL):
            raise CalculationError(f"factorial needs a whole number from 0 to {MAX_FACTORIAL}")
        return Fraction(math.factorial(int(n)))
    if name == "round" and len(args) == 2:
        digits = _whole(args[1], "round's number of digits", MAX_ROUND_DIGITS)
        if isinstance(args[0], float):
            return _check(round(args[0], digits))
        return _check(Fraction(round(args[0], digits)))
    if name in ("abs", "round", "floor", "ceil") and isinstance(args[0], Fraction):
        if name == "abs":
            return abs(args[0])
        if name == "round":
            return Fraction(round(args[0]))
        return Fraction(math.floor(args[0]) if name == "floor" else math.ceil(args[0]))
    try:
        return _check(float(_FUNCS[name](*[float(a) for a in args])))
    except (ValueError, OverflowError, TypeError, ZeroDivisionError) as exc:
        raise CalculationError(f"{name}: {exc}") from None


def _eval(node: ast.AST):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculationError(f"only numbers are allowed, not {node.value!r}")
        return _check(Fraction(node.value) if isinstance(node.value, int) else Fraction(repr(node.value)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check(_pow(left, right))
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculationError("division by zero")
        if isinstance(left, float) or isinstance(right, float):
            left, right = float(left), float(right)
        return _check(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTS:
            return _CONSTS[node.id]
        raise CalculationError(f"unknown name {node.id!r}; allowed: numbers, + - * / // % **, ( ), {', '.join(sorted(_FUNCS))}, pi, e")
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCS or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            shown = name or ast.unparse(node.func)[:40]
            raise CalculationError(f"function {shown!r} is not allowed; allowed: {', '.join(sorted(_FUNCS))}")
        low, high = _ARITY[name]
        if not low <= len(node.args) <= high:
            count = f"{low}" if low == high else f"{low} or {high}"
            raise CalculationError(f"{name} takes {count} argument{'s' if high > 1 else ''}, got {len(node.args)}")
        return _call(name, [_eval(a) for a in node.args])
    raise CalculationError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _clean(expression: str) -> str:
    """Accept the way people and models write arithmetic: ×, ÷, ^, x between numbers, 1,234."""
    s = expression.strip().rstrip("=?").strip()
    s = s.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    s = re.sub(r"(?<=\d)\s*[xX]\s*(?=\d)", "*", s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    return s


def calculate_value(expression: str) -> int | float:
    """Evaluate arithmetic exactly and return a number.

    Integers and decimals are exact (``fractions.Fraction``): ``0.1 + 0.2`` is ``0.3``; ``1/3`` is returned
    as the nearest float. The expression is parsed with :func:`ast.parse` and walked over a whitelist
    (numbers, ``+ - * / // % **``, parentheses, unary minus, ``sqrt exp log log10 log2 sin cos tan asin acos
    atan floor ceil abs round factorial``, ``pi e tau``); nothing is ever executed.

    Raises:
        CalculationError: a name, attribute, call, string or other syntax outside the whitelist; division by
            zero; an expression over 500 characters or 200 nodes; an exponent over 10,000, an intermediate or
            final result over 4,096 bits, a factorial over 500, or round() to more than 1,000 digits.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise CalculationError("the expression is empty: give arithmetic such as '12 * (3 + 4)'")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"the expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(_clean(expression), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculationError(f"{expression!r} is not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculationError(f"the expression has more than {MAX_NODES} parts; split it up")
    try:
        value = _eval(tree)
        if isinstance(value, Fraction):
            return value.numerator if value.denominator == 1 else float(value)
        return _check(float(value))
    except RecursionError:
        raise CalculationError("the expression is nested too deeply") from None
    except OverflowError:
        raise CalculationError("the result is too large for a float") from None
    except (ZeroDivisionError, ValueError) as exc:
        raise CalculationError(f"cannot calculate {expression!r}: {exc}") from None


@tool
def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly, e.g. "(2 + 3) ** 2 / 7".

    Args:
        expression: the arithmetic to evaluate, written with numbers and + - * / ** ( ), e.g. "12 * (3 + 4)".
    """
    return calculate_value(expression)


# --- orders: a real SQLite database -------------------------------------------------------------------------

DEMO_ORDERS = [
    ("A1001", "Alice Martin", "Espresso machine", "shipped", "2026-11-18", "UPS", "2026-11-24"),
    ("A1002", "Bob Chen", "Burr grinder", "processing", "2026-11-21", None, "2026-11-28"),
    ("A1003", "Carla Diaz", "Milk frother", "delivered", "2026-11-12", "DHL", "2026-11-15"),
    ("A1004", "Dev Patel", "Descaling kit", "cancelled", "2026-11-10", None, None),
    ("A1005", "Emma Rossi", "Pour-over set", "shipped", "2026-11-20", "FedEx", "2026-11-25"),
    ("A1006", "Farid Haddad", "Espresso machine", "returned", "2026-11-02", "UPS", None),
    ("A1007", "Grace Kim", "Coffee beans 1 kg", "delivered", "2026-11-19", "USPS", "2026-11-22"),
    ("A1008", "Hugo Laurent", "Tamper", "processing", "2026-11-22", None, "2026-11-29"),
]
ORDERS_ENV = "PHIKIT_ORDERS_DB"


def default_orders_db() -> Path:
    """``$PHIKIT_ORDERS_DB``, else ``orders.db`` in phikit's user data directory."""
    from platformdirs import user_data_dir

    return Path(os.environ.get(ORDERS_ENV) or Path(user_data_dir("phikit")) / "orders.db")


def create_demo_db(path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a SQLite order database with demo rows, atomically (temp file + ``os.replace``).

    Returns:
        The database path.

    Raises:
        PhikitError: the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise PhikitError(f"{path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".orders-", suffix=".db")
    os.close(fd)
    try:
        with sqlite3.connect(tmp) as db:
            db.execute(
                "CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, item TEXT NOT NULL, "
                "status TEXT NOT NULL, updated TEXT NOT NULL, carrier TEXT, eta TEXT)"
            )
            db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", DEMO_ORDERS)
        db.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def order_status(order_id: str, db_path: str | Path | None = None) -> dict:
    """Look an order up with a parameterized query on a read-only connection.

    Raises:
        PhikitError: the database does not exist (the message says how to create it).
    """
    path = Path(db_path) if db_path else default_orders_db()
    if not path.exists():
        raise PhikitError(f"no order database at {path}; create one with: phikit demo-db {path}")
    oid = str(order_id).strip().upper()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT order_id, item, status, updated, carrier, eta FROM orders WHERE order_id = ?", (oid,)
        ).fetchone()
    if row is None:
        return {"order_id": oid, "found": False, "message": "no order with this id"}
    return {"found": True, **dict(row)}


@tool
def get_order_status(order_id: str) -> dict:
    """Look up the status of a customer order by the order id the customer gave.

    Args:
        order_id: the order id exactly as the customer wrote it; never guess one.
    """
    return order_status(order_id)


# --- weather: bundled offline demo data -----------------------------------------------------------------------

def _weather_data() -> dict:
    return json.loads(resources.files("phikit").joinpath("data/weather_demo.json").read_text("utf-8"))


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
    """Current weather for a city (offline demo data bundled with phikit, not a live forecast).

    Args:
        city: the city name, e.g. "Paris".
        unit: the temperature unit, celsius or fahrenheit.
    """
    data = _weather_data()
    cities = data["cities"]
    key = next((k for k in cities if k.lower() == city.strip().lower()), None)
    note = data["note"]
    if key is None:
        return {"city": city, "found": False, "known_cities": sorted(cities), "source": note}
    w = cities[key]
    temp = w["temp_c"] if unit == "celsius" else round(w["temp_c"] * 9 / 5 + 32, 1)
    return {"city": key, "temperature": temp, "unit": unit, "conditions": w["conditions"],
            "humidity_pct": w["humidity_pct"], "source": note}


BUILTINS: dict[str, Tool] = {t.name: t for t in (calculate, get_order_status, get_weather)}
