"""Paired statistics shared by the scripts that compare runs task by task."""
import math
from math import comb


def mean_se(xs):
    """Mean of `xs` and its standard error (0 for a single value)."""
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign test p-value of `wins` against `losses` (ties left out)."""
    n, k = wins + losses, min(wins, losses)
    return 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)
