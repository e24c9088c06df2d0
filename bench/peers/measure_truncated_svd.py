"""Measure truncated_svd against the exact peers (the table in README.md).

Run: ``python bench/peers/measure_truncated_svd.py``. One process; every method is warmed up, then
3 repeats run interleaved round-robin (so load drift hits all methods alike); medians,
speed-up over the full thin SVD, and excess error err/err_opt - 1 are printed.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import scipy
import scipy.linalg
from scipy.sparse.linalg import svds
from threadpoolctl import threadpool_info

import lowrank


def methods(a, k):
    def full():
        u, s, vh = scipy.linalg.svd(a, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]

    out = {
        "lowrank.truncated_svd": lambda: lowrank.truncated_svd(a, k),
        "scipy.linalg.svd (full gesdd)": full,
        "scipy svds PROPACK (raw, unverified)": lambda: svds(
            a, k, solver="propack", rng=np.random.default_rng(0)
        ),
    }
    try:
        from sklearn.utils.extmath import randomized_svd
    except ImportError:
        return out
    out["sklearn randomized_svd n_iter=auto"] = lambda: randomized_svd(a, k, random_state=0)
    return out


def measure(a, s, k, repeat=3):
    opt = np.sqrt(np.sum(s[k:] ** 2))
    funcs = methods(a, k)
    results = {name: f() for name, f in funcs.items()}  # warm-up
    times = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, f in funcs.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    base = np.median(times["scipy.linalg.svd (full gesdd)"])
    for name, (u, sv, vh) in results.items():
        err = np.linalg.norm(a - (u * sv) @ vh)
        t = np.median(times[name])
        print(f"| {name} | {t:.3f} s | {base / t:.1f}x | {err / opt - 1:.1e} |", flush=True)


def main():
    blas = [(i["internal_api"], i["version"], i["num_threads"]) for i in threadpool_info()]
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"BLAS {blas}")
    m, n, k = 2048, 1024, 32
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    for label, s in [("1/i", 1 / np.arange(1, n + 1)), ("i^-0.5", np.arange(1, n + 1) ** -0.5)]:
        print(f"\n{m}x{n} float64, sigma_i = {label}, rank {k}")
        print("| method | median time | speed-up vs full SVD | excess error |")
        print("| --- | --- | --- | --- |")
        measure((U * s) @ V.T, s, k)


if __name__ == "__main__":
    main()
