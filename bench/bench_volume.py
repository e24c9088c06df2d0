"""asv benchmarks for Gram volumes and column selection: time, memory, accuracy."""

from __future__ import annotations

import numpy as np

import lowrank

from .common import SkipNotImplemented, XPBenchmark, to_backend

# (batch, n, k): the two speed targets (3×2 and 16×4), and one LAPACK-sized case
SHAPES = [(1_000_000, 3, 2), (100_000, 16, 4), (200, 256, 64)]


def batch_with_kappa(batch, n, k, kappa, seed=0):
    """Host float64 (batch, n, k) matrices with singular values from 1 down to 1/kappa."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((batch, n, k)))
    V, _ = np.linalg.qr(rng.standard_normal((batch, k, k)))
    return (U * np.geomspace(1.0, 1.0 / kappa, k)) @ V


class GramVolume(XPBenchmark):
    """``gram_volume`` / ``log_gram_volume`` against NumPy's ``slogdet(aᵀa)``."""

    params = (*XPBenchmark.params, ["float64", "float32"], [True, False], SHAPES)
    param_names = (*XPBenchmark.param_names, "dtype", "use_kernels", "shape")
    timeout = 300

    def setup(self, backend, dtype, use_kernels, shape):
        self.setup_backend(backend)
        if backend == "array_api_strict" and shape[0] > 100_000:
            msg = "array-api-strict: smaller batches only"
            raise SkipNotImplemented(msg)
        if not use_kernels and backend not in ("numpy", "cupy"):
            msg = "kernels exist only for numpy and cupy: the kernel-off run is the same"
            raise SkipNotImplemented(msg)
        a = np.random.default_rng(0).standard_normal(shape)
        self.a = self.xp.astype(to_backend(a, self.xp, self.device), getattr(self.xp, dtype))
        self.ctx = lowrank.config_context(use_kernels=use_kernels)
        self.ctx.__enter__()
        lowrank.log_gram_volume(self.a)  # JIT warm-up outside the timings
        self.sync()

    def teardown(self, *args):
        self.ctx.__exit__(None, None, None)

    def time_gram_volume(self, *args):
        lowrank.gram_volume(self.a)
        self.sync()

    def time_log_gram_volume(self, *args):
        lowrank.log_gram_volume(self.a)
        self.sync()

    def time_slogdet_gram_baseline(self, *args):
        xp = self.xp
        xp.linalg.slogdet(xp.matrix_transpose(self.a) @ self.a)
        self.sync()

    def peakmem_log_gram_volume(self, *args):
        lowrank.log_gram_volume(self.a)


class GramVolumeAccuracy:
    """Largest |Δ log vol| against float64 QR of the float64 data, by condition number."""

    params = (["float64", "float32"], [1e2, 1e4, 1e8], [True, False])
    param_names = ("dtype", "kappa", "use_kernels")

    def setup(self, dtype, kappa, use_kernels):
        if dtype == "float32" and kappa > 1e5:
            msg = "beyond float32's accuracy target 1/(100·n·eps)"
            raise SkipNotImplemented(msg)
        a64 = batch_with_kappa(500, 20, 4, kappa)
        self.a = a64.astype(dtype)
        exact = self.a.astype(np.float64)
        r = np.linalg.qr(exact, mode="r")
        self.ref = np.sum(np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1))), axis=-1)
        self.use_kernels = use_kernels

    def track_log_volume_abs_error(self, *args):
        with lowrank.config_context(use_kernels=self.use_kernels):
            got = lowrank.log_gram_volume(self.a).astype(np.float64)
        return float(np.max(np.abs(got - self.ref)))

    def track_slogdet_gram_abs_error(self, *args):
        got = np.linalg.slogdet(np.swapaxes(self.a, -1, -2) @ self.a)[1].astype(np.float64) / 2
        return float(np.max(np.abs(got - self.ref)))


class SelectColumns(XPBenchmark):
    """``select_columns`` on a 200×1000 matrix, k = 20."""

    params = (*XPBenchmark.params, ["maxvol", "pivoted_qr", "volume_sampling"])
    param_names = (*XPBenchmark.param_names, "method")
    timeout = 300

    def setup(self, backend, method):
        self.setup_backend(backend)
        a = np.random.default_rng(0).standard_normal((200, 1000)) * np.geomspace(1, 1e-3, 1000)
        self.a = to_backend(a, self.xp, self.device)
        self.method = method

    def time_select_columns(self, *args):
        lowrank.select_columns(self.a, 20, method=self.method, rng=0)
        self.sync()

    def track_log_volume(self, *args):
        cols = lowrank.select_columns(self.a, 20, method=self.method, rng=0)
        return float(lowrank.log_gram_volume(self.xp.take(self.a, cols, axis=1)))


# --- one-process measurement: ``python -m bench.bench_volume [--threads T] [--quick]`` ----

TABLE_SHAPES = [(64, 8), (128, 32), (512, 8), (512, 64), (2048, 16), (16, 4), (32, 8)]
# the public functions against slogdet(aᵀa): the grid of docs/theory/volume.md
GRID_BATCHES = (1, 16, 1024)
GRID_SHAPES = [(64, 8), (128, 32), (512, 8), (512, 64), (2048, 16)]
GRID_MAX_ELEMENTS = 2**23  # batches of the largest shapes are cut to this many entries


def _routes():
    """name -> f(a) for the batched (B, n, k) array a; None where a route does not apply."""
    from lowrank.kernels import volume_gram_numba, volume_numba

    def qr_kernel(a):
        n, k = a.shape[1:]
        if k > 32 or n * k > 4096:
            return None
        return lambda: volume_numba.log_gram_volume(a, np.empty(len(a), a.dtype), True)

    def gram_route(a):
        if a.shape[2] > 64 or a.shape[1] <= a.shape[2]:
            return None
        out, ok = np.empty(len(a), a.dtype), np.empty(len(a), bool)
        return lambda: volume_gram_numba.gram_log_volume(a, out, ok, True)

    return {
        "lowrank": lambda a: lambda: lowrank.log_gram_volume(a),
        "qr-kernel": qr_kernel,
        "gram-route": gram_route,
        "lapack-qr": lambda a: lambda: np.linalg.qr(a, mode="r"),
        "slogdet": lambda a: lambda: np.linalg.slogdet(np.swapaxes(a, -1, -2) @ a),
    }


def _times(funcs, repeats, stat):
    """Median (or min) seconds of each zero-argument function, interleaved per repeat."""
    import time

    for f in funcs.values():
        f()  # warm-up (JIT, caches)
    times = {name: [] for name in funcs}
    names = list(funcs)
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            # the call after another method's (LAPACK's large temporaries) runs on cold
            # caches, which costs Python-heavy entry points most (+75 µs measured for
            # log_gram_volume of 1024 16×4 matrices, +20 µs for the kernel alone): time
            # the second of two calls, i.e. the steady state of a loop of volume calls
            funcs[name]()
            t0 = time.perf_counter()
            funcs[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: float(getattr(np, stat)(t)) for name, t in times.items()}


def grid(repeats, stat, batches=GRID_BATCHES, shapes=GRID_SHAPES, seed=0):
    """Rows of the public-function grid: time / slogdet(aᵀa) time, both dtypes at once.

    Per (B, n×k): ``log_gram_volume`` and ``gram_volume`` on float64 and float32 data
    and ``slogdet(aᵀa)`` on each, six functions interleaved in one loop. B = 1 passes a
    single (n, k) matrix. Returns dicts with the ratios, slogdet's times and the
    float32/float64 time ratio of ``log_gram_volume``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        for n, k in shapes:
            b = batch if n * k * batch <= GRID_MAX_ELEMENTS else max(1, GRID_MAX_ELEMENTS // (n * k))
            shape = (n, k) if b == 1 else (b, n, k)
            a64 = rng.standard_normal(shape)
            a32 = a64.astype(np.float32)
            funcs = {}
            for name, a in (("64", a64), ("32", a32)):
                funcs["log" + name] = lambda a=a: lowrank.log_gram_volume(a)
                funcs["vol" + name] = lambda a=a: lowrank.gram_volume(a)
                funcs["slogdet" + name] = lambda a=a: np.linalg.slogdet(a.mT @ a)
            t = _times(funcs, repeats if b < 1024 else max(5, repeats // 3), stat)
            rows.append({
                "B": b, "shape": f"{n}×{k}",
                **{f"{f}/slogdet {d}": t[f + d] / t["slogdet" + d]
                   for d in ("64", "32") for f in ("log", "vol")},
                "slogdet µs 64": t["slogdet64"] * 1e6, "slogdet µs 32": t["slogdet32"] * 1e6,
                "f32/f64": t["log32"] / t["log64"],
            })
    return rows


def _print_grid(rows):
    cols = ["log/slogdet 64", "vol/slogdet 64", "log/slogdet 32", "vol/slogdet 32", "f32/f64"]
    print("| B | n×k | log f64 | vol f64 | log f32 | vol f32 | f32/f64 (log) | slogdet µs f64/f32 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = " | ".join(f"{r[c]:.2f}" for c in cols)
        print(f"| {r['B']} | {r['shape']} | {cells} | "
              f"{r['slogdet µs 64']:.0f} / {r['slogdet µs 32']:.0f} |", flush=True)


def main(argv=None):
    """Print route times relative to ``slogdet(aᵀa)`` (ratio < 1: faster) per shape/dtype."""
    import argparse
    import os

    from threadpoolctl import threadpool_info, threadpool_limits

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and kernel threads; 0: the defaults (all cores)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="min: the least disturbed run, for a shared machine")
    parser.add_argument("--grid", action="store_true",
                        help="only the public functions on the B × n×k grid, as a table")
    parser.add_argument("--batches", type=int, nargs="+", default=list(GRID_BATCHES),
                        help="batch sizes of --grid")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)  # lowrank's kernel thread pool
    batches = (1, 64) if args.quick else (1, 64, 1024)
    repeats = 5 if args.quick else args.repeats
    routes = _routes()
    rng = np.random.default_rng(0)
    with threadpool_limits(args.threads or None):
        libs = sorted({f"{d['internal_api']} {d['version']} x{d['num_threads']}"
                       for d in threadpool_info()})
        print(f"threads={args.threads or 'default'} (NUMBA_NUM_THREADS and threadpoolctl): "
              f"{', '.join(libs)}")
        print(f"time / slogdet(aᵀa) time, {args.stat} of {repeats} interleaved repeats; "
              f"load average {os.getloadavg()[0]:.1f}")
        if args.grid:
            _print_grid(grid(repeats, args.stat, batches=args.batches))
            return
        print(f"{'B':>5} {'n×k':>8} {'dtype':8}" + "".join(f"{r:>11}" for r in routes if r != "slogdet")
              + f"{'slogdet µs':>12} {'f32/f64 lowrank':>16}")
        for batch in batches:
            for n, k in TABLE_SHAPES:
                per_dtype = {}
                for dtype in ("float64", "float32"):
                    b = batch if n * k * batch <= 2**23 else max(1, 2**23 // (n * k))
                    a = rng.standard_normal((b, n, k)).astype(dtype)
                    funcs = {r: f(a) for r, f in routes.items()}
                    t = _times({r: f for r, f in funcs.items() if f is not None}, repeats,
                               args.stat)
                    per_dtype[dtype] = t["lowrank"]
                    cells = "".join(f"{t[r] / t['slogdet']:11.2f}" if r in t else f"{'-':>11}"
                                    for r in routes if r != "slogdet")
                    ratio = per_dtype["float32"] / per_dtype["float64"] if dtype == "float32" else None
                    print(f"{b:5d} {f'{n}×{k}':>8} {dtype:8}{cells}{t['slogdet'] * 1e6:12.1f}"
                          + (f"{ratio:16.2f}" if ratio is not None else ""), flush=True)


if __name__ == "__main__":
    main()
