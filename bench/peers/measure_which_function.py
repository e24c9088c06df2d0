"""Timings behind docs/which_function.md: ``python bench/peers/measure_which_function.py``.

One thread (threadpoolctl), float64 NumPy, median of 5 runs after a warm-up, all ratios
taken in this one process. Errors are relative to the optimum a method aims at.
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import lowrank


def median_ms(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def matrix(m, n, s, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (u * s) @ v.T


def svd_rows():
    m, n = 3000, 1000
    spectra = {
        "1/i": 1.0 / np.arange(1, n + 1),
        "flat + noise": np.r_[np.ones(20), 1e-2 * np.ones(n - 20)],
    }
    print(f"\n## SVD, {m}x{n} float64 (time ms; excess error = err/optimal - 1)")
    for label, s in spectra.items():
        a = matrix(m, n, s)
        fro = np.linalg.norm(a)
        for k in (10, 50):
            opt = np.sqrt(np.sum(s[k:] ** 2))
            rows = {
                "numpy.linalg.svd (thin)": lambda: np.linalg.svd(a, full_matrices=False),
                "truncated_svd": lambda k=k: lowrank.truncated_svd(a, k),
                "randomized_svd": lambda k=k: lowrank.randomized_svd(a, k, rng=0),
            }
            for name, fn in rows.items():
                t = median_ms(fn)
                res = fn()
                if name.startswith("numpy"):
                    u, sv, vh = res[0][:, :k], res[1][:k], res[2][:k]
                else:
                    u, sv, vh = res
                err = np.linalg.norm(a - (u * sv) @ vh)
                print(f"{label:13s} k={k:3d} {name:24s} {t:8.1f} ms  excess {err / opt - 1:.1e}")
        for rtol in (1e-1, 1e-2):
            t = median_ms(lambda rtol=rtol: lowrank.svd_approx(a, rtol=rtol, rng=0))
            r = lowrank.svd_approx(a, rtol=rtol, rng=0)
            need = int(np.searchsorted(-np.sqrt(np.cumsum(s[::-1] ** 2))[::-1], -rtol * fro))
            print(f"{label:13s} svd_approx(rtol={rtol:g}) {t:8.1f} ms  rank {r.rank} "
                  f"(smallest sufficient {need}), passes {r.passes}")


def cr_rows():
    rng = np.random.default_rng(1)
    n, l, m = 300, 20000, 300
    # heavy-tailed column norms: a few outer products carry most of the product
    w = rng.pareto(1.5, l) + 0.05
    a = rng.standard_normal((n, l)) * w
    b = rng.standard_normal((l, m)) * np.sqrt(w)[:, None]
    exact = a @ b
    ref = np.linalg.norm(exact)
    print(f"\n## CR, ({n}x{l}) @ ({l}x{m}) float64, heavy-tailed norms")
    print(f"a @ b                         {median_ms(lambda: a @ b):8.1f} ms")
    for r in (500, 2000):
        for method in ("sample", "topk"):
            def run(r=r, method=method):
                return lowrank.cr_matmul(a, b, r, method=method, rng=0)

            t = median_ms(run)
            err = np.linalg.norm(run() - exact) / ref
            print(f"cr_matmul r={r:5d} {method:7s}    {t:8.1f} ms  rel. error {err:.2e}")
        exp = float(np.sqrt(lowrank.cr_expected_error(a, b, r))) / ref
        print(f"  expected rel. error of sampling: {exp:.2e}")


def volume_rows():
    rng = np.random.default_rng(2)
    print("\n## Volumes")
    batch = rng.standard_normal((20000, 8, 3))
    t_vol = median_ms(lambda: lowrank.log_gram_volume(batch))
    t_slog = median_ms(lambda: np.linalg.slogdet(batch.transpose(0, 2, 1) @ batch))
    print(f"20000 x (8x3): log_gram_volume {t_vol:.1f} ms, slogdet(aᵀa) {t_slog:.1f} ms")
    big = rng.standard_normal((2000, 200))
    t_vol = median_ms(lambda: lowrank.log_gram_volume(big))
    t_slog = median_ms(lambda: np.linalg.slogdet(big.T @ big))
    print(f"1 x (2000x200): log_gram_volume {t_vol:.1f} ms, slogdet(aᵀa) {t_slog:.1f} ms")
    for cond in (1e4, 1e8, 1e12):
        s = np.geomspace(1, 1 / cond, 20)
        a = matrix(200, 20, s, seed=3)
        truth = np.sum(np.log(s))
        via_gram = 0.5 * np.linalg.slogdet(a.T @ a)[1]
        mine = float(lowrank.log_gram_volume(a))
        print(f"cond {cond:.0e}: |error| log_gram_volume {abs(mine - truth):.1e}, "
              f"0.5 slogdet(aᵀa) {abs(via_gram - truth):.1e}  (log-volume {truth:.1f})")


def main():
    import os

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, one thread")
    with threadpool_limits(1):
        svd_rows()
        cr_rows()
        volume_rows()


if __name__ == "__main__":
    main()
