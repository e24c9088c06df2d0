"""Peak extra memory of randomized_svd / svd_approx(rank=) on a tall NumPy input.

The block Krylov method must hold its m × L basis (L = min(n, b·(q + 1)) columns for
blocks of b = ceil(rank / 2) + n_oversamples columns and q extensions) and, while a
block is orthogonalised, that block, its normalised copy and one product with the
basis: L + 3b columns of m float64 values, plus the m × rank result (the sign fix's
temporaries come after the basis is freed). The bound below allows one more block.
Concatenating the basis at every extension, as before, held the old and the new basis
at once (about 2L + b columns) and fails it. tracemalloc sees NumPy's allocations.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import lowrank

M, N = 50000, 256


@pytest.fixture(scope="module")
def tall():
    a = np.random.default_rng(0).standard_normal((M, N))
    lowrank.randomized_svd(a[:300, :60], 5, rng=0)  # lazy imports happen here, not below
    lowrank.svd_approx(a[:300, :60], rank=5, rng=0)
    return a


def _peak_columns(f):
    """Peak of the memory allocated while ``f`` runs, in columns of m float64 values."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        f()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak / (M * 8)


@pytest.mark.parametrize("rank", [16, 24])
@pytest.mark.parametrize("route", ["randomized_svd", "svd_approx"])
def test_peak_memory_is_the_basis_plus_a_few_blocks(tall, rank, route):
    b = math.ceil(rank / 2) + 10  # the default block and depth (5 extensions)
    L = min(N, 6 * b)
    assert 6 * b < N  # a genuine Krylov plan, not the exact SVD of a full-width one
    if route == "randomized_svd":
        cols = _peak_columns(lambda: lowrank.randomized_svd(tall, rank, rng=0))
    else:
        cols = _peak_columns(lambda: lowrank.svd_approx(tall, rank=rank, rng=0))
    assert cols <= L + 4 * b + rank
    assert cols >= L  # the basis itself is measured (the bound is not vacuous)
