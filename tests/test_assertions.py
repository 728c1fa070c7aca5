"""No test asserts something that cannot fail.

The scan reads every test file as source and flags the assertion forms that
hold whatever the code under test does: a true constant (``assert True``), an
``or`` with a true constant, the same expression on both sides of ``==``,
``<=``, ``>=`` or ``is`` (``x == x``: write ``not math.isnan(x)`` for a NaN
check), a value against ``pytest.approx`` of itself, and a length compared
``>= 0``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _always_true(test: ast.expr) -> str | None:
    """Why the assertion ``test`` cannot fail, or None."""
    if isinstance(test, ast.Constant):
        return "a constant" if test.value else None
    if (isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or)
            and any(isinstance(v, ast.Constant) and v.value for v in test.values)):
        return "an 'or' with a true constant"
    if isinstance(test, ast.Compare):
        sides = [test.left, *test.comparators]
        for left, op, right in zip(sides, test.ops, sides[1:], strict=False):
            if isinstance(op, ast.Eq | ast.LtE | ast.GtE | ast.Is) and ast.dump(left) == ast.dump(right):
                return "the same expression on both sides"
            if (isinstance(right, ast.Call) and ast.unparse(right.func).endswith("approx") and right.args
                    and ast.dump(right.args[0]) == ast.dump(left)):
                return "a value against approx of itself"
            if (isinstance(op, ast.GtE) and isinstance(right, ast.Constant) and right.value == 0
                    and isinstance(left, ast.Call) and ast.unparse(left.func) == "len"):
                return "a length >= 0"
    return None


def always_true_assertions(source: str) -> list[tuple[int, str]]:
    """(line, reason) of every assertion in ``source`` that cannot fail."""
    return [(node.lineno, reason) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assert) and (reason := _always_true(node.test)) is not None]


def test_no_test_asserts_something_that_cannot_fail() -> None:
    found = [f"{path.relative_to(TESTS)}:{line}: {reason}"
             for path in sorted(TESTS.rglob("*.py"))
             for line, reason in always_true_assertions(path.read_text(encoding="utf-8"))]
    assert found == [], "assertions that cannot fail:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "assert True\n",
    "assert 1, 'message'\n",
    "assert x > 0 or True\n",
    "assert x == x\n",
    "assert f(a) <= f(a)\n",
    "assert t.end is t.end\n",
    "assert y == pytest.approx(y, rel=1e-9)\n",
    "assert len(rows) >= 0\n",
    "def test():\n    for x in xs:\n        assert x.a >= x.a\n",
])
def test_the_scan_finds_each_form(source: str) -> None:
    assert len(always_true_assertions(source)) == 1


@pytest.mark.parametrize("source", [
    "assert x\n",
    "assert x == y\n",
    "assert x < x + 1\n",  # may fail (NaN, inf)
    "assert not math.isnan(x)\n",
    "assert y == pytest.approx(z)\n",
    "assert len(rows) > 0\n",
    "assert False, 'unreachable'\n",
])
def test_the_scan_passes_assertions_that_can_fail(source: str) -> None:
    assert always_true_assertions(source) == []
