"""svd_approx(rtol=) truncates to the smallest rank that meets rtol, and that rank is
close to the Eckart–Young optimum even on flat spectra.

"Meets" is judged by the same estimate the routine reports: with the computed singular
values S, ``err(k)² = ‖a‖_F² − Σ_{i<=k} S_i²`` (the exact Frobenius error of the rank-k
truncation of ``Q B``). The returned rank r has err(r) <= rtol·‖a‖_F and err(r − 1)
does not; the true error of the result meets rtol too. On Gaussian matrices (flat
spectra, the hardest case for randomized range finders) the rank must stay within
6 % (plus one) of the optimum: stopping randQB at the first basis that meets rtol gave
13-33 %.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank


def _estimate(a_norm_sq, S, k):
    return np.sqrt(max(a_norm_sq - np.sum(S[:k] ** 2), 0.0) / a_norm_sq)


@pytest.mark.parametrize("rtol", [0.9, 0.95])
@pytest.mark.parametrize("seed", [0, 1])
def test_flat_spectrum_rank_is_minimal_and_near_optimal(rtol, seed):
    a = np.random.default_rng(seed).standard_normal((1536, 384))
    s = np.linalg.svd(a, compute_uv=False)
    norm_sq = float(np.sum(s**2))
    tails = np.append(np.sqrt(np.cumsum((s**2)[::-1])[::-1] / norm_sq), 0.0)
    optimal = int(np.argmax(tails <= rtol))
    res = lowrank.svd_approx(a, rtol=rtol, rng=seed)
    S = np.asarray(res.S)
    r = res.rank
    assert _estimate(norm_sq, S, r) <= rtol
    assert _estimate(norm_sq, S, r - 1) > rtol  # smallest rank by the same estimate
    true = np.linalg.norm(a - (res.U * S) @ res.Vh) / np.sqrt(norm_sq)
    assert true <= rtol * (1 + 1e-12)
    assert abs(res.error_estimate - true) <= 1e-10
    assert optimal <= r <= 1.06 * optimal + 1
