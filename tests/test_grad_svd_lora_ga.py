"""lora_ga_init_ fed gradient SVDs (estimate_gradient_svd) in place of gradients."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from test_grad_svd import _batches, _cos, _loss, _mlp  # noqa: E402

import lowrank.torch as lt  # noqa: E402

R = 4


def _wrapped():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return peft.get_peft_model(_mlp(), peft.LoraConfig(r=R, lora_alpha=8,
                                                           target_modules=["0", "3"]))


@pytest.fixture(scope="module")
def data():
    model, batches = _wrapped(), _batches()
    exact = lt.estimate_gradients(model, batches, loss_fn=_loss, progress=False)
    svd = lt.estimate_gradient_svd(model, batches, 2 * R, loss_fn=_loss, rng=0, progress=False)
    return batches, exact, svd


def _exact_svds(exact, k):
    out = {}
    for name, G in exact.items():
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        out[name] = lt.GradientSVD(U[:, :k], S[:k], Vh[:k], 0.0, 1.0, float(S[k - 1] / S[k]), 1)
    return out


def _factors(model):
    return {p.name: (p.A.detach().clone(), p.B.detach().clone(), p.scaling)
            for p in lt.find_lora_pairs(model)}


def _first_step(A, B, s, G):
    """Change of W_eff after one SGD step: s(B g_A + g_B A), g_A = s BᵀG, g_B = s G Aᵀ."""
    A, B, G = A.double(), B.double(), G.double()
    return s * s * (B @ (B.T @ G) + (G @ A.T) @ A)


def test_sketched_init_follows_the_exact_first_step(data):
    batches, exact, svd = data
    check = batches[0][0]
    a, b = _wrapped(), _wrapped()
    lt.lora_ga_init_(a, exact, check_inputs=check)
    _, info = lt.lora_ga_init_(b, svd, check_inputs=check, return_info=True)
    fa, fb = _factors(a), _factors(b)
    for pair in lt.find_lora_pairs(a):
        G = exact[pair.name.rsplit(".", 1)[0] + ".base_layer.weight"]
        A, B, s = fa[pair.name]
        A2, B2, _ = fb[pair.name]
        cos = _cos(_first_step(A, B, s, G), _first_step(A2, B2, s, G))
        lead = info[pair.name]
        assert lead.S.shape == (2 * R,) and math.isfinite(lead.gap_r)
        assert 0 < lead.energy_2r <= 1 + 1e-6
        U0, s0, _ = torch.linalg.svd(G.double(), full_matrices=False)
        if float(s0[2 * R - 1] / s0[2 * R]) >= 1.05:
            assert cos >= 0.999, (pair.name, cos)


OPTIONS = [(d, s, c) for c in ("paper", "peft") for d, s in (
    ("ArB2r", "stable"), ("ArB2r", "gd_scale"), ("A2rBr", "unit"), ("ArBr", "weight_svd"))]


@pytest.mark.parametrize(("direction", "scale", "compat"), OPTIONS)
def test_every_option_matches_the_dense_path_on_exact_triplets(data, direction, scale, compat):
    # Fed the exact top-2r triplets, the SVD path gives the dense path's factors up to the
    # sign of each singular pair: compare the sign-free A0ᵀA0 and B0B0ᵀ.
    _, exact, _ = data
    opts = {"direction": direction, "scale": scale, "compat": compat}
    a, b = _wrapped(), _wrapped()
    lt.lora_ga_init_(a, exact, svd="exact", **opts)
    lt.lora_ga_init_(b, _exact_svds(exact, 2 * R), **opts)
    fa, fb = _factors(a), _factors(b)
    for name, (A, B, _) in fa.items():
        A2, B2, _ = fb[name]
        tol = 1e-4 * max(float((A.T @ A).abs().max()), float((B @ B.T).abs().max()))
        assert torch.allclose(A.T @ A, A2.T @ A2, atol=tol), name
        assert torch.allclose(B @ B.T, B2 @ B2.T, atol=tol), name


def test_random_direction_and_norm_clip(data):
    batches, _, svd = data
    model = _wrapped()
    lt.lora_ga_init_(model, svd, direction="random", rng=3, norm_clip=0.01,
                     check_inputs=batches[0][0])
    for pair in lt.find_lora_pairs(model):
        # orthonormal rows of Vh times ζ (paper) or ζ-scaled (peft): rows stay orthogonal
        gram = pair.A.detach() @ pair.A.detach().T
        assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-5)


def test_refusals(data):
    batches, exact, svd = data
    few = lt.estimate_gradient_svd(_wrapped(), batches, R, n_sweeps=2, loss_fn=_loss,
                                   progress=False)
    with pytest.raises(ValueError, match="2r = 8"):
        lt.lora_ga_init_(_wrapped(), few)
    for opt in ({"svd": "exact"}, {"n_oversamples": 4}, {"n_power_iter": 2}):
        with pytest.raises(TypeError, match=next(iter(opt))):
            lt.lora_ga_init_(_wrapped(), svd, **opt)
    mixed = dict(svd)
    first = next(iter(mixed))
    mixed[first] = exact[first]
    with pytest.raises(ValueError, match="mixes"):
        lt.lora_ga_init_(_wrapped(), mixed)
    bad = {k: v._replace(S=v.S * float("nan")) for k, v in svd.items()}
    model = _wrapped()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="NaN"):
        lt.lora_ga_init_(model, bad)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_explicit_tuples_and_conv1d_layout():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(Conv1D(40, 24), torch.nn.Tanh(), torch.nn.Linear(40, 5))
    data = [torch.randn(6, 24, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    loss = lambda m, x: m(x).square().mean()  # noqa: E731
    grads = lt.estimate_gradients(net, data, loss_fn=loss, progress=False)
    svd = lt.estimate_gradient_svd(net, data, 24, n_sweeps=2, block_size=24, loss_fn=loss,
                                   progress=False)
    g, s = grads["0.weight"], svd["0.weight"]
    assert s.shape == tuple(g.shape) == (24, 40)  # Conv1D: the weight's (in, out) layout
    full = (s.U * s.S) @ s.Vh  # a full basis: the SVD of the gradient itself
    assert torch.allclose(full, g, atol=1e-5 * float(g.norm()))
    del transformers
    W = torch.nn.Linear(40, 5, bias=False)
    A, B = torch.nn.Parameter(torch.zeros(2, 40)), torch.nn.Parameter(torch.zeros(5, 2))
    out = lt.lora_ga_init_([(W.weight, A, B, 2.0)], [svd["2.weight"]], scale="unit")
    assert torch.allclose(A @ A.T, torch.eye(2), atol=1e-5) and "pair0" in out
