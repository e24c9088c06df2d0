"""Where ``svd_approx(rtol=)`` should hand over to one thin SVD (dense input).

Prints, per fraction ``f`` of ``min(m, n)`` at which the randQB basis gives way to the
exact SVD, the time of ``svd_approx`` over that of ``numpy.linalg.svd`` (medians of 3
runs, in one process) on flat and decaying spectra. ``f = 1`` is randQB alone; a huge
divisor means the exact SVD always. The library uses ``min(m, n) / 4``.

Run: ``python bench/svd_approx_crossover.py 1 2 3 4 1000000``
"""

from __future__ import annotations

import sys
import time

import numpy as np

import lowrank
from lowrank._agnostic import _qb


def _matrix(shape, decay, rng):
    m, n = shape
    if decay is None:
        return rng.standard_normal(shape)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (u * decay ** np.arange(n)) @ v.T


def _median_time(f, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(divisors):
    rng = np.random.default_rng(0)
    cases = [(shape, decay, rtol, _matrix(shape, decay, rng))
             for shape in [(1536, 384), (3000, 1000)] for decay in (0.995, 0.98, None)
             for rtol in (0.5, 0.3, 0.1, 0.01)]
    for divisor in divisors:
        _qb.EXACT_FRACTION = divisor
        ratios = []
        for _, _, rtol, a in cases:
            exact = _median_time(lambda a=a: np.linalg.svd(a, full_matrices=False))
            approx = _median_time(lambda a=a, rtol=rtol: lowrank.svd_approx(a, rtol=rtol, rng=0))
            ratios.append(approx / exact)
        print(f"1/{divisor}: " + " ".join(f"{r:.2f}" for r in ratios)
              + f"  max {max(ratios):.2f} mean {np.mean(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [1, 4])
