"""Peak extra memory of randomized_svd / svd_approx(rank=) on a tall NumPy input.

The block Krylov method keeps its basis on the short side (n × L), so the long side only
ever holds the first sketch ``A Ω`` (one block of b = ceil(rank / 2) + n_oversamples
columns) and, at the end, ``T = A V W_k`` (m × rank) with the SVD's own copy and ``U``:
at most 3·rank + b columns of m float64 values. A basis on the long side (L = b·(q + 1)
columns, more than 3·rank + b at these ranks) fails the bound, and so does any m × n
temporary. scikit-learn's ``randomized_svd`` (default n_iter) on the same input is the
peer it must not exceed. tracemalloc sees NumPy's allocations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import peak_columns

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
    return peak_columns(f, M)


@pytest.mark.parametrize("rank", [16, 24])
@pytest.mark.parametrize("route", ["randomized_svd", "svd_approx"])
def test_peak_memory_is_the_result_plus_one_block(tall, rank, route):
    from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

    b = math.ceil(rank / 2) + 10  # the default block and depth (5 extensions)
    assert 6 * b < N  # a genuine Krylov plan, not the exact SVD of a full-width one
    assert 6 * b > 3 * rank + b  # a long-side basis would break the bound below
    if route == "randomized_svd":
        cols = _peak_columns(lambda: lowrank.randomized_svd(tall, rank, rng=0))
    else:
        cols = _peak_columns(lambda: lowrank.svd_approx(tall, rank=rank, rng=0))
    assert cols <= 3 * rank + b
    assert cols >= 2 * rank  # T and U themselves are measured (the bound is not vacuous)
    sk_randomized_svd(tall[:300, :60], 5, random_state=0)
    assert cols <= _peak_columns(lambda: sk_randomized_svd(tall, rank, random_state=0))


@pytest.mark.parametrize("rtol", [0.3, 0.2])
def test_fixed_accuracy_peak_is_the_result(rtol):
    """svd_approx(rtol=) keeps its growing basis on the short side too: at most the
    m × rank matrix ``A V W_k``, its SVD's copy and ``U`` (and 16 probe columns) on the
    long side, below scikit-learn's fixed-rank peak at the rank it returns."""
    from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

    rng = np.random.default_rng(1)
    s = 1 / np.arange(1, N + 1)
    a = (rng.standard_normal((M, N)) / math.sqrt(M) * s) @ np.linalg.qr(
        rng.standard_normal((N, N)))[0].T
    lowrank.svd_approx(a[:300], rtol=rtol, rng=0)
    sk_randomized_svd(a[:300], 5, random_state=0)
    out = {}
    cols = _peak_columns(lambda: out.setdefault("res", lowrank.svd_approx(a, rtol=rtol, rng=0)))
    rank = out["res"].rank
    assert 4 <= rank < N // 4  # the iterative route, not the exact SVD
    assert 2 * rank <= cols <= 3 * rank + 16
    assert cols <= _peak_columns(lambda: sk_randomized_svd(a, rank, random_state=0))
