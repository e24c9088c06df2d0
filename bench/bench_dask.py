"""Randomized SVD of dask arrays: lowrank against ``dask.array.linalg.svd_compressed``.

asv part: a small in-process case (synchronous scheduler). Script part (one run, a
``distributed.LocalCluster``)::

    python -m bench.bench_dask --rows 2000000 --chunk 100000 --workers 2 --scaling

The input ``a = H diag(σ) Vᵀ`` (σ_i = 1/i, V orthogonal) is never stored: every read
makes each chunk afresh on a worker. ``H`` has orthonormal columns by construction:
chunk ``c`` of ``H`` is ``P_c / sqrt(C)``, ``P_c`` the first ``n`` columns of the
Householder reflector ``I − 2 w_c w_cᵀ`` (``w_c`` a seeded Gaussian unit vector, ``C``
chunks), so ``Hᵀ H = Σ P_cᵀ P_c / C = I``, the optimum ``sqrt(Σ_{i>k} σ_i²)`` is known
exactly, and a chunk costs one outer product to make (about as much as reading it). Both
methods are invariant under ``a → W a`` for orthogonal ``W`` (their test matrices act on
the right), so their errors are those of any ``a`` with these singular values and right
singular vectors. ``svd_compressed`` runs with ``compute=True``, its documented choice
for inputs recomputed at every pass (with ``compute=False`` its single graph keeps every
chunk of ``a`` in memory between its passes). The error of each result takes one more,
untimed pass. Peak memory per worker is the largest resident set sampled (every 10 ms)
by a thread in each worker during the timed call, every method on a cluster started
afresh; in parentheses, the worker's resident set before the call.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

import lowrank


def _chunk(block_id: tuple[int, int], rows: int, n: int, count: int, seed: int) -> np.ndarray:
    """Row chunk ``block_id[0]`` of ``a`` (deterministic in the seed)."""
    v = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    b = (v * (1.0 / np.arange(1, n + 1))).T / math.sqrt(count)  # diag(σ) Vᵀ / sqrt(C)
    w = np.random.default_rng([seed, block_id[0]]).standard_normal(rows)
    w /= np.linalg.norm(w)
    out = np.multiply.outer(w, -2.0 * (w[:n] @ b))  # (I − 2 w wᵀ)[:, :n] @ b
    out[:n] += b
    return out


def make_input(m: int, n: int, chunk: int, seed: int = 0):
    """The lazy ``m × n`` dask array, chunked by rows (chunks of at least ``n`` rows)."""
    import dask.array as da

    rows = (chunk,) * (m // chunk) + ((m % chunk,) if m % chunk else ())
    if min(rows) < n:
        msg = f"every row chunk needs at least n = {n} rows; got {min(rows)}"
        raise ValueError(msg)
    return da.map_blocks(lambda block_id=None, block_info=None: _chunk(
        block_id, block_info[None]["chunk-shape"][0], n, len(rows), seed),
        chunks=(rows, (n,)), dtype=np.float64, meta=np.empty((0, 0)))


def optimum(n: int, rank: int) -> float:
    """``sqrt(Σ_{i>rank} σ_i²)`` of the input (exact by construction)."""
    return math.sqrt(float(np.sum((1.0 / np.arange(rank + 1, n + 1)) ** 2)))


def error(a, U, S, Vh) -> float:
    """``‖a − U diag(S) Vh‖_F`` (one pass)."""
    return math.sqrt(float(((a - (U * S) @ Vh) ** 2).sum().compute()))


class DaskRandomizedSVD:
    """asv: 100000 × 256 in 10 chunks, rank 16, synchronous scheduler."""

    params = [["lowrank", "svd_compressed"], [0, 3]]
    param_names = ["method", "n_power_iter"]
    timeout = 300

    def setup(self, method, n_power_iter):
        import dask

        self.ctx = dask.config.set(scheduler="sync")
        self.ctx.__enter__()
        self.a = make_input(100_000, 256, 10_000).persist()
        self.opt = optimum(256, 16)

    def teardown(self, method, n_power_iter):
        self.ctx.__exit__(None, None, None)

    def _run(self, method, n_power_iter):
        import dask
        import dask.array as da

        if method == "lowrank":
            res = lowrank.randomized_svd(self.a, 16, n_power_iter=n_power_iter, rng=0)
            return res.U, res.S, res.Vh
        u, s, v = da.linalg.svd_compressed(self.a, 16, n_power_iter=n_power_iter, seed=0)
        return dask.compute(u, s, v)

    def time_svd(self, method, n_power_iter):
        self._run(method, n_power_iter)

    def track_excess_error(self, method, n_power_iter):
        U, S, Vh = self._run(method, n_power_iter)
        return error(self.a, U, S, Vh) / self.opt - 1.0

    track_excess_error.unit = "err/opt - 1"


# --- script: one run on a LocalCluster -------------------------------------------------

def _graphs_plugin():
    from distributed.diagnostics.plugin import SchedulerPlugin

    class GraphCount(SchedulerPlugin):
        name = "bench-graph-count"

        def __init__(self):
            self.count = 0

        def update_graph(self, scheduler, **kwargs):
            self.count += 1

    return GraphCount()


def _sample_rss(dask_worker, reset: bool) -> float:
    """Peak resident set (MiB) of this worker since the last reset, sampled every 10 ms.

    ``reset`` starts the sampler (once) and restarts the peak from the current size,
    which is returned (the baseline).
    """
    import threading

    import psutil

    state = getattr(dask_worker, "_bench_rss", None)
    if state is None:
        proc, state = psutil.Process(), {"peak": 0}

        def loop():
            while True:
                state["peak"] = max(state["peak"], proc.memory_info().rss)
                time.sleep(0.01)

        threading.Thread(target=loop, daemon=True).start()
        dask_worker._bench_rss = state
    if reset:
        state["peak"] = psutil.Process().memory_info().rss
    return state["peak"] / 2**20


def _run_one(args, method: str, q: int, workers: int) -> dict:
    """Fresh cluster, lazy input, one timed factorisation, its error and costs."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        plugin = _graphs_plugin()
        client.register_plugin(plugin)
        a = make_input(args.rows, args.cols, args.chunk)
        base = max(client.run(_sample_rss, reset=True).values())
        before = cluster.scheduler.plugins[plugin.name].count
        t0 = time.perf_counter()
        if method == "lowrank":
            res = lowrank.randomized_svd(a, args.rank, n_power_iter=q, rng=0)
            U = res.U.persist()
            wait(U)
            S, Vh, passes = res.S, res.Vh, res.passes
        else:
            u, s, v = da.linalg.svd_compressed(a, args.rank, n_power_iter=q, seed=0,
                                               compute=True)
            U, S, Vh = dask.persist(u, s, v)
            wait([U, S, Vh])
            passes = 2 * q + 2
        wall = time.perf_counter() - t0
        graphs = cluster.scheduler.plugins[plugin.name].count - before
        peak = max(client.run(_sample_rss, reset=False).values())
        S, Vh = np.asarray(S), np.asarray(Vh)
        excess = (error(a, U, S, Vh) / optimum(args.cols, args.rank) - 1.0 if args.error
                  else math.nan)
    return {"method": method, "q": q, "workers": workers, "passes": passes, "wall_s": wall,
            "graphs": graphs, "peak_mib": peak, "base_mib": base, "excess": excess}


def main(argv: list[str] | None = None) -> None:
    """Run the cluster comparison and print a Markdown table."""
    import dask

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--chunk", type=int, default=100_000)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per case")
    p.add_argument("--memory-limit", default="6GiB")
    p.add_argument("--runs", default="lowrank:0,svd_compressed:0,lowrank:3,svd_compressed:3",
                   help="comma-separated method:n_power_iter runs")
    p.add_argument("--scaling", action="store_true",
                   help="also run both methods at q=3 on 1 worker")
    p.add_argument("--no-error", dest="error", action="store_false",
                   help="skip the untimed pass measuring the error")
    args = p.parse_args(argv)
    import sys

    import cloudpickle

    # workers cannot import this script's package: send its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cases = [(m, int(q), args.workers) for m, q in (r.split(":") for r in args.runs.split(","))]
    if args.scaling:
        cases += [("lowrank", 3, 1), ("svd_compressed", 3, 1)]
    with dask.config.set({"distributed.worker.memory.target": False,
                          "distributed.worker.memory.spill": False}):
        runs = {c: [] for c in cases}
        for _ in range(args.repeats):  # interleaved: the load drifts alike for every case
            for c in cases:
                runs[c].append(_run_one(args, *c))
                print(runs[c][-1], flush=True)
    print(f"\n{args.rows} x {args.cols} float64, sigma_i = 1/i, chunks of {args.chunk} rows, "
          f"rank {args.rank}, worker processes x 1 thread, median of {args.repeats} runs\n")
    print("| method | n_power_iter | workers | passes | graph executions | wall s (median) "
          "| wall / svd_compressed | excess err/opt-1 | peak RSS/worker MiB (before) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (method, q, w), rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        other = runs.get(("svd_compressed", q, w))
        ratio = wall / statistics.median(r["wall_s"] for r in other) if other else math.nan
        r = rs[0]
        print(f"| {method} | {q} | {w} | {r['passes']} | {r['graphs']} | {wall:.2f} "
              f"| {ratio:.2f} | {r['excess']:.3e} | {max(x['peak_mib'] for x in rs):.0f} "
              f"({r['base_mib']:.0f}) |")
    if args.scaling:
        for method in ("lowrank", "svd_compressed"):
            one = statistics.median(r["wall_s"] for r in runs[(method, 3, 1)])
            two = statistics.median(r["wall_s"] for r in runs[(method, 3, args.workers)])
            print(f"\nscaling ({method}, q=3): 1 worker {one:.2f} s, {args.workers} workers "
                  f"{two:.2f} s, speed-up {one / two:.2f}x")


if __name__ == "__main__":
    main()
