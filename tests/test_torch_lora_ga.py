"""lowrank.torch LoRA-GA utility: streaming estimation, in-place init, PEFT parity, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from ref_lora_ga import best_rank  # noqa: E402

import lowrank  # noqa: E402
import lowrank.torch as lt  # noqa: E402

D_IN, H, D_OUT, R = 12, 24, 10, 2


class MLP(torch.nn.Module):
    def __init__(self, d_in=D_IN, h=H, d_out=D_OUT, bias=True):
        super().__init__()
        self.fc1 = torch.nn.Linear(d_in, h, bias=bias)
        self.fc2 = torch.nn.Linear(h, d_out, bias=bias)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _data(n=48, seed=0, d_in=D_IN, d_out=D_OUT):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_out, generator=g)


def _mse(model, batch):
    return torch.nn.functional.mse_loss(model(batch[0]), batch[1])


def _peft(model, seed=0, **cfg):
    torch.manual_seed(seed)
    cfg = {"r": R, "lora_alpha": 4, "target_modules": ["fc1", "fc2"], **cfg}
    return peft.get_peft_model(model, peft.LoraConfig(**cfg))


def _batches(X, Y, size=16):
    return [(X[i : i + size], Y[i : i + size]) for i in range(0, len(X), size)]


def _autograd_mean(model, batches, params):
    total = [torch.zeros_like(p) for p in params]
    for b in batches:
        gs = torch.autograd.grad(_mse(model, b), params)
        total = [t + g for t, g in zip(total, gs, strict=True)]
    return [t / len(batches) for t in total]


def test_estimate_gradients_is_the_batch_mean_and_restores_state():
    torch.manual_seed(0)
    model = MLP()
    X, Y = _data()
    batches = _batches(X, Y)
    grads = lt.estimate_gradients(model, batches, loss_fn=_mse, progress=False)
    assert sorted(grads) == ["fc1.weight", "fc2.weight"]
    ref = _autograd_mean(model, batches, [model.fc1.weight, model.fc2.weight])
    torch.testing.assert_close(grads["fc1.weight"], ref[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads["fc2.weight"], ref[1], rtol=1e-5, atol=1e-7)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert grads["fc1.weight"].dtype == torch.float32


def test_estimate_gradients_frees_grad_during_backward():
    """The accumulator is the only copy: .grad never survives a hook (streaming)."""
    model = MLP()
    seen = []
    model.fc2.weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad is None))
    X, Y = _data()
    lt.estimate_gradients(model, _batches(X, Y), loss_fn=_mse, targets=["fc1"], progress=True)
    assert seen == []  # non-targets get no gradient at all
    assert model.fc1.weight.grad is None


def test_estimate_gradients_shared_module_and_checkpointing():
    class Shared(torch.nn.Module):
        def __init__(self, ckpt):
            super().__init__()
            self.inp = torch.nn.Linear(D_IN, H)
            self.block = torch.nn.Linear(H, H)
            self.ckpt = ckpt

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            for _ in range(2):  # one module called twice per forward
                if self.ckpt:
                    h = torch.utils.checkpoint.checkpoint(self.block, h, use_reentrant=False)
                else:
                    h = self.block(h)
            return h.sum(dim=1, keepdim=True)

    X, Y = _data(d_out=1)
    torch.manual_seed(0)
    plain = Shared(False)
    ckpt = copy.deepcopy(plain)
    ckpt.ckpt = True
    g1 = lt.estimate_gradients(plain, _batches(X, Y), loss_fn=_mse, progress=False)
    g2 = lt.estimate_gradients(ckpt, _batches(X, Y), loss_fn=_mse, progress=False)
    ref = _autograd_mean(plain, _batches(X, Y), [plain.block.weight])[0]
    torch.testing.assert_close(g1["block.weight"], ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g2["block.weight"], ref, rtol=1e-5, atol=1e-7)


def test_estimate_gradients_errors():
    model = MLP()
    with pytest.raises(ValueError, match="empty"):
        lt.estimate_gradients(model, [], loss_fn=_mse, progress=False)
    with pytest.raises(ValueError, match="targets"):
        lt.estimate_gradients(model, [_data()], targets=["nope"], loss_fn=_mse, progress=False)
    with pytest.raises(RuntimeError, match="scalar"):
        lt.estimate_gradients(model, [_data()], loss_fn=lambda m, b: m(b[0]), progress=False)
    assert all(p.requires_grad for p in model.parameters())


def _init_model(seed=0, **cfg):
    torch.manual_seed(seed)
    base = MLP()
    model = _peft(copy.deepcopy(base), **cfg)
    X, Y = _data()
    grads = lt.estimate_gradients(model, [(X, Y)], loss_fn=_mse, progress=False)
    return base, model, grads, X, Y


@pytest.mark.parametrize(
    "cfg", [{}, {"use_rslora": True}, {"rank_pattern": {"fc2": 3}, "alpha_pattern": {"fc2": 5}}]
)
def test_lora_ga_init_peft_model(cfg):
    """Outputs unchanged; scaling read from each layer; first step = s²ζ² G_2r (LoRA-GA, arXiv:2407.05000)."""
    base, model, grads, X, _ = _init_model(**cfg)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = lt.lora_ga_init_(model, grads, check_inputs=X, compat="paper")
    for pair in lt.find_lora_pairs(model):
        assert state[pair.name].scaling == pair.scaling
        key = pair.name.replace(".default", ".base_layer.weight")
        G = grads[key].double().numpy()
        A, B = pair.A.detach().double().numpy(), pair.B.detach().double().numpy()
        r, out = A.shape[0], B.shape[0]
        zeta2 = out**0.5 / 16
        np.testing.assert_allclose(A @ A.T, zeta2 * np.eye(r), atol=1e-5)
        step = B @ (B.T @ G) + (G @ A.T) @ A
        np.testing.assert_allclose(step, zeta2 * best_rank(G, 2 * r), atol=1e-5)
        w_eff = pair.weight.detach().double() + pair.scaling * (pair.B @ pair.A).detach().double()
        torch.testing.assert_close(w_eff, w0[key].double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(model.base_model.model.fc1.base_layer.bias, base.fc1.bias)
    assert model.peft_config["default"].r == R  # the config itself is untouched


def test_lora_ga_init_explicit_tuples_and_errors():
    W = torch.nn.Linear(8, 6)
    A = torch.nn.Parameter(torch.zeros(2, 8))
    B = torch.nn.Parameter(torch.zeros(6, 2))
    G = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    w0 = W.weight.detach().clone()
    state = lt.lora_ga_init_([(W, A, B, 0.5)], [G], scale="gd_scale")
    torch.testing.assert_close(W.weight + 0.5 * B @ A, w0, rtol=0, atol=1e-6)
    assert state["pair0"].scaling == 0.5
    with pytest.raises(ValueError, match="one gradient per tuple"):
        lt.lora_ga_init_([(W, A, B, 0.5)], [G, G])
    with pytest.raises(ValueError, match=r"shape \(out, in\)"):
        lt.lora_ga_init_([(W, A, B, 0.5)], [G.T])
    with pytest.raises(ValueError, match="rank"):
        lt.lora_ga_init_([(W, A, B, 0.5)], [G], rank=3)
    with pytest.raises(ValueError, match="no PEFT LoRA layers"):
        lt.lora_ga_init_(MLP(), {})
    _, model, grads, _, _ = _init_model()
    with pytest.raises(ValueError, match="no gradient"):
        lt.lora_ga_init_(model, {"x": grads["base_model.model.fc1.base_layer.weight"]})


def test_norm_clip_in_place():
    W = torch.nn.Linear(8, 6, bias=False)
    with torch.no_grad():
        W.weight.mul_(1e-4)  # tiny weights: the offset must be clipped to them
    A = torch.nn.Parameter(torch.zeros(2, 8))
    B = torch.nn.Parameter(torch.zeros(6, 2))
    G = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    w0 = W.weight.detach().clone()
    lt.lora_ga_init_([(W, A, B, 2.0)], [G], norm_clip=True)
    offset = 2.0 * B.detach() @ A.detach()
    assert float(offset.abs().max()) == pytest.approx(float(w0.abs().max()), rel=1e-5)
    torch.testing.assert_close(W.weight + offset, w0, rtol=0, atol=1e-7)


def test_grads_from_the_unwrapped_model_are_found():
    torch.manual_seed(0)
    base = MLP()
    X, Y = _data()
    grads = lt.estimate_gradients(base, [(X, Y)], loss_fn=_mse, progress=False)
    model = _peft(copy.deepcopy(base))
    lt.lora_ga_init_(model, grads, check_inputs=X)


def test_conv1d_fan_in_fan_out():
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D

    class GPTish(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = conv1d(H, D_IN)  # weight (in, out)
            self.c_proj = conv1d(D_OUT, H)

        def forward(self, x):
            return self.c_proj(torch.tanh(self.c_fc(x)))

    torch.manual_seed(0)
    model = _peft(GPTish(), target_modules=["c_fc", "c_proj"], fan_in_fan_out=True)
    X, Y = _data()
    grads = lt.estimate_gradients(model, [(X, Y)], loss_fn=_mse, progress=False)
    lt.lora_ga_init_(model, grads, check_inputs=X, svd="exact")
    layer = model.base_model.model.c_fc
    G = grads["base_model.model.c_fc.base_layer.weight"].T  # (out, in)
    A = layer.lora_A["default"].weight.detach()
    P_ref = lowrank.lora_ga_init(G.double().numpy(), R, scaling=1.0, svd="exact").A
    np.testing.assert_allclose(
        A.double().numpy().T @ A.double().numpy(), P_ref.T @ P_ref, atol=1e-5
    )


def test_bf16_model():
    torch.manual_seed(0)
    model = _peft(MLP()).to(torch.bfloat16)
    X, Y = _data()
    X, Y = X.bfloat16(), Y.bfloat16()
    grads = lt.estimate_gradients(model, [(X, Y)], loss_fn=_mse, progress=False)
    assert all(g.dtype == torch.float32 for g in grads.values())
    state = lt.lora_ga_init_(model, grads, check_inputs=X)
    assert all(s.A.dtype == torch.bfloat16 for s in state.values())


def test_save_apply_export_roundtrip(tmp_path):
    base, model, grads, X, Y = _init_model()
    state = lt.lora_ga_init_(model, grads)
    lt.save_lora_ga_init(state, tmp_path / "init.pt")
    loaded = lt.load_lora_ga_init(tmp_path / "init.pt")
    rebuilt = _peft(copy.deepcopy(base), seed=99)
    lt.apply_lora_ga_offset_(rebuilt, loaded)
    for (n1, p1), (_, p2) in zip(model.named_parameters(), rebuilt.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1  # bit-exact rebuild of the modified model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        _mse(model, (X, Y)).backward()
        opt.step()
    lt.export_lora_adapter(model, state, tmp_path / "export")
    stock = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "export")
    assert stock.peft_config["default"].r == 2 * R
    with torch.no_grad():
        torch.testing.assert_close(stock(X), model(X), rtol=1e-5, atol=1e-5)
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a lowrank"):
        lt.load_lora_ga_init(tmp_path / "bad.pt")


def _align(X, ref, axis):
    signs = np.sign(np.sum(X * ref, axis=axis, keepdims=True))
    return X * np.where(signs == 0, 1.0, signs)


@pytest.mark.parametrize(
    ("direction", "scale"),
    [
        ("ArB2r", "stable"),
        ("A2rBr", "gd_scale"),
        ("ArBr", "unit"),
        ("ArB2r", "weight_svd"),
        ("random", "stable"),
    ],
)
def test_peft_compat_matches_peft_itself(direction, scale):
    """compat="peft" against PEFT 0.21's own lora_ga init on the same gradient."""
    torch.manual_seed(0)
    base = MLP()
    grads = {}
    for name in ("fc1", "fc2"):
        lin = getattr(base, name)
        out, inn = lin.weight.shape
        k = min(out, inn)
        g = torch.Generator().manual_seed(len(name) + out)
        U = torch.linalg.qr(torch.randn(out, k, generator=g, dtype=torch.float64))[0]
        V = torch.linalg.qr(torch.randn(inn, k, generator=g, dtype=torch.float64))[0]
        grads[name] = ((U * 0.3 ** torch.arange(k)) @ V.T).float()  # steep: svd_lowrank exact
    ours = _peft(copy.deepcopy(base))
    ga = peft.LoraGAConfig(direction=direction, scale=scale)
    theirs_base = copy.deepcopy(base)
    for name, g in grads.items():
        getattr(theirs_base, name)._peft_loraga_grad = g
    torch.manual_seed(0)
    theirs = peft.get_peft_model(
        theirs_base,
        peft.LoraConfig(
            r=R,
            lora_alpha=4,
            target_modules=["fc1", "fc2"],
            init_lora_weights="lora_ga",
            lora_ga_config=ga,
        ),
    )
    by_key = {f"base_model.model.{n}.base_layer.weight": g for n, g in grads.items()}
    lt.lora_ga_init_(ours, by_key, compat="peft", direction=direction, scale=scale, svd="exact")
    for p_ours, p_theirs in zip(lt.find_lora_pairs(ours), lt.find_lora_pairs(theirs), strict=True):
        A1, B1 = p_ours.A.detach().double().numpy(), p_ours.B.detach().double().numpy()
        A2, B2 = p_theirs.A.detach().double().numpy(), p_theirs.B.detach().double().numpy()
        if direction == "random":  # shared index sets: B A = Σ_{i in idx} s_i u_i v_iᵀ
            G = grads[p_ours.name.split(".")[-2]].double().numpy()
            for A, B in ((A1, B1), (A2, B2)):
                idx = np.argmax(np.abs(np.linalg.svd(G)[2] @ A.T), axis=0)
                U, S, Vh = np.linalg.svd(G)
                zeta = B.shape[0] ** 0.25 / 4
                np.testing.assert_allclose(B @ A, zeta * (U[:, idx] * S[idx]) @ Vh[idx], atol=1e-5)
            continue
        A1, B1 = _align(A1, A2, 1), _align(B1, B2, 0)
        np.testing.assert_allclose(A1, A2, atol=1e-5)
        if scale == "weight_svd":  # PEFT's σ_1(W) is from svd_lowrank(W, q=r): ~1 % off
            ratio = np.linalg.norm(B1) / np.linalg.norm(B2)
            np.testing.assert_allclose(B1 / ratio, B2, rtol=1e-4, atol=1e-7)
            assert abs(ratio - 1) < 0.05
            continue
        np.testing.assert_allclose(B1, B2, rtol=1e-4, atol=1e-7)
        w_ours = p_theirs.weight.detach().double().numpy() + p_theirs.scaling * B2 @ A2
        w_res = w_ours - p_ours.scaling * B1 @ A1  # our W_res with PEFT's signs
        np.testing.assert_allclose(w_res, p_theirs.weight.detach().double().numpy(), atol=1e-6)


def _train(model, X, Y, steps, lr):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = _mse(model, (X, Y))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def _teacher_task(seed=0, n=256, d_in=32, h=64, d_out=16):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    base = MLP(d_in, h, d_out)
    teacher = copy.deepcopy(base)
    with torch.no_grad():
        for lin in (teacher.fc1, teacher.fc2):
            o, i = lin.weight.shape
            lin.weight += (
                0.5 * torch.randn(o, 2, generator=g) @ torch.randn(2, i, generator=g) / i**0.5
            )
    X = torch.randn(n, d_in, generator=g)
    return base, X, teacher(X).detach()


def test_end_to_end_first_step_and_loss_curve():
    """One SGD step of LoRA-GA = best rank-2r approximation of the full step; LoRA-GA trains
    faster than vanilla LoRA at every step (docs/theory/lora_ga.md)."""
    base, X, Y = _teacher_task()
    cfg = {"r": 4, "lora_alpha": 8}
    model = _peft(copy.deepcopy(base), seed=1, **cfg)
    grads = lt.estimate_gradients(model, [(X, Y)], loss_fn=_mse, progress=False)
    lt.lora_ga_init_(model, grads, scale="gd_scale", svd="exact", compat="paper")
    pairs = lt.find_lora_pairs(model)
    before = [(p.weight + p.scaling * p.B @ p.A).detach().double() for p in pairs]
    _train(model, X, Y, 1, lr=1e-3)
    for pair, w0 in zip(pairs, before, strict=True):
        dw = ((pair.weight + pair.scaling * pair.B @ pair.A).detach().double() - w0).numpy()
        G = grads[pair.name.replace(".default", ".base_layer.weight")].double().numpy()
        target = -best_rank(G, 2 * pair.A.shape[0]).ravel()
        cos = dw.ravel() @ target / (np.linalg.norm(dw) * np.linalg.norm(target))
        assert cos >= 0.999
    steps, lr = 60, 0.2
    ga = _peft(copy.deepcopy(base), seed=1, **cfg)
    lt.lora_ga_init_(ga, lt.estimate_gradients(ga, [(X, Y)], loss_fn=_mse, progress=False),
                     compat="paper")
    loss_ga = _train(ga, X, Y, steps, lr)
    loss_lora = _train(_peft(copy.deepcopy(base), seed=1, **cfg), X, Y, steps, lr)
    assert loss_ga[0] == pytest.approx(loss_lora[0], rel=1e-5)  # same function at init
    assert all(a < b for a, b in zip(loss_ga[1:], loss_lora[1:], strict=True))


def test_output_and_layer_checks_raise():
    """The init-time checks raise when outputs or W_res + s B A disagree with W."""
    from lowrank.torch._layers import LoraPair
    from lowrank.torch._lora_ga_io import _check_layer
    from lowrank.torch._lora_ga_targets import model_outputs_close

    model = MLP()
    X, _ = _data()
    before = model_outputs_close(model, X, None)
    model_outputs_close(model, X, before)  # unchanged: passes
    with pytest.raises(ValueError, match="outputs changed"):
        model_outputs_close(model, X, (before[0] + 1e-2, before[1]))
    W = torch.randn(6, 4)
    A, B = torch.randn(2, 4), torch.randn(6, 2)
    pair = LoraPair(name="x", A=A, B=B, scaling=1.0, weight=W)
    _check_layer(W, W - B @ A, A, B, 1.0, pair)
    with pytest.raises(ValueError, match="changed layer"):
        _check_layer(W, W + B @ A, A, B, 1.0, pair)
