"""LoRA-GA under torch.distributed: 2 gloo ranks with different data get one init, the one a
single process gets from all the batches (all-MiniLM-L6-v2, query/value/intermediate layers)."""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("torch.multiprocessing")

import _hf_model as hf  # noqa: E402

from dist_helpers import free_port, run_ranks  # noqa: E402

import lowrank.torch as lt  # noqa: E402

TARGETS = ["query", "value", "intermediate.dense"]  # 18 layers of two shapes
WORLD = 2


def _peft_model(base):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)
        return peft.get_peft_model(base, cfg)


def _loss(model, batch):
    return model(**batch).last_hidden_state.square().mean()


def _batches():
    tok = hf.tokenizer()
    out = []
    for i in range(2 * WORLD):  # one shard of two batches per rank, unequal lengths
        enc = tok(hf.SENTENCES[2 * i : 2 * i + 2], return_tensors="pt", padding=True)
        out.append(dict(enc))
    return out


def _result(model, grads):
    pairs = lt.find_lora_pairs(model)
    return {
        "grads": {k: v.clone() for k, v in grads.items()},
        "A": {p.name: p.A.detach().clone() for p in pairs},
        "B": {p.name: p.B.detach().clone() for p in pairs},
        "W": {p.name: p.weight.detach().clone() for p in pairs},
    }


def _worker(rank, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = _peft_model(hf.load("base"))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        shard = _batches()[rank::WORLD]
        grads = lt.estimate_gradients(ddp, shard, loss_fn=_loss, progress=False)
        lt.lora_ga_init_(ddp, grads, svd="exact")
        torch.save(_result(model, grads), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()



def test_two_gloo_ranks_get_the_single_process_init(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    run_ranks(_worker, (free_port(), str(tmp_path)), world=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for part in ("grads", "A", "B", "W"):  # every rank holds the same init, bit for bit
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), (part, key)
    model = _peft_model(hf.load("base"))
    single = copy.deepcopy(model)
    grads = lt.estimate_gradients(single, _batches(), loss_fn=_loss, progress=False)
    _, info = lt.lora_ga_init_(single, grads, svd="exact", return_info=True)
    ref = _result(single, grads)
    f32 = torch.finfo(torch.float32).eps
    for key, g in ref["grads"].items():  # a mean over 4 batches: summation order only
        diff = float((ranks[0]["grads"][key] - g).abs().max())
        assert diff <= 64 * f32 * float(g.abs().max()), key
    for pair in lt.find_lora_pairs(single):
        s, name = pair.scaling, pair.name
        off_dist = s * ranks[0]["B"][name].double() @ ranks[0]["A"][name].double()
        off_ref = s * ref["B"][name].double() @ ref["A"][name].double()
        # Perturbation bound for the rank-2r singular subspaces: relative gradient error
        # (~1e-6) amplified by 1 / (gap_2r - 1) and by the gap at r, with a margin of 100.
        gap = min(info[name].gap_2r, info[name].gap_r) - 1
        rel = float((off_dist - off_ref).norm() / off_ref.norm())
        assert rel <= 100 * 64 * f32 / gap, (name, rel, gap)
