"""Randomized SVD of dask arrays: lowrank against ``dask.array.linalg.svd_compressed``.

asv part: a small in-process case (synchronous scheduler). Script part (one run, a
``distributed.LocalCluster``)::

    python -m bench.bench_dask --rows 2000000 --chunk 100000 --workers 2

The input ``a = G diag(σ) Vᵀ / sqrt(m)`` (σ_i = 1/i, G Gaussian, V orthogonal) is made
chunk by chunk on the workers and persisted, so every pass reads worker memory. The
optimum ``sqrt(Σ_{i>k} σ_i(a)²)`` comes from the eigenvalues of ``aᵀa`` (one pass), the
error of each result from one more pass; neither is timed. Peak memory per worker is the
largest resident set sampled (every 10 ms) on a worker during the timed call, with the
worker's share of the input, resident before it, as the baseline; every method runs on a
cluster started afresh.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import lowrank


def _chunk(block_id: tuple[int, int], rows: int, n: int, m: int, seed: int) -> np.ndarray:
    """Row chunk ``block_id[0]`` of ``a`` (deterministic in the seed)."""
    v = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    g = np.random.default_rng([seed, block_id[0]]).standard_normal((rows, n))
    return (g * (1.0 / np.arange(1, n + 1))) @ v.T / math.sqrt(m)


def make_input(m: int, n: int, chunk: int, seed: int = 0):
    """The lazy ``m × n`` dask array, chunked by rows."""
    import dask.array as da

    chunks = ((chunk,) * (m // chunk) + ((m % chunk,) if m % chunk else ()), (n,))
    return da.map_blocks(lambda block_id=None, block_info=None: _chunk(
        block_id, block_info[None]["chunk-shape"][0], n, m, seed),
        chunks=chunks, dtype=np.float64, meta=np.empty((0, 0)))


def optimum(a, rank: int) -> float:
    """``sqrt(Σ_{i>rank} σ_i²)`` from the eigenvalues of ``aᵀa`` (one pass)."""
    lam = np.linalg.eigvalsh((a.T @ a).compute())[::-1]
    return math.sqrt(float(np.sum(np.maximum(lam[rank:], 0.0))))


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
        return error(self.a, U, S, Vh) / optimum(self.a, 16) - 1.0

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

    ``reset`` starts the sampler (once) and restarts the peak from the current size, so
    the input's share is excluded from nothing: it is reported as the baseline.
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
    """Fresh cluster, persisted input, one timed factorisation, its error and costs."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        plugin = _graphs_plugin()
        client.register_plugin(plugin)
        a = make_input(args.rows, args.cols, args.chunk).persist()
        wait(a)
        base = max(client.run(_sample_rss, reset=True).values())
        before = cluster.scheduler.plugins[plugin.name].count
        t0 = time.perf_counter()
        if method == "lowrank":
            res = lowrank.randomized_svd(a, args.rank, n_power_iter=q, rng=0)
            U = res.U.persist()
            wait(U)
            S, Vh, passes = res.S, res.Vh, res.passes
        else:
            u, s, v = da.linalg.svd_compressed(a, args.rank, n_power_iter=q, seed=0)
            U, S, Vh = dask.persist(u, s, v)
            wait([U, S, Vh])
            passes = 2 * q + 2
        wall = time.perf_counter() - t0
        graphs = cluster.scheduler.plugins[plugin.name].count - before
        peak = max(client.run(_sample_rss, reset=False).values())
        opt = optimum(a, args.rank) if args.error else math.nan
        excess = error(a, U, S, Vh) / opt - 1.0 if args.error else math.nan
    return {"method": method, "q": q, "passes": passes, "wall_s": wall, "graphs": graphs,
            "peak_mib": peak, "input_mib": base, "excess": excess}


def main(argv: list[str] | None = None) -> None:
    """Run the cluster comparison and print a Markdown table."""
    import dask

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--cols", type=int, default=512)
    p.add_argument("--chunk", type=int, default=100_000)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="8GiB")
    p.add_argument("--runs", default="lowrank:0,svd_compressed:0,lowrank:3,svd_compressed:3",
                   help="comma-separated method:n_power_iter runs")
    p.add_argument("--scaling", action="store_true", help="also time 1 worker (ours, q=3)")
    p.add_argument("--no-error", dest="error", action="store_false",
                   help="skip the two untimed passes measuring the optimum and the error")
    args = p.parse_args(argv)
    import sys

    import cloudpickle

    # workers cannot import this script's package: send its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with dask.config.set({"distributed.worker.memory.target": False,
                          "distributed.worker.memory.spill": False}):
        rows = _compare(args)
        one = _run_one(args, "lowrank", 3, 1)["wall_s"] if args.scaling else None
    print(f"\n{args.rows} x {args.cols} float64, sigma_i = 1/i, chunks of {args.chunk} rows, "
          f"rank {args.rank}, {args.workers} worker processes x 1 thread\n")
    print("| method | n_power_iter | passes | graph executions | wall s | excess err/opt-1 "
          "| peak RSS/worker MiB (before the call) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['q']} | {r['passes']} | {r['graphs']} | {r['wall_s']:.2f} "
              f"| {r['excess']:.3e} | {r['peak_mib']:.0f} ({r['input_mib']:.0f}) |")
    if one is not None:
        two = next((r for r in rows if r["method"] == "lowrank" and r["q"] == 3), None)
        if two is None:
            two = _run_one(args, "lowrank", 3, args.workers)
        print(f"\nscaling (lowrank, q=3): 1 worker {one:.2f} s, {args.workers} workers "
              f"{two['wall_s']:.2f} s, speed-up {one / two['wall_s']:.2f}x")


def _compare(args) -> list[dict]:
    out = []
    for run in args.runs.split(","):
        method, q = run.split(":")
        out.append(_run_one(args, method, int(q), args.workers))
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    main()
