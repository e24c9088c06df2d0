"""estimate_gradient_svd under torch.distributed: 2 gloo ranks with different shards get the
estimate a single process gets from all the batches, reducing only (m + n) ℓ products."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.multiprocessing")

from test_grad_svd import _batches, _loss, _mlp  # noqa: E402

from dist_helpers import free_port, run_ranks  # noqa: E402

import lowrank.torch as lt  # noqa: E402

WORLD, RANK, SWEEPS, BLOCK = 2, 8, 3, 12


def _worker(rank, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    sizes = []
    real = dist.all_reduce

    def counting(tensor, *args, **kwargs):
        sizes.append(tensor.numel())
        return real(tensor, *args, **kwargs)

    try:
        dist.all_reduce = counting
        ddp = torch.nn.parallel.DistributedDataParallel(_mlp())
        shard = _batches(n=6)[rank::WORLD]  # three batches per rank
        svd = lt.estimate_gradient_svd(ddp, shard, RANK, n_sweeps=SWEEPS, block_size=BLOCK,
                                       loss_fn=_loss, rng=7, progress=False)
        torch.save({"svd": {k: tuple(v[:3]) for k, v in svd.items()}, "sizes": sizes},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.all_reduce = real
        dist.destroy_process_group()



def test_two_gloo_ranks_get_the_single_process_estimate(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    run_ranks(_worker, (free_port(), str(tmp_path)), world=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for key, (U, S, Vh) in ranks[0]["svd"].items():  # every rank: the same estimate, bitwise
        U1, S1, Vh1 = ranks[1]["svd"][key]
        assert torch.equal(U, U1) and torch.equal(S, S1) and torch.equal(Vh, Vh1), key
    # Only the sketch's products (and one small statistics vector per sweep) are reduced:
    # per sweep and layer G X (m x ℓ) and Gᵀ Y (n x ℓ), never an m x n gradient.
    shapes = {"0.weight": (256, 192), "3.weight": (224, 256), "5.weight": (12, 224)}
    sizes = ranks[0]["sizes"]
    stats = [s for s in sizes if s == 3 + len(shapes)]
    assert len(stats) == SWEEPS
    per_sweep = sum((m + n) * (BLOCK + 8) for m, n in shapes.values()) + 3 + len(shapes)
    assert sum(sizes) <= SWEEPS * per_sweep
    assert per_sweep < sum(m * n for m, n in shapes.values()) / 4  # one exact all-reduce
    single = lt.estimate_gradient_svd(_mlp(), _batches(n=6), RANK, n_sweeps=SWEEPS,
                                      block_size=BLOCK, loss_fn=_loss, rng=7, progress=False)
    f32 = torch.finfo(torch.float32).eps
    for key, res in single.items():
        U, S, Vh = ranks[0]["svd"][key]
        # The same products up to summation order (~64 eps relative); the Krylov basis
        # amplifies that by at most the inverse relative gap at the rank (margin 100).
        assert torch.allclose(S, res.S, rtol=0, atol=64 * f32 * float(res.S[0])), key
        gap = res.gap - 1 if res.gap == res.gap else 1.0
        a = (U.double() * S.double()) @ Vh.double()
        b = (res.U.double() * res.S.double()) @ res.Vh.double()
        rel = float((a - b).norm() / b.norm())
        assert rel <= 100 * 64 * f32 / min(gap, 1.0), (key, rel, gap)
