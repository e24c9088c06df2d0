"""estimate_gradient_svd against the exact path (estimate_gradients + exact SVD) on a small MLP."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lowrank.torch as lt  # noqa: E402
from lowrank._agnostic._grad_sketch import sketch_svds  # noqa: E402
from lowrank._lib._compat import array_namespace  # noqa: E402
from lowrank._lib._random import Random  # noqa: E402

EPS32 = float(torch.finfo(torch.float32).eps)
IN, TOKENS = 192, 6 * 4 * 32  # input width; tokens over the default six batches


def _mlp(seed=0, dropout=0.0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(IN, 256), torch.nn.GELU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(256, 224), torch.nn.Tanh(), torch.nn.Linear(224, 12),
        )


def _batches(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 32, IN, generator=g), torch.randn(4, 32, 12, generator=g))
            for _ in range(n)]


def _loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def _max_sine(A, B):
    c = torch.linalg.svdvals(A.T.double() @ B.double()).min().item()
    return math.sqrt(max(0.0, 1.0 - c * c))


def lora_ga_step(G, U, Vh, r):
    """First LoRA-GA step direction ``B0 B0ᵀ G + G A0ᵀ A0`` (A0 = Vh[:r], B0 = U[:, r:2r])."""
    A, B = Vh[:r].double(), U[:, r : 2 * r].double()
    G = G.double()
    return B @ (B.T @ G) + (G @ A.T) @ A


def _cos(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def exact():
    net, data = _mlp(), _batches()
    return lt.estimate_gradients(net, data, loss_fn=_loss, progress=False)


def test_matches_the_exact_gradient_svd(exact):
    net, data, r = _mlp(), _batches(), 4
    svd = lt.estimate_gradient_svd(net, data, 2 * r, loss_fn=_loss, rng=0, progress=False)
    assert sorted(svd) == sorted(exact) == ["0.weight", "3.weight", "5.weight"]
    for name, G in exact.items():
        res = svd[name]
        k = min(2 * r, *G.shape)
        U0, s0, Vh0 = torch.linalg.svd(G.double(), full_matrices=False)
        assert res.U.shape == (G.shape[0], k) and res.Vh.shape == (k, G.shape[1])
        assert res.n_sweeps == 4 and res.U.dtype == torch.float32
        # The sketch and the exact path sum the same products in other orders: float32
        # rounding of the accumulated gradient, ~eps32 * ‖G‖_F * sqrt(batches * tokens).
        noise = 64 * EPS32 * float(G.norm()) * math.sqrt(TOKENS)
        S = res.S.double()
        assert torch.all(S <= s0[:k] + noise)  # Ritz values interlace
        if k == min(G.shape):
            continue
        # Wedin, a posteriori: G Vᵀ = U S by construction; the left residual (computed
        # here from the exact G) bounds both subspaces' sines by resid / (S_k - σ_{k+1}).
        Gd, Ud, Vd = G.double(), res.U.double(), res.Vh.double().T
        resid = max(torch.linalg.matrix_norm(Gd @ Vd - Ud * S, 2),
                    torch.linalg.matrix_norm(Gd.T @ Ud - Vd * S, 2))
        delta = float(S[-1] - s0[k])
        bound = (float(resid) + noise) / delta if delta > 0 else math.inf
        sines = max(_max_sine(U0[:, :k], res.U), _max_sine(Vh0[:k].T, res.Vh.T))
        assert sines <= min(1.0, bound)
        true = float(torch.linalg.matrix_norm(G.double() - (res.U.double() * S) @ res.Vh.double())
                     / G.double().norm())
        assert res.error_estimate >= 0.25 * true  # 8 probes: below a quarter with p < 2 %
        gap = float(s0[k - 1] / s0[k])
        cos = _cos(lora_ga_step(G, U0, Vh0, r), lora_ga_step(G, res.U, res.Vh, r))
        if gap >= 1.05:
            assert cos >= 0.999, (name, gap, cos)


def test_products_are_those_of_the_mean_gradient(exact):
    # The hooks' products equal G X and Gᵀ Y of the exact mean gradient to rounding:
    # a one-sweep run and the core driven by the explicit gradients draw the same blocks.
    net, data = _mlp(), _batches()
    ours = lt.estimate_gradient_svd(net, data, 8, n_sweeps=3, block_size=8, loss_fn=_loss,
                                    rng=5, progress=False)
    mats = [exact[n] for n in ("0.weight", "3.weight", "5.weight")]
    xp = array_namespace(mats[0])
    ref = sketch_svds(lambda Xs, Ys: ([G @ X for G, X in zip(mats, Xs)],
                                      [G.T @ Y for G, Y in zip(mats, Ys)]),
                      [tuple(G.shape) for G in mats], 8, n_sweeps=3, block=8,
                      rand=Random(5, xp, torch.device("cpu")), dtype=torch.float32, xp=xp)
    for name, G, r in zip(("0.weight", "3.weight", "5.weight"), mats, ref):
        k = r.S.shape[0]
        noise = 64 * EPS32 * float(G.norm()) * math.sqrt(TOKENS)
        assert torch.allclose(ours[name].S[:k], r.S, rtol=0, atol=10 * noise)
        lead = (r.U[:, :1] * r.S[:1]) @ r.Vh[:1]
        ours_lead = (ours[name].U[:, :1] * ours[name].S[:1]) @ ours[name].Vh[:1]
        assert torch.allclose(ours_lead, lead, rtol=0, atol=1e-3 * float(r.S[0]))


def test_no_weight_gradient_model_untouched_and_seeded():
    net, data = _mlp(), _batches()
    before = copy.deepcopy(net.state_dict())
    flags = [p.requires_grad for p in net.parameters()]
    net[0].weight.requires_grad_(False)  # a frozen flag must come back frozen
    flags[0] = False
    net.train()
    a = lt.estimate_gradient_svd(net, data, 6, loss_fn=_loss, rng=3, progress=False)
    b = lt.estimate_gradient_svd(net, data, 6, loss_fn=_loss, rng=3, progress=False)
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert net.training and all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    for name in a:
        assert torch.equal(a[name].U, b[name].U) and torch.equal(a[name].S, b[name].S)
    c = lt.estimate_gradient_svd(net, data, 6, loss_fn=_loss, rng=4, progress=False)
    assert not torch.equal(a["3.weight"].U, c["3.weight"].U)


def test_no_autograd_weight_gradient_node_exists():
    # AccumulateGrad nodes exist only for leaves that require grad: none is a parameter
    # (the one leaf is the first layer's input alias, which lets backward start).
    net, data = _mlp(), _batches(n=1)
    leaves = []

    def loss_fn(model, batch):
        loss = _loss(model, batch)
        stack, nodes = [loss.grad_fn], set()
        while stack:
            node = stack.pop()
            if node is None or node in nodes:
                continue
            nodes.add(node)
            if type(node).__name__ == "AccumulateGrad":
                leaves.append(node.variable)
            stack.extend(f for f, _ in node.next_functions)
        return loss

    lt.estimate_gradient_svd(net, data, 4, n_sweeps=1, loss_fn=loss_fn, progress=False)
    params = {id(p) for p in net.parameters()}
    assert len(leaves) == 1 and id(leaves[0]) not in params
    assert tuple(leaves[0].shape) == (4, 32, IN)


def test_gradient_checkpointing_gives_the_same_estimate():
    from torch.utils.checkpoint import checkpoint

    class Ckpt(torch.nn.Module):
        def __init__(self, net, reentrant):
            super().__init__()
            self.net, self.reentrant = net, reentrant
            self.embed = torch.nn.Identity()

        def get_input_embeddings(self):
            return self.embed

        def forward(self, x):
            h = self.embed(x.clone())
            h = checkpoint(self.net[:3], h, use_reentrant=self.reentrant)
            return checkpoint(self.net[3:], h, use_reentrant=self.reentrant)

    data = _batches()
    plain = lt.estimate_gradient_svd(_mlp(), data, 6, loss_fn=_loss, rng=0, progress=False)
    for reentrant in (False, True):
        model = Ckpt(_mlp(), reentrant)
        got = lt.estimate_gradient_svd(model, data, 6, loss_fn=_loss, rng=0, progress=False)
        assert sorted(got) == ["net.0.weight", "net.3.weight", "net.5.weight"]
        for name, res in plain.items():
            other = got[f"net.{name}"]
            tol = 1e-4 * float(res.S[0])
            assert torch.allclose(other.S, res.S, rtol=0, atol=tol), (reentrant, name)


def test_module_used_twice_counts_both_uses():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.lin = torch.nn.Linear(24, 24)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    net = Twice()
    data = [torch.randn(5, 24, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loss = lambda m, x: m(x).square().mean()  # noqa: E731
    G = lt.estimate_gradients(net, data, loss_fn=loss, progress=False)["lin.weight"]
    res = lt.estimate_gradient_svd(net, data, 24, n_sweeps=2, block_size=16, loss_fn=loss,
                                   progress=False)["lin.weight"]
    # a full basis (32 >= 24 columns): the sketch is the exact SVD of G
    assert torch.allclose(res.S, torch.linalg.svdvals(G), rtol=0, atol=1e-5 * float(G.norm()))


def test_refusals_name_the_problem():
    net, data = _mlp(), _batches(n=2)
    kw = {"loss_fn": _loss, "progress": False}
    with pytest.raises(ValueError, match="dropout"):
        lt.estimate_gradient_svd(_mlp(dropout=0.1).train(), data, 4, **kw)
    lt.estimate_gradient_svd(_mlp(dropout=0.1).eval(), data, 4, n_sweeps=2, **kw)  # eval: fine
    with pytest.raises(ValueError, match="re-iterable"):
        lt.estimate_gradient_svd(net, iter(data), 4, **kw)
    with pytest.raises(ValueError, match="empty"):
        lt.estimate_gradient_svd(net, [], 4, **kw)
    calls = []

    def drifting(model, batch):  # a loss that changes between sweeps (random masking)
        calls.append(1)
        return _loss(model, batch) * (1 + 0.01 * (len(calls) > 2))

    with pytest.raises(ValueError, match="same at every sweep"):
        lt.estimate_gradient_svd(net, data, 4, loss_fn=drifting, progress=False)
    for bad, exc, word in [({"rank": 0}, ValueError, "rank"), ({"rank": 2.0}, TypeError, "rank"),
                           ({"n_sweeps": 0}, ValueError, "n_sweeps"),
                           ({"block_size": True}, TypeError, "block_size"),
                           ({"n_sweeps": 1, "block_size": 2}, ValueError, "n_sweeps \\* block"),
                           ({"targets": ["nope"]}, ValueError, "nope"),
                           ({"targets": ["1"]}, TypeError, "GELU"),
                           ({"rng": -1}, ValueError, "rng")]:
        args = {"rank": 4, **bad}
        with pytest.raises(exc, match=word):
            lt.estimate_gradient_svd(net, data, args.pop("rank"), **args, **kw)
    with pytest.raises(RuntimeError, match="scalar"):
        lt.estimate_gradient_svd(net, data, 4, loss_fn=lambda m, b: m(b[0]).detach().sum(),
                                 progress=False)


def test_unreached_target_warned_and_left_out():
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = _mlp(), torch.nn.Linear(12, 3)

        def forward(self, x):
            return self.net(x)

    data = _batches(n=2)
    with pytest.warns(UserWarning, match="unused.weight"):
        got = lt.estimate_gradient_svd(Holder(), data, 4, n_sweeps=2, loss_fn=_loss,
                                       targets=["net.3", "unused"], progress=False)
    assert list(got) == ["net.3.weight"]


def test_peft_model_before_and_after_wrapping():
    peft = pytest.importorskip("peft")
    data = _batches(n=3)
    plain = lt.estimate_gradient_svd(_mlp(), data, 6, loss_fn=_loss, targets=["0", "3"], rng=0,
                                     progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wrapped = peft.get_peft_model(_mlp(), peft.LoraConfig(r=3, target_modules=["0", "3"]))
    got = lt.estimate_gradient_svd(wrapped, data, 6, loss_fn=_loss, rng=0, progress=False)
    assert sorted(got) == ["base_model.model.0.base_layer.weight",
                           "base_model.model.3.base_layer.weight"]
    for name in ("0", "3"):
        a, b = plain[f"{name}.weight"], got[f"base_model.model.{name}.base_layer.weight"]
        assert torch.allclose(a.S, b.S, rtol=1e-5, atol=0)
        assert torch.allclose(a.U, b.U, atol=1e-4) and torch.allclose(a.Vh, b.Vh, atol=1e-4)
    assert all(p.grad is None for p in wrapped.parameters())
    lora = [p for n, p in wrapped.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)  # PEFT's trainable flags restored


def test_a_lora_branch_is_switched_off_only_while_it_adds_zero():
    # A LoRA branch with lora_B = 0 adds exactly zero, so the estimation may skip it; one
    # that adds something must run (it changes the gradients upstream), and every branch
    # must be back on afterwards.
    peft = pytest.importorskip("peft")
    data = _batches(n=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wrapped = peft.get_peft_model(_mlp(), peft.LoraConfig(r=3, target_modules=["0", "3"]))
    layers = [m for m in wrapped.modules() if hasattr(m, "lora_B")]
    with torch.no_grad():  # layer 3's branch now adds s B A x; layer 0's still adds 0
        wrapped.base_model.model[3].lora_B["default"].weight.normal_(
            0, 0.5, generator=torch.Generator().manual_seed(3))
    x = data[0][0]
    before = wrapped(x).detach()
    got = lt.estimate_gradient_svd(wrapped, data, 6, loss_fn=_loss, rng=0, progress=False)
    assert not any(m.disable_adapters for m in layers)
    assert torch.equal(wrapped(x).detach(), before)
    exact = lt.estimate_gradients(wrapped, data, loss_fn=_loss, progress=False)
    plain = lt.estimate_gradients(_mlp(), data, loss_fn=_loss, targets=["0"], progress=False)
    key = "base_model.model.0.base_layer.weight"
    s_exact = torch.linalg.svdvals(exact[key].double())[0]
    s_plain = torch.linalg.svdvals(plain["0.weight"].double())[0]
    assert abs(s_exact / s_plain - 1) > 1e-2  # the branch changes layer 0's gradient
    assert abs(got[key].S[0].double() / s_exact - 1) < 1e-4
