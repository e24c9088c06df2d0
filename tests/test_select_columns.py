"""select_columns: greedy (pivoted QR), maxvol and volume sampling against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
from helpers import same_namespace, to_numpy
from ref_volume import subset_volumes

import lowrank

METHODS = ["maxvol", "pivoted_qr", "volume_sampling"]


def vol(a, cols):
    return float(np.prod(np.abs(np.diag(np.linalg.qr(a[:, list(cols)], mode="r")))))


def small_matrices(count=12):
    rng = np.random.default_rng(0)
    for t in range(count):
        n, m = int(rng.integers(3, 6)), int(rng.integers(5, 9))
        # columns with uneven scales make greedy choices non-trivial
        yield rng.standard_normal((n, m)) * rng.uniform(0.2, 3.0, size=m), t


@pytest.mark.parametrize("method", METHODS)
def test_result_type_and_distinct(xp, asarray, method):
    a = np.random.default_rng(1).standard_normal((5, 8))
    s = lowrank.select_columns(asarray(a), 3, method=method, rng=0)
    assert same_namespace(xp, s)
    assert s.dtype == xp.int64
    assert s.shape == (3,)
    idx = to_numpy(s)
    assert len(set(idx.tolist())) == 3
    assert idx.min() >= 0
    assert idx.max() < 8
    assert vol(a, idx) > 0


def test_pivoted_qr_is_greedy_and_within_k_factorial(xp, asarray):
    for a, t in small_matrices():
        k = 1 + t % 3
        cols = to_numpy(lowrank.select_columns(asarray(a), k, method="pivoted_qr")).tolist()
        assert cols[0] == int(np.argmax(np.linalg.norm(a, axis=0)))
        best = max(subset_volumes(a, k).values())
        assert best / vol(a, cols) <= math.factorial(k) * (1 + 1e-12)
        # greedy: each pick maximises the volume given the earlier picks
        for step in range(1, k):
            gain = [vol(a, [*cols[:step], j]) for j in range(a.shape[1]) if j not in cols[:step]]
            assert vol(a, cols[: step + 1]) >= max(gain) * (1 - 1e-12)


def test_maxvol_never_below_pivoted_qr_and_locally_optimal(xp, asarray):
    for a, t in small_matrices():
        k = 2 + t % 2
        x = asarray(a)
        greedy = to_numpy(lowrank.select_columns(x, k, method="pivoted_qr")).tolist()
        cols = to_numpy(lowrank.select_columns(x, k, method="maxvol")).tolist()
        v = vol(a, cols)
        assert v >= vol(a, greedy) * (1 - 1e-12)
        for i, j in itertools.product(range(k), range(a.shape[1])):
            if j not in cols:  # no single swap gains more than the stopping tolerance
                swapped = [*cols[:i], j, *cols[i + 1 :]]
                assert vol(a, swapped) <= v * (1 + 1e-6)


def test_maxvol_improves_a_bad_greedy_start():
    # greedy takes the long column 0 first (volume 1.2), yet the best pair {1, 2} has 2.28
    a = np.array([[2.0, 1.9, -1.9], [0.0, 0.6, 0.6]])
    greedy = lowrank.select_columns(a, 2, method="pivoted_qr").tolist()
    best = lowrank.select_columns(a, 2, method="maxvol").tolist()
    assert greedy[0] == 0
    assert sorted(best) == [1, 2]
    assert vol(a, best) > vol(a, greedy)


def test_volume_sampling_matches_exact_probabilities():
    a = np.random.default_rng(3).standard_normal((3, 5)) * np.array([1.0, 2.0, 0.5, 1.5, 1.0])
    k, draws = 2, 3000
    probs = {s: v**2 for s, v in subset_volumes(a, k).items()}
    total = sum(probs.values())
    gen = np.random.default_rng(2024)
    counts = dict.fromkeys(probs, 0)
    for _ in range(draws):
        counts[tuple(lowrank.select_columns(a, k, method="volume_sampling", rng=gen).tolist())] += 1
    expected = {s: draws * p / total for s, p in probs.items()}
    chi2 = sum((counts[s] - e) ** 2 / e for s, e in expected.items())
    # df = 9; P(chi2 > 33.7) = 1e-4 under the null
    assert chi2 < 33.7, (chi2, counts, expected)


def test_volume_sampling_complex_and_full_rank_cases():
    a = np.eye(3, 4)
    s = lowrank.select_columns(a, 3, method="volume_sampling", rng=0)
    assert sorted(s.tolist()) == [0, 1, 2]
    z = np.array([[1.0, 1j, 0.0], [0.0, 0.0, 0.0]])
    s = lowrank.select_columns(z, 1, method="volume_sampling", rng=1)
    assert s.tolist()[0] in (0, 1)


def test_same_seed_same_result(xp, asarray):
    a = asarray(np.random.default_rng(4).standard_normal((6, 12)))
    first = to_numpy(lowrank.select_columns(a, 4, method="volume_sampling", rng=7))
    again = to_numpy(lowrank.select_columns(a, 4, method="volume_sampling", rng=7))
    np.testing.assert_array_equal(first, again)


def test_rank_deficient_input():
    a = np.zeros((4, 6))
    a[:, 1], a[:, 4] = 1.0, np.arange(4.0)
    for method in ("maxvol", "pivoted_qr"):
        cols = lowrank.select_columns(a, 3, method=method).tolist()
        assert len(set(cols)) == 3
        assert {1, 4} <= set(cols)
    with pytest.raises(ValueError, match="rank"):
        lowrank.select_columns(a, 3, method="volume_sampling", rng=0)


def test_k_zero_and_input_not_mutated(xp, asarray):
    a = np.random.default_rng(5).standard_normal((3, 4))
    x = asarray(a)
    for method in METHODS:
        assert lowrank.select_columns(x, 0, method=method).shape == (0,)
        lowrank.select_columns(x, 2, method=method, rng=0)
    np.testing.assert_array_equal(to_numpy(x), a)


def test_bad_arguments():
    a = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"`k` must satisfy 0 <= k <= min\(n, m\) = 3; got 4"):
        lowrank.select_columns(a, 4)
    with pytest.raises(TypeError, match="`k` must be an integer"):
        lowrank.select_columns(a, 2.0)
    with pytest.raises(ValueError, match="`method` must be one of"):
        lowrank.select_columns(a, 2, method="random")
    with pytest.raises(ValueError, match=r"`a` must have ndim 2"):
        lowrank.select_columns(np.ones((2, 3, 4)), 2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lowrank.select_columns(np.full((3, 4), np.nan), 2)
    with pytest.raises(TypeError, match="rng"):
        lowrank.select_columns(a, 2, method="volume_sampling", rng="seed")


def _decaying_square(n, low, seed):
    """a = U diag(s) Vᵀ with s from 1 down to `low`, plus its factors."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.logspace(0, math.log10(low), n)
    return (U * s) @ V.T, s, V


def test_volume_sampling_full_rank_decaying_spectrum():
    # e_k(σ²) of this spectrum is ~1e-336: below float64's range, so the sampler's
    # ratios must not be formed from the polynomials themselves.
    a, s, V = _decaying_square(30, 1e-12, seed=6)
    assert lowrank.select_columns(a, 30, method="volume_sampling", rng=0).tolist() == list(range(30))
    # k = n - 1: leaving out column j has probability ∝ det(a₋ⱼᵀ a₋ⱼ) = det(a)² ‖(a⁻¹)ⱼ‖²
    # (Cauchy–Binet), and a⁻¹ = V diag(1/s) Uᵀ gives the row norms without inverting.
    weight = np.sum((V / s) ** 2, axis=1)
    expected_p = weight / weight.sum()
    gen, draws = np.random.default_rng(11), 300
    counts = np.zeros(30)
    for _ in range(draws):
        cols = lowrank.select_columns(a, 29, method="volume_sampling", rng=gen).tolist()
        assert len(cols) == 29
        counts[sorted(set(range(30)) - set(cols))[0]] += 1
    expected = draws * expected_p
    big = expected >= 5  # chi-square bins with enough mass; the rest pooled into one
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    chi2 = float(np.sum((obs - exp) ** 2 / exp))
    df = len(obs) - 1
    assert chi2 < scipy.stats.chi2.ppf(1 - 1e-4, df), (chi2, df, obs, exp)  # false alarm 1e-4
