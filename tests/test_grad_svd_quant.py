"""A base whose linear weights are int8 buffers (no float weight, no .grad possible): the
gradient SVD from hooks, and LoRA-GA with the offset kept out of the weight."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from test_grad_svd import _batches, _cos, _loss, _max_sine, _mlp, lora_ga_step  # noqa: E402

import lowrank.torch as lt  # noqa: E402

R = 4


class Int8Linear(torch.nn.Module):
    """Weight-only int8 linear layer: per-row scales, int8 codes, float bias."""

    def __init__(self, linear):
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        self.register_buffer("qweight", torch.round(w / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = torch.nn.Parameter(linear.bias.detach().clone())
        self.out_features, self.in_features = w.shape

    def dequantized(self):
        return self.qweight.float() * self.scale

    def forward(self, x):
        return torch.nn.functional.linear(x, self.dequantized(), self.bias)


class LoraWrap(torch.nn.Module):
    """A LoRA layer in PEFT's layout around any base module (B = 0: the usual start)."""

    def __init__(self, base, r=R, alpha=8.0):
        super().__init__()
        self.base_layer = base
        a = torch.nn.Linear(base.in_features, r, bias=False)
        b = torch.nn.Linear(r, base.out_features, bias=False)
        self.lora_A = torch.nn.ModuleDict({"default": a})
        self.lora_B = torch.nn.ModuleDict({"default": b})
        torch.nn.init.zeros_(self.lora_B["default"].weight)
        self.scaling = {"default": alpha / r}

    def forward(self, x):
        lora = self.lora_B["default"](self.lora_A["default"](x))
        return self.base_layer(x) + self.scaling["default"] * lora


def _quantized():
    net = _mlp()
    for i in (0, 3):
        net[i] = Int8Linear(net[i])
    return net


def _twin():
    """The float model computing exactly what the quantized one computes."""
    q, net = _quantized(), _mlp()
    with torch.no_grad():
        for i in (0, 3):
            net[i].weight.copy_(q[i].dequantized())
    return net


def test_quantized_targets_match_the_float_twin():
    data = _batches()
    exact = lt.estimate_gradients(_twin(), data, loss_fn=_loss, targets=["0", "3"],
                                  progress=False)
    q = _quantized()
    svd = lt.estimate_gradient_svd(q, data, 2 * R, loss_fn=_loss, targets=["0", "3"], rng=0,
                                   progress=False)
    assert sorted(svd) == ["0.weight", "3.weight"]
    assert not any(isinstance(t, torch.nn.Parameter) for t in (q[0].qweight, q[3].qweight))
    for name, G in exact.items():
        res, Gd = svd[name], G.double()
        U0, s0, Vh0 = torch.linalg.svd(Gd, full_matrices=False)
        k = 2 * R
        noise = 64 * float(torch.finfo(torch.float32).eps) * float(Gd.norm()) * math.sqrt(768)
        Ud, Vd, S = res.U.double(), res.Vh.double().T, res.S.double()
        resid = max(float(torch.linalg.matrix_norm(Gd @ Vd - Ud * S, 2)),
                    float(torch.linalg.matrix_norm(Gd.T @ Ud - Vd * S, 2)))
        delta = float(S[-1] - s0[k])
        bound = (resid + noise) / delta if delta > 0 else math.inf
        assert max(_max_sine(U0[:, :k], res.U), _max_sine(Vh0[:k].T, res.Vh.T)) <= min(1, bound)
        if float(s0[k - 1] / s0[k]) >= 1.05:
            assert _cos(lora_ga_step(G, U0, Vh0, R), lora_ga_step(G, res.U, res.Vh, R)) >= 0.999


def test_lora_ga_on_the_quantized_base_keeps_the_outputs():
    data = _batches()
    model = _quantized()
    for i in (0, 3):
        model[i] = LoraWrap(model[i])
    x = data[0][0]
    with torch.no_grad():
        before = model(x).clone()
    svd = lt.estimate_gradient_svd(model, data, 2 * R, loss_fn=_loss, rng=0, progress=False)
    assert sorted(svd) == ["0.base_layer.weight", "3.base_layer.weight"]
    out = lt.lora_ga_init_residual_(model, svd)
    with torch.no_grad():
        after = model(x)
    # the offset s B0 A0 x and its correction cancel to rounding of their size
    pairs = lt.find_lora_pairs(model)
    assert sorted(out) == sorted(p.name for p in pairs)
    size = max(float((p.scaling * (p.B @ p.A)).detach().abs().max()) for p in pairs)
    scale = max(1.0, float(before.abs().max()), size * float(x.abs().max()))
    diff = float((after - before).abs().max())
    assert diff <= 1024 * float(torch.finfo(torch.float32).eps) * scale, (diff, scale)
    # the trainable factors are LoRA-GA's: the same as lora_ga_init_ gives the float twin
    twin = _twin()
    for i in (0, 3):
        twin[i] = LoraWrap(twin[i])
    lt.lora_ga_init_(twin, svd)
    for pair, other in zip(lt.find_lora_pairs(model), lt.find_lora_pairs(twin)):
        assert torch.equal(pair.A, other.A) and torch.equal(pair.B, other.B)
    # the first step trains (A, B) through the correction hook
    _loss(model, data[0]).backward()
    assert all(p.A.grad is not None and p.B.grad is not None for p in lt.find_lora_pairs(model))
    with pytest.raises(ValueError, match="already"):
        lt.lora_ga_init_residual_(model, svd)
    with pytest.raises(TypeError, match="norm_clip"):
        lt.lora_ga_init_residual_(model, svd, norm_clip=True)
