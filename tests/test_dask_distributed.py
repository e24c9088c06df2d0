"""The dask paths on a two-process ``distributed.LocalCluster``.

The basis chunks stay on the workers (futures); the results must equal the local
scheduler's for the same seed and chunking, with one graph submission per pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import matrix_with_spectrum

import lowrank

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402

A = matrix_with_spectrum(1200, 160, 1.0 / np.arange(1, 161), seed=4)
EPS = np.finfo(np.float64).eps


class GraphCount(SchedulerPlugin):
    """Counts graph submissions seen by the scheduler."""

    name = "lowrank-graph-count"

    def __init__(self):
        self.count = 0

    def update_graph(self, scheduler, **kwargs):
        self.count += 1


@pytest.fixture(scope="module")
def client():
    # ":0": any free port for the scheduler's HTTP server (None still binds 8787, which
    # another cluster on the machine may hold)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as cl:
        cl.register_plugin(GraphCount())
        cl.count = lambda: cluster.scheduler.plugins[GraphCount.name].count
        yield cl


def _a():
    return da.from_array(A, chunks=(200, -1))


def test_randomized_svd_on_two_worker_processes(client):
    before = client.count()
    res = lowrank.randomized_svd(_a(), 8, rng=5)
    assert client.count() - before == res.passes == 12
    U = res.U.compute()
    with dask.config.set(scheduler="sync"):
        local = lowrank.randomized_svd(_a(), 8, rng=5)
    np.testing.assert_allclose(res.S, local.S, rtol=1e-12)
    np.testing.assert_allclose(U, local.U.compute(), atol=1e-10)
    assert np.abs(U.T @ U - np.eye(8)).max() <= 100 * 160 * EPS
    kept = res.U.persist()  # lazy on futures: persist-able, computing reads no input
    np.testing.assert_array_equal(kept.compute(), U)


def test_svd_approx_and_range_finder_on_the_cluster(client):
    res = lowrank.svd_approx(_a(), rtol=0.3, rng=0)
    U = res.U.compute()
    err = np.linalg.norm(A - (U * res.S) @ res.Vh) / np.linalg.norm(A)
    assert err <= 0.3
    np.testing.assert_allclose(res.error_estimate, err, rtol=1e-6)
    before = client.count()
    Q = lowrank.randomized_range_finder(_a(), 10, rng=0, compute=True)
    assert client.count() - before == 2 * 2 + 1 + 1  # 5 passes, then the gather of Q
    assert isinstance(Q, np.ndarray) and np.abs(Q.T @ Q - np.eye(10)).max() <= 1e-13


def test_cr_and_volumes_on_the_cluster(client):
    b = np.random.default_rng(1).standard_normal((160, 20))
    out = lowrank.cr_matmul(_a(), b, 40, rng=2).compute()
    np.testing.assert_allclose(out, lowrank.cr_matmul(A, b, 40, rng=2),
                               atol=1e-10 * np.abs(out).max())
    vol = lowrank.log_gram_volume(_a()[:, :10]).compute()
    np.testing.assert_allclose(vol, lowrank.log_gram_volume(A[:, :10]), rtol=1e-12)
