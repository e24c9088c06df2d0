"""LoRA-One: the pure factors against the definition, and the PEFT utility from exact
gradients and from gradient sketches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import matrix_with_spectrum

import lowrank


def _best(G, r):
    U, S, Vh = np.linalg.svd(G, full_matrices=False)
    return (U[:, :r] * S[:r]) @ Vh[:r]


@pytest.mark.parametrize("normalize", [False, True])
def test_factors_are_a_scaled_negative_rank_r_gradient(normalize):
    G = matrix_with_spectrum(40, 30, 2.0 ** -np.arange(30), seed=0) * 7.0
    U, S, Vh = np.linalg.svd(G, full_matrices=False)
    A, B = lowrank.lora_one_factors(U, S, Vh, 3, gamma=9.0, normalize=normalize)
    c = 9.0 * (S[0] if normalize else 1.0)
    assert np.allclose(B @ A, -_best(G, 3) / c, atol=1e-12 * S[0])
    # balanced: BᵀB = A Aᵀ = S_r / c (the paper's symmetric split of S_r)
    assert np.allclose(B.T @ B, np.diag(S[:3]) / c) and np.allclose(A @ A.T, np.diag(S[:3]) / c)


def test_init_randomized_and_exact_and_batched():
    G = matrix_with_spectrum(300, 200, 0.8 ** np.arange(200), seed=1)
    A, B = lowrank.lora_one_init(G, 4, gamma=2.0, rng=0)
    assert np.allclose(B @ A, -_best(G, 4) / 2.0, atol=1e-8)
    stack = np.stack([G, 2 * G])
    A2, B2 = lowrank.lora_one_init(stack, 4, gamma=2.0, svd="exact")
    assert np.allclose(B2[1] @ A2[1], 2 * (B @ A), atol=1e-8)
    A32, _ = lowrank.lora_one_init(G.astype(np.float32), 4, gamma=2.0, rng=0)
    assert A32.dtype == np.float32


def test_zero_gradient_and_refusals():
    A, B = lowrank.lora_one_init(np.zeros((8, 6)), 2, gamma=1.0, normalize=True, svd="exact")
    assert np.all(B @ A == 0) and np.all(np.isfinite(A))
    G = np.ones((8, 6))
    for kw, exc, word in [({"gamma": 0.0}, ValueError, "gamma"),
                          ({"gamma": -1}, ValueError, "gamma"),
                          ({"gamma": 1.0, "normalize": 1}, TypeError, "normalize"),
                          ({"gamma": 1.0, "svd": "fast"}, ValueError, "svd")]:
        with pytest.raises(exc, match=word):
            lowrank.lora_one_init(G, 2, **kw)
    with pytest.raises(ValueError, match="rank"):
        lowrank.lora_one_init(G, 7, gamma=1.0)
    with pytest.raises(ValueError, match="NaN"):
        lowrank.lora_one_init(G * np.nan, 2, gamma=1.0)
    U, S, Vh = np.linalg.svd(G, full_matrices=False)
    with pytest.raises(ValueError, match="rank"):
        lowrank.lora_one_factors(U[:, :2], S[:2], Vh[:2], 3, gamma=1.0)
    with pytest.raises(ValueError, match="disagree"):
        lowrank.lora_one_factors(U[:, :2], S[:3], Vh[:2], 2, gamma=1.0)
    assert np.array_equal(G, np.ones((8, 6)))  # inputs untouched


def test_peft_utility_from_gradients_and_from_sketches():
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from test_grad_svd import _batches, _loss, _mlp

    import lowrank.torch as lt

    def wrapped():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return peft.get_peft_model(_mlp(), peft.LoraConfig(r=4, lora_alpha=8,
                                                               target_modules=["0", "3"]))

    data = _batches()
    model = wrapped()
    grads = lt.estimate_gradients(model, data, loss_fn=_loss, progress=False)
    svds = lt.estimate_gradient_svd(model, data, 4, loss_fn=_loss, rng=0, progress=False)
    bases = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    out = lt.lora_one_init_(model, grads, gamma=8.0, svd="exact")
    sketched = wrapped()
    lt.lora_one_init_(sketched, svds, gamma=8.0)
    for n, p in model.named_parameters():  # no base offset
        if n in bases:
            assert torch.equal(p, bases[n])
    for pair, other in zip(lt.find_lora_pairs(model), lt.find_lora_pairs(sketched)):
        G = grads[pair.name.rsplit(".", 1)[0] + ".base_layer.weight"].double()
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        want = -pair.scaling / 8.0 * (U[:, :4] * S[:4]) @ Vh[:4]
        step = pair.scaling * pair.B.detach().double() @ pair.A.detach().double()
        assert torch.allclose(step, want, atol=1e-5 * float(want.abs().max()))
        approx = other.scaling * other.B.detach().double() @ other.A.detach().double()
        cos = float((approx * want).sum() / (approx.norm() * want.norm()))
        gap = float(S[3] / S[4])
        assert cos >= (0.999 if gap >= 1.05 else 0.0), (pair.name, gap, cos)
        assert math.isclose(float(approx.norm()), float(want.norm()), rel_tol=1e-2)
    assert sorted(out) == sorted(p.name for p in lt.find_lora_pairs(model))
    with pytest.raises(ValueError, match="triplets"):
        few = {k: v._replace(U=v.U[:, :2], S=v.S[:2], Vh=v.Vh[:2]) for k, v in svds.items()}
        lt.lora_one_init_(wrapped(), few, gamma=1.0)
