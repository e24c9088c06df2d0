"""LoRAProAdamW under adversarial use: user code touching parameters, state and groups.

The optimizer keeps factors and Adam states in per-shape stacks with the per-parameter
state entries as views; these tests check that what a user does through the ordinary
``torch.optim`` surface (replacing or deleting ``optimizer.state[p]``, loading states of
another format, schedulers, AMP, accumulation, DDP, a real model) is honoured exactly
as a per-layer optimizer would honour it.
"""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")

import lowrank  # noqa: E402
from lowrank.torch import LoRAProAdamW  # noqa: E402

#: (out, in, r): two layers share a shape (one stack), one has its own, one another rank
SHAPES = [(8, 12, 3), (8, 12, 3), (20, 12, 3), (10, 6, 2)]


def make_pairs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i, (out, n_in, r) in enumerate(SHAPES):
        A = torch.randn(r, n_in, generator=g, dtype=dtype) / n_in**0.5
        B = torch.randn(out, r, generator=g, dtype=dtype) / r**0.5
        pairs.append((torch.nn.Parameter(A), torch.nn.Parameter(B), 0.5 + 0.5 * i))
    return pairs


def params_of(pairs):
    return [t for A, B, _ in pairs for t in (A, B)]


def set_grads(pairs, k):
    """LoRA gradients s BᵀG and s G Aᵀ of a seeded full gradient G."""
    g = torch.Generator().manual_seed(100 + k)
    for A, B, s in pairs:
        G = torch.randn(B.shape[0], A.shape[1], generator=g, dtype=A.dtype)
        A.grad = s * B.detach().T @ G
        B.grad = s * G @ A.detach().T


def twin_of(pairs):
    twin = make_pairs()
    with torch.no_grad():
        for a, b in zip(params_of(twin), params_of(pairs), strict=True):
            a.copy_(b)
    return twin


def assert_same_params(got, want, tol=1e-13):
    # Same arithmetic on the same float64 inputs; only the stacking (which layers are
    # batched together) may differ, which changes no per-layer operation: rounding only.
    for a, b in zip(params_of(got), params_of(want), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=tol), float((a - b).detach().abs().max())


@pytest.mark.parametrize("mode", ["efficient", "full"])
@pytest.mark.parametrize("how", ["replace", "delete"])
def test_a_replaced_or_deleted_state_dict_restarts_adam_for_that_parameter(mode, how):
    """``optimizer.state[p] = {...}`` / ``del optimizer.state[p]`` as in torch.optim: the
    next step starts Adam afresh for p (a stale dict holding views must not win)."""
    pairs = make_pairs()
    opt = LoRAProAdamW(params_of(pairs), lr=1e-2, mode=mode, weight_decay_to="zero", pairs=pairs)
    for k in range(2):
        set_grads(pairs, k)
        opt.step()
    for t in params_of(pairs):
        if how == "replace":
            opt.state[t] = {}
        else:
            del opt.state[t]
    fresh_pairs = twin_of(pairs)
    fresh = LoRAProAdamW(
        params_of(fresh_pairs), lr=1e-2, mode=mode, weight_decay_to="zero", pairs=fresh_pairs
    )
    for ps, o in ((pairs, opt), (fresh_pairs, fresh)):
        set_grads(ps, 2)
        o.step()
    assert_same_params(pairs, fresh_pairs)
    A = pairs[0][0]
    assert opt.state[A]["step"] == 1  # the dict now in the state is the one stepped
    key = "exp_avg" if mode == "efficient" else "weight_exp_avg"
    assert torch.equal(opt.state[A][key], fresh.state[fresh_pairs[0][0]][key])


def test_a_replaced_state_dict_with_saved_values_is_used():
    """Restoring one parameter's saved state dict (a copy) rewinds its Adam moments."""
    pairs = make_pairs()
    opt = LoRAProAdamW(params_of(pairs), lr=1e-2, weight_decay_to="zero", pairs=pairs)
    set_grads(pairs, 0)
    opt.step()
    saved = {id(t): copy.deepcopy(dict(opt.state[t])) for t in params_of(pairs)}
    twin = twin_of(pairs)
    twin_opt = LoRAProAdamW(params_of(twin), lr=1e-2, weight_decay_to="zero", pairs=twin)
    for t, u in zip(params_of(pairs), params_of(twin), strict=True):
        twin_opt.state[u].update(copy.deepcopy(saved[id(t)]))
    set_grads(pairs, 1)
    opt.step()  # moments move on; rewind them to step 1 by replacing the dicts
    with torch.no_grad():
        for t, u in zip(params_of(pairs), params_of(twin), strict=True):
            t.copy_(u)
    for t in params_of(pairs):
        opt.state[t] = copy.deepcopy(saved[id(t)])
    for ps, o in ((pairs, opt), (twin, twin_opt)):
        set_grads(ps, 5)
        o.step()
    assert_same_params(pairs, twin)


def test_meta_parameters_are_refused_by_name():
    with torch.device("meta"):
        A, B = torch.nn.Parameter(torch.empty(3, 12)), torch.nn.Parameter(torch.empty(9, 3))
    with pytest.raises(ValueError, match=r"pair0.*meta"):
        LoRAProAdamW([A, B], pairs=[(A, B, 2.0)])
    other = torch.nn.Parameter(torch.empty(4, device="meta"))
    A, B = torch.nn.Parameter(torch.ones(3, 12)), torch.nn.Parameter(torch.ones(9, 3))
    with pytest.raises(ValueError, match="meta"):
        LoRAProAdamW([A, B, other], pairs=[(A, B, 2.0)])
    opt = LoRAProAdamW([A, B], pairs=[(A, B, 2.0)])
    with pytest.raises(ValueError, match="param group 1, parameter 0.*meta"):
        opt.add_param_group({"params": other})
    assert len(opt.param_groups) == 1  # refused before it was added


def test_tied_factors_are_refused_naming_both_pairs():
    A = torch.nn.Parameter(torch.ones(2, 5))
    B1, B2 = torch.nn.Parameter(torch.ones(4, 2)), torch.nn.Parameter(torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"'pair0' \(A\) and 'pair1' \(A\)"):
        LoRAProAdamW([A, B1, B2], pairs=[(A, B1, 2.0), (A, B2, 2.0)])


def decay_only_step(opt, pairs):
    """A step with zero gradients and zero moments: only the decoupled decay moves p."""
    for t in params_of(pairs):
        t.grad = torch.zeros_like(t)
    opt.step()


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_weight_decay_to_survives_loading_a_state_without_or_with_anchors(mode):
    """Loading a state dict saved without anchors keeps this optimizer's own anchors
    (weight_decay_to="init"); a "zero" optimizer ignores anchors found in a loaded state."""
    lr, wd = 0.1, 0.5
    pairs = make_pairs()
    init = [t.detach().clone() for t in params_of(pairs)]
    plain = LoRAProAdamW(
        params_of(pairs), lr=lr, weight_decay=wd, mode=mode, weight_decay_to="zero", pairs=pairs
    )
    anchored = LoRAProAdamW(
        params_of(pairs), lr=lr, weight_decay=wd, mode=mode, weight_decay_to="init", pairs=pairs
    )
    no_anchors, with_anchors = plain.state_dict(), copy.deepcopy(anchored.state_dict())
    with torch.no_grad():
        for t in params_of(pairs):
            t.add_(1.0)  # away from the anchors
    moved = [t.detach().clone() for t in params_of(pairs)]
    anchored.load_state_dict(no_anchors)
    decay_only_step(anchored, pairs)
    for t, p, p0 in zip(params_of(pairs), moved, init, strict=True):
        assert torch.allclose(t, p - lr * wd * (p - p0), rtol=0, atol=1e-14)
    moved = [t.detach().clone() for t in params_of(pairs)]
    plain.load_state_dict(with_anchors)
    decay_only_step(plain, pairs)
    for t, p in zip(params_of(pairs), moved, strict=True):
        assert torch.allclose(t, p * (1 - lr * wd), rtol=0, atol=1e-14)


# --- a real model: all-MiniLM-L6-v2 with PEFT LoRA, against a float64 per-layer reference --


def test_minilm_twenty_steps_follow_the_float64_per_layer_reference_to_float32_rounding():
    """20 steps (2 accumulated micro-batches each, clip_grad_norm_, StepLR, decay toward
    the initial factors) on the real model from PEFT's B = 0 start; after each step every
    factor must equal a float64 per-layer step (`lowrank.lora_pro_adjust` + textbook
    AdamW) from the same parameters and gradients, up to a float32 rounding bound.

    The bound, per element: the optimizer's adjusted gradient differs from the float64 one
    by at most E (measured for each tensor as the error of the float32 evaluation of the
    same formula, times 2 for the stacked evaluation's other summation order, maximised
    over the steps so far since Adam's states carry every past error). Adam's moments
    are averages, so m̂ and sqrt(v̂) move by at most E, and the direction
    d = m̂/(sqrt(v̂) + eps) by at most E (1 + |d|)/(sqrt(v̂) + eps) to first order (x2 for
    the second order); storing the float32 result adds rounding of |p| + lr |d|."""
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    import _hf_model as hf
    import peft

    from lowrank.torch import find_lora_pairs

    u32 = torch.finfo(torch.float32).eps
    tok = hf.tokenizer()
    batches = hf.mlm_batches(tok, n_batches=4, size=4)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # transformers' own deprecation of a name PEFT still calls, not our code
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        torch.manual_seed(0)
        cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"])
        model = peft.get_peft_model(hf.load("masked_lm"), cfg)
    pairs = find_lora_pairs(model)
    assert len(pairs) == 37  # 6 x (q, k, v, 3 dense) and the MLM head's transform
    betas, eps, wd = (0.9, 0.999), 1e-8, 0.01
    opt = LoRAProAdamW(model, lr=2e-3, betas=betas, eps=eps, weight_decay=wd)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    factors = [t for p in pairs for t in (p.A, p.B)]
    init = {id(t): t.detach().double() for t in factors}
    ref = {id(t): {"t": 0, "m": 0.0, "v": 0.0, "E": 0.0} for t in factors}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-core CI: one thread is fastest for these small layers
    try:
        for k in range(20):
            for j in range(2):
                (model(**batches[(2 * k + j) % 4]).loss / 2).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            lr = opt.param_groups[0]["lr"]
            want = {}
            with torch.no_grad():
                for p in pairs:
                    a, b, ga, gb = (x.detach().double() for x in (p.A, p.B, p.A.grad, p.B.grad))
                    exact = lowrank.lora_pro_adjust(a, b, ga, gb, scaling=p.scaling)
                    f32 = lowrank.lora_pro_adjust(
                        p.A.detach(), p.B.detach(), p.A.grad, p.B.grad, scaling=p.scaling
                    )
                    for t, x, g, g32 in ((p.A, a, exact[0], f32[0]), (p.B, b, exact[1], f32[1])):
                        st = ref[id(t)]
                        st["E"] = max(st["E"], 2 * float((g32.double() - g).abs().max()))
                        st["t"] += 1
                        st["m"] = betas[0] * st["m"] + (1 - betas[0]) * g
                        st["v"] = betas[1] * st["v"] + (1 - betas[1]) * g * g
                        den = (st["v"] / (1 - betas[1] ** st["t"])).sqrt() + eps
                        d = st["m"] / (1 - betas[0] ** st["t"]) / den
                        new = x - lr * wd * (x - init[id(t)]) - lr * d
                        tol = 2 * lr * st["E"] * (1 + d.abs()) / den
                        want[id(t)] = new, tol + 4 * u32 * (x.abs() + lr * d.abs())
            opt.step()
            opt.zero_grad()
            sched.step()
            for p in pairs:
                for t in (p.A, p.B):
                    new, tol = want[id(t)]
                    err = (t.detach().double() - new).abs()
                    assert bool((err <= tol).all()), (k, p.name, float((err / tol).max()))
    finally:
        torch.set_num_threads(threads)
    assert all(opt.state[t]["step"] == 20 for t in factors)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 / 16)


# --- DDP: two gloo ranks --------------------------------------------------------------

WORLD = 2


def _ddp_model():
    peft = pytest.importorskip("peft")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = torch.nn.Sequential(
            torch.nn.Linear(10, 16),
            torch.nn.Tanh(),
            torch.nn.Linear(16, 16),
            torch.nn.Tanh(),
            torch.nn.Linear(16, 6),
        )
        cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2", "4"])
        model = peft.get_peft_model(layers, cfg).double()
    return model


def _ddp_data(k):
    """Step k's batch: 2 x 8 rows, one shard of 8 per rank."""
    g = torch.Generator().manual_seed(50 + k)
    return torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randn(
        16, 6, generator=g, dtype=torch.float64
    )


def _ddp_train(model, mode, rank=None):
    opt = LoRAProAdamW(model, lr=1e-2, mode=mode, max_grad_norm=0.5)
    for k in range(3):
        x, y = _ddp_data(k)
        if rank is not None:
            x, y = x[8 * rank : 8 * rank + 8], y[8 * rank : 8 * rank + 8]
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _ddp_worker(rank, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = {}
        for mode in ("efficient", "full"):
            ddp = torch.nn.parallel.DistributedDataParallel(_ddp_model())
            out[mode] = _ddp_train(ddp, mode, rank)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_ranks_hold_identical_parameters_equal_to_one_process(tmp_path):
    from dist_helpers import free_port, run_ranks

    pytest.importorskip("torch.multiprocessing")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    run_ranks(_ddp_worker, (free_port(), str(tmp_path)), world=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for mode in ("efficient", "full"):
        single = _ddp_train(_ddp_model(), mode)
        assert len(single) == 6
        for name, want in single.items():
            key = f"module.{name}"
            assert torch.equal(ranks[0][mode][key], ranks[1][mode][key]), (mode, name)
            # DDP averages the shard gradients: the full-batch mean up to summation order
            # (a few float64 ulps of the gradients), which Adam's normalisation passes on
            # to an update of size lr relatively: lr · 1e4 ulps is a wide margin
            err = float((ranks[0][mode][key] - want).abs().max())
            assert err <= 1e-2 * 1e4 * torch.finfo(torch.float64).eps, (mode, name, err)


# --- dtypes and layouts: one optimizer over all pairs equals one optimizer per pair ----


def mixed_pairs():
    """bf16, fp16, float32 and float64 pairs (two of each shape share a stack), and a
    float32 pair whose factors are non-contiguous (transposed storage)."""
    pairs = []
    for i, dtype in enumerate([torch.bfloat16, torch.float16, torch.float32, torch.float64] * 2):
        A, B, _ = make_pairs(seed=i)[i % 2]
        pairs.append((torch.nn.Parameter(A.to(dtype)), torch.nn.Parameter(B.to(dtype)), 1.5))
    A, B, _ = make_pairs(seed=9)[0]
    At = torch.nn.Parameter(A.float().T.contiguous().T)  # same values, strides (1, r)
    Bt = torch.nn.Parameter(B.float().T.contiguous().T)
    assert not At.is_contiguous() and not Bt.is_contiguous()
    pairs.append((At, Bt, 1.5))
    return pairs


def mixed_grads(pairs, k):
    g = torch.Generator().manual_seed(200 + k)
    for A, B, s in pairs:
        G = torch.randn(B.shape[0], A.shape[1], generator=g, dtype=torch.float64)
        A.grad = (s * B.detach().double().T @ G).to(A.dtype)
        B.grad = (s * G @ A.detach().double().T).to(B.dtype)


@pytest.fixture(params=["one thread", "default threads"])
def threads(request):
    """With one thread the stacks take the fused AdamW kernel, else (small tensors) _foreach."""
    before = torch.get_num_threads()
    if request.param == "one thread":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_mixed_dtypes_and_strides_in_one_optimizer_equal_one_optimizer_per_pair(mode, threads):
    kw = {"lr": 1e-2, "weight_decay": 0.1, "mode": mode}
    pairs, alone = mixed_pairs(), mixed_pairs()
    opt = LoRAProAdamW(params_of(pairs), pairs=pairs, **kw)
    singles = [LoRAProAdamW([A, B], pairs=[(A, B, s)], **kw) for A, B, s in alone]
    for k in range(3):
        mixed_grads(pairs, k)
        mixed_grads(alone, k)
        opt.step()
        for o in singles:
            o.step()
    for (A, B, _), (a, b, _) in zip(pairs, alone, strict=True):
        for t, u in ((A, a), (B, b)):
            assert t.dtype == u.dtype and t.stride() == u.stride()
            # the same per-layer arithmetic in the same compute dtype (float64 for float64,
            # else float32), batched with other layers or not: compute-dtype rounding,
            # then one rounding to the parameter's dtype (which may flip one ulp of it)
            wide = torch.finfo(torch.float64 if t.dtype == torch.float64 else torch.float32)
            scale = max(1.0, float(u.detach().abs().max()))
            tol = max(torch.finfo(t.dtype).eps, 64 * wide.eps) * scale
            assert float((t.detach().double() - u.detach().double()).abs().max()) <= tol
            state = opt.state[t]
            for key in ("exp_avg", "weight_exp_avg"):
                if key in state:
                    assert state[key].dtype == (
                        torch.float64 if t.dtype == torch.float64 else torch.float32
                    )


@pytest.mark.parametrize(("saved_mode", "mode"), [("efficient", "full"), ("full", "efficient")])
def test_a_state_of_the_other_mode_starts_adam_afresh(saved_mode, mode):
    """A state saved in the other mode has step counts but not this mode's moments: Adam
    restarts (step 1's bias correction), as a fresh optimizer would, keeping the anchors."""
    pairs = make_pairs()
    saved = LoRAProAdamW(params_of(pairs), lr=1e-2, mode=saved_mode, pairs=pairs)
    fresh_pairs = twin_of(pairs)  # anchors: the factors at build time, as `saved`'s
    fresh = LoRAProAdamW(params_of(fresh_pairs), lr=1e-2, mode=mode, pairs=fresh_pairs)
    for k in range(3):
        set_grads(pairs, k)
        saved.step()
    with torch.no_grad():
        for a, b in zip(params_of(fresh_pairs), params_of(pairs), strict=True):
            a.copy_(b)
    opt = LoRAProAdamW(params_of(pairs), lr=1e-2, mode=mode, pairs=pairs)
    opt.load_state_dict(saved.state_dict())
    for ps, o in ((pairs, opt), (fresh_pairs, fresh)):
        set_grads(ps, 3)
        o.step()
    assert_same_params(pairs, fresh_pairs)
    assert opt.state[pairs[0][0]]["step"] == 1


@pytest.mark.parametrize("mode", ["efficient", "full"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_or_pickled_optimizer_continues_like_the_original(mode, how):
    import pickle

    pairs = make_pairs()
    opt = LoRAProAdamW(params_of(pairs), lr=1e-2, mode=mode, weight_decay=0.1, pairs=pairs)
    for k in range(2):
        set_grads(pairs, k)
        opt.step()
    if how == "deepcopy":
        twin, twin_opt = copy.deepcopy((pairs, opt))
    else:
        twin, twin_opt = pickle.loads(pickle.dumps((pairs, opt)))
    assert twin_opt.mode == mode
    assert twin_opt.pairs[0].A is twin[0][0]  # the copy's pairs are the copied factors
    for k in range(2, 4):
        for ps, o in ((pairs, opt), (twin, twin_opt)):
            set_grads(ps, k)
            o.step()
    assert_same_params(pairs, twin, tol=0.0)
    key = "exp_avg" if mode == "efficient" else "weight_exp_avg"
    assert torch.equal(opt.state[pairs[1][0]][key], twin_opt.state[twin[1][0]][key])


def test_complex_and_rank_zero_factors_are_refused_by_name():
    from lowrank.torch import lora_pro_adjust_

    A = torch.nn.Parameter(torch.ones(2, 5, dtype=torch.complex64))
    B = torch.nn.Parameter(torch.ones(4, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"'pair0'.*A must be a real floating-point.*complex64"):
        LoRAProAdamW([A, B], pairs=[(A, B, 2.0)])
    A, B = torch.nn.Parameter(torch.ones(0, 5)), torch.nn.Parameter(torch.ones(4, 0))
    with pytest.raises(ValueError, match=r"'pair0'.*rank must be >= 1.*\(0, 5\)"):
        LoRAProAdamW([A, B], pairs=[(A, B, 2.0)])
    with pytest.raises(ValueError, match="rank must be >= 1"):
        lora_pro_adjust_([(A, B, 2.0)])


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_a_state_in_the_per_tensor_format_of_earlier_versions_continues_bitwise(mode):
    """Earlier versions kept one separate tensor per state entry, the anchors in the
    parameter's dtype (bf16 here): such a state loads and continues exactly."""
    pairs = [(A.to(torch.bfloat16), B.to(torch.bfloat16), s) for A, B, s in make_pairs()]
    pairs = [(torch.nn.Parameter(A), torch.nn.Parameter(B), s) for A, B, s in pairs]
    opt = LoRAProAdamW(params_of(pairs), lr=1e-2, mode=mode, weight_decay=0.1, pairs=pairs)
    for k in range(2):
        set_grads(pairs, k)
        opt.step()
    sd = opt.state_dict()
    params = params_of(pairs)

    def separate(i, key, v):
        if not torch.is_tensor(v):
            return v
        return (v.to(params[i].dtype) if key == "initial" else v).clone().contiguous()

    old = {i: {k: separate(i, k, v) for k, v in e.items()} for i, e in sd["state"].items()}
    assert old[0]["initial"].dtype == torch.bfloat16
    twin = [
        (torch.nn.Parameter(A.detach().clone()), torch.nn.Parameter(B.detach().clone()), s)
        for A, B, s in pairs
    ]
    twin_opt = LoRAProAdamW(params_of(twin), lr=1e-2, mode=mode, weight_decay=0.1, pairs=twin)
    twin_opt.load_state_dict({"state": old, "param_groups": sd["param_groups"]})
    for k in range(2, 4):
        for ps, o in ((pairs, opt), (twin, twin_opt)):
            set_grads(ps, k)
            o.step()
    assert_same_params(pairs, twin, tol=0.0)


def test_a_pair_added_mid_training_gets_lora_pro_not_also_plain_adamw():
    """A new adapter added with add_param_group and assigned to ``pairs`` is stepped once,
    by LoRA-Pro (anchored at its value then), exactly as by an optimizer of its own."""
    pairs = make_pairs()
    first, (A, B, s) = pairs[:3], pairs[3]
    opt = LoRAProAdamW(params_of(first), lr=1e-2, weight_decay=0.1, pairs=first)
    set_grads(first, 0)
    opt.step()
    with pytest.raises(AttributeError):
        opt.pairs.append((A, B, s))  # a tuple: edits must go through assignment
    with pytest.raises(ValueError, match="must be in the optimizer's params"):
        opt.pairs = [*opt.pairs, (A, B, s)]
    opt.add_param_group({"params": [A, B]})
    opt.pairs = [*opt.pairs, (A, B, s)]
    a, b = (torch.nn.Parameter(t.detach().clone()) for t in (A, B))
    alone = LoRAProAdamW([a, b], lr=1e-2, weight_decay=0.1, pairs=[(a, b, s)])
    for k in (1, 2):
        set_grads(pairs, k)
        a.grad, b.grad = A.grad.clone(), B.grad.clone()  # equal factors: equal gradients
        opt.step()
        alone.step()
    assert_same_params([(A, B, s)], [(a, b, s)])
    assert opt.state[A]["step"] == 2


# --- user code between steps, against a per-layer float64 reference ---------------------


class Reference:
    """Per-layer efficient-mode LoRAProAdamW: `lowrank.lora_pro_adjust` on each pair, then
    textbook AdamW per factor (decay toward the anchor first), hyper-parameters read from
    the optimizer's groups at each step as a torch optimizer reads them."""

    def __init__(self, pairs, opt):
        self.pairs, self.opt = pairs, opt
        self.state = {id(t): {"t": 0, "m": 0.0, "v": 0.0} for t in params_of(pairs)}
        self.anchor = {id(t): t.detach().clone() for t in params_of(pairs)}

    def step(self, active):
        """The factors after a step (``active``: pairs with gradients)."""
        group = {id(t): g for g in self.opt.param_groups for t in g["params"]}
        out = {}
        for A, B, s in active:
            gA = torch.zeros_like(A) if A.grad is None else A.grad
            gB = torch.zeros_like(B) if B.grad is None else B.grad
            adj = lowrank.lora_pro_adjust(A.detach(), B.detach(), gA, gB, scaling=s)
            for t, g in zip((A, B), adj, strict=True):
                h, st = group[id(t)], self.state[id(t)]
                (b1, b2), lr, wd = h["betas"], h["lr"], h["weight_decay"]
                st["t"] += 1
                st["m"] = b1 * st["m"] + (1 - b1) * g
                st["v"] = b2 * st["v"] + (1 - b2) * g * g
                d = (st["m"] / (1 - b1 ** st["t"])) / (
                    (st["v"] / (1 - b2 ** st["t"])).sqrt() + h["eps"]
                )
                x = t.detach()
                out[id(t)] = x - lr * wd * (x - self.anchor[id(t)]) - lr * d
        return out


def test_user_code_between_steps_is_seen_by_the_next_step():
    """In place edits (mul_, copy_, ``.data =``, load_state_dict), zero_grad(set_to_none=
    False), a frozen then unfrozen layer, a layer the loss skips, new lr/decay/betas/eps
    and an added param group: each step equals the per-layer reference from the same
    parameters and gradients (float64, eps >= 0.1: the Adam map is Lipschitz, rounding
    stays at 1e3 ulps)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(6, 6, dtype=torch.float64) for _ in range(3)))
    g = torch.Generator().manual_seed(0)
    pairs = []
    for layer in model:
        layer.requires_grad_(False)
        A = torch.nn.Parameter(torch.randn(2, 6, generator=g, dtype=torch.float64))
        B = torch.nn.Parameter(torch.randn(6, 2, generator=g, dtype=torch.float64))
        pairs.append((A, B, 2.0))
    opt = LoRAProAdamW(params_of(pairs), lr=1e-2, eps=0.1, weight_decay=0.1, pairs=pairs)
    ref = Reference(pairs, opt)
    extra = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    twin = copy.deepcopy([t.detach() for t in params_of(pairs)])

    def forward(x, skip=None):
        for i, (layer, (A, B, s)) in enumerate(zip(model, pairs, strict=True)):
            if i != skip:
                x = torch.tanh(layer(x) + s * x @ A.T @ B.T)
        return x

    edits = {
        1: lambda: pairs[0][0].mul_(0.5),
        2: lambda: pairs[1][1].copy_(torch.full_like(pairs[1][1], 0.3)),
        3: lambda: setattr(pairs[2][0], "data", pairs[2][0].data * 0.7 + 0.01),
        4: lambda: [t.copy_(u) for t, u in zip(params_of(pairs), twin, strict=True)],
        5: lambda: opt.param_groups[0].update(lr=3e-3, weight_decay=0.3, betas=(0.8, 0.9)),
        6: lambda: opt.add_param_group({"params": [extra], "lr": 1e-2}),
    }
    for k in range(9):
        with torch.no_grad():
            edits.get(k, lambda: None)()
        frozen = pairs[1] if k in (3, 4) else None
        for t in params_of(pairs):
            t.requires_grad_(frozen is None or all(t is not u for u in frozen[:2]))
        x = torch.randn(16, 6, generator=g, dtype=torch.float64)
        forward(x, skip=2 if k == 5 else None).square().mean().backward()
        if k >= 6:
            extra.grad = torch.full_like(extra, 0.1 * k)
        active = [p for p in pairs if p[0].grad is not None or p[1].grad is not None]
        want = ref.step(active)
        opt.step()
        for t in (t for p in active for t in p[:2]):
            err = float((t.detach() - want[id(t)]).abs().max())
            assert err <= 1e3 * torch.finfo(torch.float64).eps, (k, err)
        opt.zero_grad(set_to_none=k % 2 == 0)  # odd steps: zeroed grads stay (all stepped)
    assert opt.state[pairs[0][0]]["step"] == 9
    assert opt.state[pairs[1][0]]["step"] < 9  # frozen at steps 3-4 after a set_to_none


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_grad_scaler_step_equals_the_unscaled_step_and_skips_non_finite(mode):
    """scaler.step(opt): gradients of a loss scaled by 2**10 are exactly 2**10 times the
    plain ones (powers of two scale exactly), unscale_ divides them back, so every step
    equals a plain one bit for bit; a step with an Inf gradient is skipped."""
    pairs, plain = make_pairs(dtype=torch.float32), make_pairs(dtype=torch.float32)
    kw = {"lr": 1e-2, "mode": mode, "max_grad_norm": 1.0}
    opt = LoRAProAdamW(params_of(pairs), pairs=pairs, **kw)
    ref = LoRAProAdamW(params_of(plain), pairs=plain, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(0))

    def loss(ps):
        A, B, s = ps[0]
        return (x @ (s * B @ A).T).square().mean() + sum(
            (s * B @ A).square().sum() for A, B, s in ps[1:]
        )

    for k in range(3):
        scaler.scale(loss(pairs)).backward()
        if k == 1:
            pairs[0][0].grad[0, 0] = float("inf")
        before = [t.detach().clone() for t in params_of(pairs)]
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        if k == 1:  # skipped: nothing moved, no step counted
            assert all(torch.equal(t, b) for t, b in zip(params_of(pairs), before, strict=True))
            continue
        loss(plain).backward()
        ref.step()
        ref.zero_grad()
        assert_same_params(pairs, plain, tol=0.0)
    assert opt.state[pairs[0][0]]["step"] == 2
