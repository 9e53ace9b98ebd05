"""Fisher's exact test and the Benjamini-Hochberg correction, by hand.

Hand-written rather than adding scipy (~40 MB) for two functions: the two-sided exact test is a
sum over one hypergeometric distribution, computed here with the ratio of consecutive
probabilities in log space (exact to floating point at any table size, no factorials), and the
correction is a sort. Tests check both against published values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of the 2x2 table [[a, b], [c, d]]: the probability, with the margins
    fixed, of a table no more likely than the one observed (the usual 'minimum likelihood'
    definition, as R's fisher.test and scipy's)."""
    row, col, n = a + b, a + c, a + b + c + d
    low, high = max(0, row + col - n), min(row, col)
    x = np.arange(low, high, dtype=np.float64)
    ratios = np.log(row - x) + np.log(col - x) - np.log(x + 1) - np.log(n - row - col + x + 1)
    log_pmf = np.concatenate(([0.0], np.cumsum(ratios)))
    log_pmf -= log_pmf.max()
    pmf = np.exp(log_pmf)
    pmf /= pmf.sum()
    observed = pmf[a - low]
    return float(min(1.0, pmf[pmf <= observed * (1 + 1e-7)].sum()))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """The q-values: a hypothesis is rejected at false-discovery rate `alpha` when its q <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = running
    return q
