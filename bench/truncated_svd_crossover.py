"""Where PROPACK (verified) beats one thin LAPACK SVD inside ``lowrank.truncated_svd``.

Run: ``OPENBLAS_NUM_THREADS=1 python bench/truncated_svd_crossover.py [--quick]``. One
process; CPU time (``time.process_time``), which a shared machine disturbs less than
wall time. For each shape, spectrum and rank it prints the stable rank
``‖a‖_F² / ‖a‖_2²`` (exact, and the probe estimate the library uses), the time of the
verified PROPACK attempt (``propack_truncated_svd``: None when it fails, after which
``truncated_svd`` also pays the thin SVD) and of ``truncated_svd`` itself, relative to
``numpy.linalg.svd(full_matrices=False)``. "flat" is a Gaussian matrix (the slowest case
for Lanczos); the others have the singular values named.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import lowrank
from lowrank._svd_partial import propack_truncated_svd, stable_rank_estimate, suits_lanczos

SPECTRA = {
    "1/i": lambda k: 1.0 / np.arange(1, k + 1),
    "1/sqrt(i)": lambda k: 1.0 / np.sqrt(np.arange(1, k + 1)),
    "0.99^i": lambda k: 0.99 ** np.arange(k),
}


def _matrix(m: int, n: int, spectrum: str, rng: np.random.Generator) -> np.ndarray:
    if spectrum == "flat":
        return rng.standard_normal((m, n))
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (u * SPECTRA[spectrum](k)) @ v.T


def _cpu(f):
    t = time.process_time()
    out = f()
    return time.process_time() - t, out


def main(quick: bool = False) -> None:
    rng = np.random.default_rng(0)
    shapes = [(3000, 1000)] if quick else [(3000, 1000), (1500, 1500), (4096, 1024)]
    print("shape      spectrum   sr_exact sr_probe rank route    propack/thin  ok   "
          "truncated_svd/thin")
    for m, n in shapes:
        for spectrum in ("flat", *SPECTRA):
            a = _matrix(m, n, spectrum, rng)
            t_thin, _ = _cpu(lambda: np.linalg.svd(a, full_matrices=False))
            s = np.linalg.svd(a, compute_uv=False)
            sr, est = float(np.sum(s**2) / s[0] ** 2), stable_rank_estimate(a)
            for k in sorted({16, 32, 50, min(m, n) // 16}):
                t_p, res = _cpu(lambda: propack_truncated_svd(a, k))
                t_t, _ = _cpu(lambda: lowrank.truncated_svd(a, k))
                route = "propack" if suits_lanczos(a, k) else "thin"
                print(f"{m}x{n:<5d} {spectrum:10s} {sr:8.1f} {est:8.1f} {k:4d} {route:8s} "
                      f"{t_p / t_thin:12.2f}  {res is not None!s:5s} {t_t / t_thin:8.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
