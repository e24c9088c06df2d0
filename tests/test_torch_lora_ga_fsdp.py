"""LoRA-GA under FSDP2 (``fully_shard``), 2 gloo ranks on CPU with different data.

estimate_gradients on the sharded model returns the full mean gradient over all ranks'
batches (the one a single process gets), equal on every rank; lora_ga_init_ refuses the
sharded layers by name and leaves them unchanged; initialising the unsharded model with
those gradients and sharding it afterwards keeps the initialised function.
"""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("torch.multiprocessing")
fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("this torch has no FSDP2 fully_shard", allow_module_level=True)

from dist_helpers import free_port, run_ranks  # noqa: E402

import lowrank.torch as lt  # noqa: E402

WORLD = 2


def _model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(), torch.nn.Linear(24, 10))
        return peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["0", "2"]))


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(6, 12, generator=gen) for _ in range(2 * WORLD)]


def _loss(model, x):
    return model(x).square().mean()


def _worker(rank, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = _model()
        unsharded = copy.deepcopy(model)
        fsdp.fully_shard(model)
        grads = lt.estimate_gradients(model, _batches()[rank::WORLD], loss_fn=_loss,
                                      progress=False)
        assert not any(_is_dtensor(g) for g in grads.values())
        local = {k: v.to_local().clone() for k, v in model.state_dict().items()}
        try:
            lt.lora_ga_init_(model, grads)
        except ValueError as err:
            refused = str(err)
        else:
            refused = ""
        unchanged = all(torch.equal(v.to_local(), local[k]) for k, v in model.state_dict().items())
        lt.lora_ga_init_(unsharded, grads, svd="exact")
        x = _batches()[0]
        with torch.no_grad():
            want = unsharded(x)
            fsdp.fully_shard(unsharded)
            got = unsharded(x)
        torch.save({"grads": grads, "refused": refused, "unchanged": unchanged,
                    "diff": float((got - want).abs().max()), "scale": float(want.abs().max())},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _is_dtensor(t):
    return type(t).__name__ == "DTensor"



def test_fsdp2_estimation_is_the_global_mean_and_init_refuses_shards(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    run_ranks(_worker, (free_port(), str(tmp_path)), world=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = lt.estimate_gradients(_model(), _batches(), loss_fn=_loss, progress=False)
    eps = torch.finfo(torch.float32).eps
    for out in ranks:
        assert out["grads"].keys() == single.keys()
        for key, g in single.items():  # a mean over 4 batches: summation order only
            diff = float((out["grads"][key] - g).abs().max())
            assert diff <= 64 * eps * float(g.abs().max()), key
        assert "sharded by FSDP2" in out["refused"] and "base_model.model.0" in out["refused"]
        assert out["unchanged"]
        # the sharded forward re-associates nothing but the all-gather: same products
        assert out["diff"] <= 64 * eps * max(1.0, out["scale"])
    for key in single:  # one all-gathered result: bit for bit the same on both ranks
        assert torch.equal(ranks[0]["grads"][key], ranks[1]["grads"][key]), key
