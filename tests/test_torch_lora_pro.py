"""LoRAProAdamW and lora_pro_adjust_ on real (PEFT) torch models."""

from __future__ import annotations

import collections
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from ref_lora_pro import projected_gradient, ref_full_adam_step, ref_lora_pro_adjust  # noqa: E402

import lowrank  # noqa: E402
from lowrank.torch import LoRAProAdamW, find_lora_pairs, lora_pro_adjust_  # noqa: E402


def peft_model(dtype=torch.float64, *, seed=0, head=False):
    """Two LoRA layers with different scalings (rsLoRA + rank/alpha patterns), B != 0."""
    torch.manual_seed(seed)
    layers = collections.OrderedDict(
        fc1=torch.nn.Linear(10, 16), act=torch.nn.Tanh(), fc2=torch.nn.Linear(16, 6)
    )
    cfg = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["fc1", "fc2"],
        use_rslora=True,
        rank_pattern={"fc2": 2},
        alpha_pattern={"fc2": 6},
        modules_to_save=["head"] if head else None,
    )
    if head:
        layers["head"] = torch.nn.Linear(6, 3)
    model = peft.get_peft_model(torch.nn.Sequential(layers), cfg).to(dtype)
    with torch.no_grad():  # B = 0 would make every step the degenerate regime
        for pair in find_lora_pairs(model):
            pair.B.normal_(0.0, 0.3)
    return model


def batch(dtype=torch.float64, n=32, seed=1, out=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g, dtype=dtype), torch.randn(
        n, out, generator=g, dtype=dtype
    )


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean()


def test_adjust_in_place_projects_the_full_gradient_with_each_layers_scaling():
    model = peft_model()
    x, y = batch()
    pairs = find_lora_pairs(model)
    assert [p.scaling for p in pairs] == pytest.approx([8 / 2, 6 / np.sqrt(2)])
    for p in pairs:  # obtain the full weight gradient G as an oracle
        p.weight.requires_grad_(True)
    loss_fn(model, x, y).backward()
    lora_pro_adjust_(model)
    for p in pairs:
        G, A, B = (t.detach().numpy() for t in (p.weight.grad, p.A, p.B))
        g_eq = p.scaling * (B @ p.A.grad.numpy() + p.B.grad.numpy() @ A)
        assert np.allclose(g_eq, projected_gradient(A, B, G), rtol=1e-9, atol=1e-12)


def test_adjust_in_place_then_sgd_follows_the_projected_gradient():
    model = peft_model()
    x, y = batch()
    pairs = find_lora_pairs(model)
    for p in pairs:
        p.weight.requires_grad_(True)
    loss_fn(model, x, y).backward()
    before = [(p.scaling * p.B @ p.A).detach().clone() for p in pairs]
    G = [p.weight.grad.clone() for p in pairs]
    for p in pairs:
        p.weight.requires_grad_(False)
        p.weight.grad = None
    lora_pro_adjust_(model, gauge="symmetric")
    lr = 1e-5
    torch.optim.SGD([t for p in pairs for t in (p.A, p.B)], lr=lr).step()
    for p, w0, g in zip(pairs, before, G, strict=True):
        dW = ((p.scaling * p.B @ p.A).detach() - w0) / -lr
        want = projected_gradient(p.A.detach().numpy(), p.B.detach().numpy(), g.numpy())
        assert np.allclose(dW.numpy(), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def manual_adam(state, g, lr, betas=(0.9, 0.999), eps=1e-8):
    state["t"] = state.get("t", 0) + 1
    state["m"] = betas[0] * state.get("m", 0 * g) + (1 - betas[0]) * g
    state["v"] = betas[1] * state.get("v", 0 * g) + (1 - betas[1]) * g * g
    t = state["t"]
    return (
        lr * (state["m"] / (1 - betas[0] ** t)) / ((state["v"] / (1 - betas[1] ** t)).sqrt() + eps)
    )


def test_efficient_mode_matches_reference_adam_on_adjusted_grads_and_plain_adamw():
    model = peft_model(head=True)
    ref_model = copy.deepcopy(model)
    x, y = batch(out=3)
    opt = LoRAProAdamW(model, lr=1e-2, weight_decay=0.1, weight_decay_to="zero")
    head = [p for n, p in ref_model.named_parameters() if p.requires_grad and "lora" not in n]
    assert head  # the modules_to_save head: non-LoRA trainable parameters
    head_opt = torch.optim.AdamW(head, lr=1e-2, weight_decay=0.1)
    states = collections.defaultdict(dict)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
        ref_model.zero_grad()
        loss_fn(ref_model, x, y).backward()
        head_opt.step()
        with torch.no_grad():
            for p in find_lora_pairs(ref_model):
                gA, gB = ref_lora_pro_adjust(p.A, p.B, p.A.grad, p.B.grad, p.scaling)
                for t, g in ((p.A, gA), (p.B, gB)):
                    t.mul_(1 - 1e-2 * 0.1).sub_(manual_adam(states[id(t)], g, 1e-2))
    for (n, a), b in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9), n


def test_full_mode_matches_reference_weight_space_adam():
    torch.manual_seed(3)
    A = torch.nn.Parameter(torch.randn(3, 12, dtype=torch.float64))
    B = torch.nn.Parameter(torch.randn(9, 3, dtype=torch.float64))
    W0 = torch.randn(9, 12, dtype=torch.float64)
    x, y = torch.randn(40, 12, dtype=torch.float64), torch.randn(40, 9, dtype=torch.float64)
    s = 1.5
    opt = LoRAProAdamW(
        [A, B], lr=1e-2, weight_decay=0.05, mode="full", weight_decay_to="zero", pairs=[(A, B, s)]
    )
    rA, rB = A.detach().clone(), B.detach().clone()
    state = {"step": 0, "m": torch.zeros_like(W0), "v": torch.zeros_like(W0)}
    for _ in range(3):
        opt.zero_grad()
        ((x @ (W0 + s * B @ A).T - y) ** 2).mean().backward()
        opt.step()
        rA_, rB_ = rA.clone().requires_grad_(True), rB.clone().requires_grad_(True)
        ((x @ (W0 + s * rB_ @ rA_).T - y) ** 2).mean().backward()
        rA, rB = ref_full_adam_step(
            rA,
            rB,
            rA_.grad,
            rB_.grad,
            state,
            scaling=s,
            lr=1e-2,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=0.05,
        )
    assert torch.allclose(A, rA, rtol=1e-6)
    assert torch.allclose(B, rB, rtol=1e-6)
    assert opt.state[A]["weight_exp_avg"].shape == W0.shape  # states of W size
    assert "exp_avg" not in opt.state[B]


def test_param_groups_scheduler_and_clipping_after_adjustment():
    model = peft_model()
    pairs = find_lora_pairs(model)
    groups = [
        {"params": [p.A for p in pairs], "lr": 0.0},
        {"params": [p.B for p in pairs], "lr": 1e-2},
    ]
    eps, max_norm = 1e3, 1e-3  # huge eps: Adam's step-1 update is ~ lr·g/eps, linear in g
    opt = LoRAProAdamW(groups, eps=eps, weight_decay=0.0, max_grad_norm=max_norm, pairs=model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = batch()
    loss_fn(model, x, y).backward()
    adj = [
        lowrank.lora_pro_adjust(p.A.detach(), p.B.detach(), p.A.grad, p.B.grad, scaling=p.scaling)
        for p in pairs
    ]
    total = torch.sqrt(sum((g**2).sum() for a in adj for g in a))
    raw_total = torch.sqrt(sum((t.grad**2).sum() for p in pairs for t in (p.A, p.B)))
    assert not torch.isclose(total, raw_total, rtol=1e-2)  # clipping raw grads would differ
    before = [(p.A.detach().clone(), p.B.detach().clone()) for p in pairs]
    opt.step()
    for p, (A0, B0), a in zip(pairs, before, adj, strict=True):
        assert torch.equal(p.A, A0)  # lr 0 group
        g = a.grad_B * (max_norm / (total + 1e-6))
        assert torch.allclose(B0 - p.B, 1e-2 * g / (g.abs() + eps), rtol=1e-6, atol=1e-15)
    sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(5e-3)


def test_gradient_accumulation_equals_full_batch():
    model = peft_model()
    twin = copy.deepcopy(model)
    x, y = batch(n=32)
    opt, opt2 = LoRAProAdamW(model, lr=1e-2), LoRAProAdamW(twin, lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        for xs, ys in ((x[:16], y[:16]), (x[16:], y[16:])):
            (loss_fn(model, xs, ys) / 2).backward()
        opt.step()
        opt2.zero_grad()
        loss_fn(twin, x, y).backward()
        opt2.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_state_dict_round_trip_and_float32_states_for_bf16(mode):
    model = peft_model(torch.bfloat16)
    x, y = batch(torch.bfloat16)
    opt = LoRAProAdamW(model, lr=1e-2, mode=mode)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
    key = "exp_avg_sq" if mode == "efficient" else "weight_exp_avg_sq"
    A = find_lora_pairs(model)[0].A
    assert A.dtype == torch.bfloat16
    assert opt.state[A][key].dtype == torch.float32
    twin = copy.deepcopy(model)
    opt2 = LoRAProAdamW(twin, lr=1e-2, mode=mode)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    A2 = find_lora_pairs(twin)[0].A
    assert opt2.state[A2][key].dtype == torch.float32
    assert torch.equal(opt2.state[A2][key], opt.state[A][key])
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        loss_fn(m, x, y).backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_one_eigh_per_rank_matches_per_layer_results(monkeypatch):
    """Layers of every shape but one rank share one r×r stage; results equal per-layer ones."""
    from lowrank._agnostic import _lora_pro as core
    from lowrank.torch import _lora_pro_batch

    calls = []
    real = core.spectra_of_grams
    monkeypatch.setattr(
        core, "spectra_of_grams", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k)
    )
    g = torch.Generator().manual_seed(5)
    shapes = [(8, 12), (8, 12), (20, 12), (8, 30), (20, 12)]  # (out, in), rank 3
    layers = []
    for out, inn in shapes:
        layers += [torch.nn.Parameter(torch.randn(3, inn, generator=g, dtype=torch.float64))]
        layers += [torch.nn.Parameter(torch.randn(out, 3, generator=g, dtype=torch.float64))]
    pairs = [(layers[2 * i], layers[2 * i + 1], 1.0 + i) for i in range(len(shapes))]
    for A, B, _ in pairs:
        A.grad = torch.randn(A.shape, generator=g, dtype=torch.float64)
        B.grad = torch.randn(B.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = [lowrank.lora_pro_adjust(A, B, A.grad, B.grad, scaling=s) for A, B, s in pairs]
        calls.clear()
        got_A, got_B = _lora_pro_batch.adjusted_grads(
            _lora_pro_batch.resolve_pairs(pairs),
            [A.grad for A, _, _ in pairs],
            [B.grad for _, B, _ in pairs],
            gauge="sylvester",
            damping="auto",
        )
    assert calls == [(2, 5, 3, 3)]  # [S_B, S_A] of all five layers in one call
    # eps times the r×r inverses' condition (random Gaussian factors: < 1e2) and size
    tol = 1e4 * torch.finfo(torch.float64).eps
    for w, gA, gB in zip(want, got_A, got_B, strict=True):
        # batched products may be summed in another order: rounding only
        assert float((gA - w.grad_A).abs().max()) <= tol * float(w.grad_A.abs().max())
        assert float((gB - w.grad_B).abs().max()) <= tol * float(w.grad_B.abs().max())


def test_bad_arguments():
    model = peft_model()
    pairs = find_lora_pairs(model)
    with pytest.raises(ValueError, match="pairs="):
        LoRAProAdamW([p.A for p in pairs])
    with pytest.raises(ValueError, match="both A and B must be in the optimizer"):
        LoRAProAdamW([pairs[0].A, pairs[0].B], pairs=model)
    pairs[1].A.requires_grad_(False)  # a frozen factor: that found pair is left out
    assert [p.name for p in LoRAProAdamW(model).pairs] == [pairs[0].name]
    with pytest.raises(ValueError, match="`mode` must be one of"):
        LoRAProAdamW(model, mode="fast")
    with pytest.raises(ValueError, match="`scaling` must be finite and > 0"):
        LoRAProAdamW([pairs[0].A, pairs[0].B], pairs=[(pairs[0].A, pairs[0].B, 0.0)])
    with pytest.raises(ValueError, match="need A of shape"):
        lora_pro_adjust_([(pairs[0].B, pairs[0].A, 1.0)])
    with pytest.raises(ValueError, match="invalid `lr`"):
        LoRAProAdamW(model, lr=-1.0)


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_weight_decay_pulls_the_effective_weight_toward_the_initial_one(mode):
    """Zero gradients: only decay acts. Default: W_res + s B A stays the initial one
    exactly; plain decay drifts it toward W_res (after LoRA-GA: W - s B0 A0)."""
    model = peft_model(torch.float32, head=True)
    pairs = find_lora_pairs(model)
    w_eff = [(p.weight + p.scaling * p.B @ p.A).detach().clone() for p in pairs]
    offsets = [(p.scaling * p.B @ p.A).detach().clone() for p in pairs]
    twin = copy.deepcopy(model)
    default = LoRAProAdamW(model, lr=1e-2, weight_decay=0.1, mode=mode)
    plain = LoRAProAdamW(twin, lr=1e-2, weight_decay=0.1, mode=mode, weight_decay_to="zero")
    for opt in (default, plain):
        for _ in range(20):
            for p in opt.param_groups[0]["params"]:
                p.grad = torch.zeros_like(p)
            opt.step()
    for p, w0 in zip(pairs, w_eff, strict=True):
        assert torch.equal((p.weight + p.scaling * p.B @ p.A).detach(), w0)  # bitwise
    for p, sBA in zip(find_lora_pairs(twin), offsets, strict=True):
        # A and B each shrink by (1 - lr·wd) per step: s B A by (1 - lr·wd)² per step
        now = (p.scaling * p.B @ p.A).detach()
        assert torch.allclose(now, (1 - 1e-3) ** 40 * sBA, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(now, sBA, rtol=1e-3)
    head = [t for n, t in model.named_parameters() if t.requires_grad and "lora" not in n]
    assert head  # non-LoRA parameters keep plain decay toward 0 under the default
    state = default.state[head[0]]
    assert "initial" not in state


def test_decay_anchors_survive_a_state_dict_round_trip():
    model = peft_model(torch.float32)
    pairs = find_lora_pairs(model)
    opt = LoRAProAdamW(model, lr=1e-2, weight_decay=0.1)
    x, y = batch(torch.float32)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    resumed = LoRAProAdamW(model, lr=1e-2, weight_decay=0.1)  # built on trained factors
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.state[pairs[0].A]["initial"], opt.state[pairs[0].A]["initial"])
    assert not torch.equal(resumed.state[pairs[0].A]["initial"], pairs[0].A.detach())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"damping": "big"}, ValueError, "damping"),
        ({"damping": -1.0}, ValueError, "damping"),
        ({"damping": [1e-8]}, TypeError, "damping"),
        ({"lr": "1e-3"}, TypeError, "`lr`"),
        ({"lr": float("nan")}, ValueError, "`lr`"),
        ({"eps": float("inf")}, ValueError, "`eps`"),
        ({"betas": (0.9,)}, ValueError, "`betas`"),
        ({"betas": (0.9, 1.0)}, ValueError, "`betas`"),
        ({"weight_decay": None}, TypeError, "`weight_decay`"),
        ({"max_grad_norm": 0.0}, ValueError, "`max_grad_norm`"),
        ({"gauge": "sym"}, ValueError, "gauge"),
        ({"weight_decay_to": "W0"}, ValueError, "weight_decay_to"),
    ],
)
def test_every_hyper_parameter_is_checked_in_the_constructor(kwargs, error, match):
    model = peft_model()
    with pytest.raises(error, match=match):
        LoRAProAdamW(model, **kwargs)  # refused before any step, no gradient needed


@pytest.fixture
def one_thread():
    """Tiny problems: one thread avoids oversubscription stalls on shared CI machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lora_ga_plus_lora_pro_tracks_full_fine_tuning(one_thread):
    """End to end (docs/theory/lora_pro.md plot): closer to full fine-tuning than plain LoRA."""
    from lowrank._demo.lora_pro import tracking_gap, training_curves

    curves = training_curves(40)
    for optimizer, pro in (("sgd", "LoRA-GA + LoRA-Pro"), ("adam", "LoRA-GA + LoRA-Pro (full)")):
        runs = curves[optimizer]
        full = runs["full fine-tuning"]
        gap_pro = tracking_gap(runs[pro], full)
        gap_lora = tracking_gap(runs["LoRA"], full)
        assert gap_pro < 0.5 * gap_lora, (optimizer, gap_pro, gap_lora)
        assert runs[pro][-1] < runs["LoRA"][-1]


# --- the stacked optimizer against a per-layer reference -------------------------------

# (out, in, r): three shapes of rank 3 (two layers share one shape), one of rank 2
SHAPES = [(8, 12, 3), (8, 12, 3), (20, 12, 3), (8, 30, 3), (10, 6, 2), (10, 6, 2), (20, 12, 3)]
N_STEPS = 4


def present(k, i):
    """Which of (A, B) of pair i have a gradient at step k."""
    if i in (2, 4) and k == 1:
        return False, False  # skipped once: its step count lags pair 5's (same stack)
    if i == 3 and k == 2:
        return True, False
    if i == 5 and k == 0:
        return False, True
    return True, True


def make_problem(seed=0):
    """Explicit float64 pairs with varied scalings, a plain parameter, and three param groups
    (one pair split across two of them; Adam eps large: see `test_stacked_step_...`)."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i, (out, n_in, r) in enumerate(SHAPES):
        A = torch.randn(r, n_in, generator=g, dtype=torch.float64) / n_in**0.5
        B = torch.randn(out, r, generator=g, dtype=torch.float64) / r**0.5
        pairs.append((torch.nn.Parameter(A), torch.nn.Parameter(B), 0.5 + 0.25 * i))
    extra = torch.nn.Parameter(torch.randn(5, 4, generator=g, dtype=torch.float64))
    (A0, B0, _), (A1, B1, _), *rest = pairs
    hyper = [
        {"lr": 1e-2, "weight_decay": 0.1, "betas": (0.9, 0.999), "eps": 0.5},
        {"lr": 3e-3, "weight_decay": 0.02, "betas": (0.8, 0.99), "eps": 1.0},
    ]
    groups = [
        {"params": [A0, B0, A1, *(t for A, B, _ in rest[:2] for t in (A, B))], **hyper[0]},
        {"params": [B1, *(t for A, B, _ in rest[2:] for t in (A, B)), extra], **hyper[1]},
    ]
    return pairs, extra, groups


def set_grads(pairs, extra, k):
    """LoRA gradients gA = s BᵀG, gB = s G Aᵀ of a seeded full gradient G (None if absent)."""
    g = torch.Generator().manual_seed(1000 + k)
    for i, (A, B, s) in enumerate(pairs):
        G = torch.randn(B.shape[0], A.shape[1], generator=g, dtype=torch.float64)
        has_A, has_B = present(k, i)
        A.grad = s * B.detach().T @ G if has_A else None
        B.grad = s * G @ A.detach().T if has_B else None
    extra.grad = torch.randn(extra.shape, generator=g, dtype=torch.float64)


def adam_direction(st, g, h):
    """Textbook Adam direction m̂ / (sqrt(v̂) + eps), updating the state dict ``st``."""
    b1, b2 = h["betas"]
    st["t"] += 1
    st["m"] = b1 * st["m"] + (1 - b1) * g
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    t = st["t"]
    return (st["m"] / (1 - b1**t)) / ((st["v"] / (1 - b2**t)).sqrt() + h["eps"])


def reference_run(mode, wd_to, max_norm=None, gauge="sylvester"):
    """Per-layer LoRAProAdamW: lowrank.lora_pro_adjust / equivalent_gradient on each pair,
    then AdamW per tensor (decay before the step, toward the initial value for "init")."""
    pairs, extra, groups = make_problem()
    hyper = {id(t): g for g in groups for t in g["params"]}
    init = {id(t): t.detach().clone() for A, B, _ in pairs for t in (A, B)}
    state = collections.defaultdict(lambda: {"t": 0, "m": 0.0, "v": 0.0})

    def update(t, direction):
        h = hyper[id(t)]
        with torch.no_grad():
            if id(t) in init and wd_to == "init":
                t.sub_(h["lr"] * h["weight_decay"] * (t - init[id(t)]))
            else:
                t.mul_(1 - h["lr"] * h["weight_decay"])
            t.sub_(h["lr"] * direction)

    for k in range(N_STEPS):
        set_grads(pairs, extra, k)
        grads = {}
        for A, B, s in pairs:
            if A.grad is None and B.grad is None:
                continue
            a, b = A.detach(), B.detach()
            gA = torch.zeros_like(a) if A.grad is None else A.grad
            gB = torch.zeros_like(b) if B.grad is None else B.grad
            if mode == "efficient":
                adj = lowrank.lora_pro_adjust(a, b, gA, gB, scaling=s, gauge=gauge)
                grads[id(A)], grads[id(B)] = adj
            else:
                grads[id(A)] = lowrank.equivalent_gradient(a, b, gA, gB, scaling=s)
        grads[id(extra)] = extra.grad
        if max_norm is not None:
            total = torch.sqrt(sum((g**2).sum() for g in grads.values()))
            factor = min(1.0, max_norm / (float(total) + 1e-6))
            grads = {key: g * factor for key, g in grads.items()}
        for A, B, s in pairs:
            if id(A) not in grads:
                continue
            if mode == "efficient":
                update(A, adam_direction(state[id(A)], grads[id(A)], hyper[id(A)]))
                update(B, adam_direction(state[id(B)], grads[id(B)], hyper[id(B)]))
                continue
            U = adam_direction(state[id(A)], grads[id(A)], hyper[id(A)])  # A's betas/eps
            a, b = A.detach().clone(), B.detach().clone()
            uA, uB = lowrank.lora_pro_adjust(a, b, s * b.T @ U, s * U @ a.T, scaling=s, gauge=gauge)
            update(A, uA)
            update(B, uB)
        update(extra, adam_direction(state[id(extra)], grads[id(extra)], hyper[id(extra)]))
    return pairs, extra, state


def stacked_run(mode, wd_to, max_norm=None, gauge="sylvester", n_steps=N_STEPS):
    pairs, extra, groups = make_problem()
    opt = LoRAProAdamW(
        groups, mode=mode, weight_decay_to=wd_to, max_grad_norm=max_norm, gauge=gauge, pairs=pairs
    )
    for k in range(n_steps):
        set_grads(pairs, extra, k)
        opt.step()
    return pairs, extra, opt


def assert_close_params(got, want):
    # Rounding only: batched products sum in another order (eps times the r×r inverses'
    # condition, < 1e2 here, and size); with Adam eps >= 0.5 the Adam map is 1-Lipschitz
    # in the gradient, so these errors reach the parameters without amplification.
    tol = 1e4 * torch.finfo(torch.float64).eps
    for a, b in zip(got, want, strict=True):
        a, b = a.detach(), b.detach()
        assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize(
    ("mode", "wd_to", "max_norm", "gauge"),
    [
        ("efficient", "init", None, "sylvester"),
        ("efficient", "zero", 0.5, "symmetric"),
        ("full", "init", None, "sylvester"),
        ("full", "zero", 0.5, "zero"),
    ],
)
def test_stacked_step_equals_the_per_layer_reference(mode, wd_to, max_norm, gauge, one_thread):
    """Mixed shapes and ranks, pairs without a gradient or with one, pairs split across param
    groups with other lr/decay/betas/eps, a plain parameter, clipping: all per layer."""
    pairs, extra, opt = stacked_run(mode, wd_to, max_norm, gauge)
    ref_pairs, ref_extra, ref_state = reference_run(mode, wd_to, max_norm, gauge)
    assert_close_params(
        [t for A, B, _ in pairs for t in (A, B)] + [extra],
        [t for A, B, _ in ref_pairs for t in (A, B)] + [ref_extra],
    )
    assert opt.state[pairs[4][0]]["step"] == N_STEPS - 1  # skipped once
    assert opt.state[pairs[5][0]]["step"] == N_STEPS
    key = "exp_avg" if mode == "efficient" else "weight_exp_avg"
    for (A, B, _), (rA, rB, _) in zip(pairs, ref_pairs, strict=True):
        want = ref_state[id(rA)]["m"]
        got = opt.state[A][key]
        assert got.shape == want.shape
        tol = 1e4 * torch.finfo(torch.float64).eps * float(want.abs().max())
        assert float((got - want).abs().max()) <= tol
        if mode == "efficient":
            assert opt.state[B][key].shape == B.shape
        else:
            assert "exp_avg" not in opt.state[B]
            assert "step" not in opt.state[B]


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_state_dict_round_trip_mid_training_continues_bitwise(mode, one_thread):
    import io

    pairs, extra, opt = stacked_run(mode, "init", n_steps=2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    key = "exp_avg" if mode == "efficient" else "weight_exp_avg"
    saved = {id(A): opt.state[A][key].clone() for A, _, _ in pairs}
    twin_pairs, twin_extra, groups = make_problem()
    with torch.no_grad():
        for (A, B, _), (tA, tB, _) in zip(pairs, twin_pairs, strict=True):
            tA.copy_(A)
            tB.copy_(B)
        twin_extra.copy_(extra)
    twin = LoRAProAdamW(groups, mode=mode, pairs=twin_pairs)
    buffer.seek(0)
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    for (A, _, _), (tA, _, _) in zip(pairs, twin_pairs, strict=True):
        assert torch.equal(twin.state[tA][key], saved[id(A)])
        assert torch.equal(twin.state[tA]["initial"], opt.state[A]["initial"])
    for k in (2, 3):
        for ps, ex, o in ((pairs, extra, opt), (twin_pairs, twin_extra, twin)):
            set_grads(ps, ex, k)
            o.step()
    for (A, B, _), (tA, tB, _) in zip(pairs, twin_pairs, strict=True):
        assert torch.equal(A, tA)
        assert torch.equal(B, tB)
        assert torch.equal(opt.state[A][key], twin.state[tA][key])
    assert torch.equal(extra, twin_extra)


def test_a_replaced_state_entry_is_used_by_the_next_step(one_thread):
    """State entries are views into stacks; one replaced by user code must not be ignored."""
    pairs, extra, opt = stacked_run("efficient", "zero", n_steps=2)
    fresh_pairs, fresh_extra, groups = make_problem()
    with torch.no_grad():
        for (A, B, _), (fA, fB, _) in zip(pairs, fresh_pairs, strict=True):
            fA.copy_(A)
            fB.copy_(B)
    fresh = LoRAProAdamW(groups, mode="efficient", weight_decay_to="zero", pairs=fresh_pairs)
    A = pairs[0][0]
    opt.state[A].update(step=0, exp_avg=torch.zeros_like(A), exp_avg_sq=torch.zeros_like(A))
    for ps, ex, o in ((pairs, extra, opt), (fresh_pairs, fresh_extra, fresh)):
        set_grads(ps, ex, 2)
        o.step()
    # the reset state makes A's step the first step of a fresh optimizer (pair 0's shape
    # bucket also holds pair 1, so its adjustment is unchanged by the reset)
    assert torch.allclose(A, fresh_pairs[0][0], rtol=0, atol=1e-14)
    assert opt.state[A]["step"] == 1
    assert not torch.allclose(pairs[1][0], fresh_pairs[1][0], rtol=0, atol=1e-6)


def test_closure_is_evaluated_with_gradients_and_its_loss_returned():
    model = peft_model()
    twin = copy.deepcopy(model)
    x, y = batch()
    opt, opt2 = LoRAProAdamW(model, lr=1e-2), LoRAProAdamW(twin, lr=1e-2)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss

    for _ in range(2):
        loss = opt.step(closure)
        opt2.zero_grad()
        want = loss_fn(twin, x, y)
        want.backward()
        opt2.step()
        assert torch.equal(loss.detach(), want.detach())
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_foreach_fallback_matches_the_fused_kernel(mode, monkeypatch, one_thread):
    """Devices without PyTorch's fused AdamW take a _foreach path with the same arithmetic."""
    from lowrank.torch import _lora_pro_adam

    fused_pairs, fused_extra, _ = stacked_run(mode, "init", 0.5)
    monkeypatch.setattr(_lora_pro_adam, "FUSED_DEVICES", ())
    calls = []
    real = torch._foreach_addcdiv_
    monkeypatch.setattr(torch, "_foreach_addcdiv_", lambda *a, **k: calls.append(1) or real(*a, **k))
    pairs, extra, _ = stacked_run(mode, "init", 0.5)
    assert calls  # the fallback did run
    assert_close_params(
        [t for A, B, _ in pairs for t in (A, B)] + [extra],
        [t for A, B, _ in fused_pairs for t in (A, B)] + [fused_extra],
    )


@pytest.mark.parametrize("mode", ["efficient", "full"])
def test_a_step_with_only_plain_gradients_leaves_the_factors(mode):
    model = peft_model(head=True)
    opt = LoRAProAdamW(model, lr=1e-2, weight_decay=0.0, max_grad_norm=1e-3, mode=mode)
    head = [p for n, p in model.named_parameters() if p.requires_grad and "lora" not in n]
    factors = [t.detach().clone() for p in find_lora_pairs(model) for t in (p.A, p.B)]
    twin = [torch.nn.Parameter(p.detach().clone()) for p in head]
    for p, q in zip(head, twin, strict=True):
        p.grad = torch.ones_like(p)
        q.grad = p.grad.clone()
    opt.step()
    torch.nn.utils.clip_grad_norm_(twin, 1e-3)
    torch.optim.AdamW(twin, lr=1e-2, weight_decay=0.0).step()
    now = [t.detach() for p in find_lora_pairs(model) for t in (p.A, p.B)]
    assert all(torch.equal(a, b) for a, b in zip(now, factors, strict=True))
    for p, q in zip(head, twin, strict=True):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-15)


def test_a_pair_left_out_keeps_its_state_but_not_the_old_stacks(one_thread):
    pairs, extra, opt = stacked_run("full", "init", n_steps=1)
    A4, A5 = pairs[4][0], pairs[5][0]  # one stack at step 0; pair 4 has no gradient at step 1
    before = opt.state[A4]["weight_exp_avg"].clone()
    storage = opt.state[A4]["weight_exp_avg"].untyped_storage().data_ptr()
    assert opt.state[A5]["weight_exp_avg"].untyped_storage().data_ptr() == storage
    set_grads(pairs, extra, 1)
    opt.step()
    assert torch.equal(opt.state[A4]["weight_exp_avg"], before)
    assert opt.state[A4]["weight_exp_avg"].untyped_storage().data_ptr() != storage
    assert opt.state[A5]["weight_exp_avg"].untyped_storage().data_ptr() != storage
