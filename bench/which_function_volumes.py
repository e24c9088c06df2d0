"""The volumes-versus-``slogdet`` table of docs/which_function.md (one process, one thread).

Times ``lowrank.log_gram_volume`` against ``0.5 * slogdet(aᵀa)`` (medians of 15 calls after
two warm-up calls) and measures both log-volumes' absolute errors against a 60-digit mpmath
determinant at condition numbers 1e4, 1e8 and 1e12. Run: ``python bench/which_function_volumes.py``.
"""

from __future__ import annotations

import time

import numpy as np


def _median_seconds(f, repeats=15):
    f()
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _mp_log_volume(a):
    import mpmath

    with mpmath.workdps(60):
        m = mpmath.matrix(a.tolist())
        return float(mpmath.log(mpmath.det(m.T * m)) / 2)


def main() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    import lowrank

    rng = np.random.default_rng(0)
    print("BLAS:", [(i["internal_api"], i["version"]) for i in threadpool_info()])
    with threadpool_limits(1):
        for batch, n, k in [(20000, 8, 3), (1024, 128, 32), (1024, 512, 8), (1, 2000, 200)]:
            a = rng.standard_normal((batch, n, k))
            a = a[0] if batch == 1 else a
            ours = _median_seconds(lambda: lowrank.log_gram_volume(a))
            gram = _median_seconds(lambda: 0.5 * np.linalg.slogdet(np.swapaxes(a, -1, -2) @ a)[1])
            print(f"{batch} x {n}x{k}: log_gram_volume {ours * 1e3:.2f} ms, "
                  f"slogdet(aᵀa) {gram * 1e3:.2f} ms")
    for kappa in (1e4, 1e8, 1e12):
        U = np.linalg.qr(rng.standard_normal((200, 20)))[0]
        V = np.linalg.qr(rng.standard_normal((20, 20)))[0]
        a = (U * np.logspace(0, -np.log10(kappa), 20)) @ V.T
        ref = _mp_log_volume(a)
        ours = abs(float(lowrank.log_gram_volume(a)) - ref)
        gram = abs(0.5 * np.linalg.slogdet(a.T @ a)[1] - ref)
        print(f"kappa {kappa:.0e}: |error| log_gram_volume {ours:.1e}, slogdet(aᵀa) {gram:.1e}")


if __name__ == "__main__":
    main()
