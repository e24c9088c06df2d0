"""estimate_gradient_svd on the real all-MiniLM-L6-v2 (BERT) with PEFT LoRA layers, against
the exact path (estimate_gradients + exact SVD) on the same batches."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

import _hf_model as hf  # noqa: E402
from test_grad_svd import _cos, _max_sine, lora_ga_step  # noqa: E402

import lowrank.torch as lt  # noqa: E402

R = 4
ENCODER = ["query", "intermediate.dense"]  # 12 layers: 384 x 384 and 1536 x 384


@pytest.fixture(scope="module")
def setup():
    base = hf.load("masked_lm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
            r=R, lora_alpha=8, target_modules=ENCODER))
    batches = hf.mlm_batches(hf.tokenizer(), n_batches=3, size=8)
    exact = lt.estimate_gradients(model, batches, progress=False)
    return model, batches, exact


def test_minilm_subspaces_and_first_step_against_exact(setup):
    model, batches, exact = setup
    svd = lt.estimate_gradient_svd(model, batches, 2 * R, rng=0, progress=False)
    assert sorted(svd) == sorted(exact) and len(svd) == 12
    report = []
    for name, G in exact.items():
        res = svd[name]
        Gd = G.double()
        U0, s0, Vh0 = torch.linalg.svd(Gd, full_matrices=False)
        S, k = res.S.double(), 2 * R
        # float32 rounding of the two accumulations (different summation orders)
        noise = 64 * float(torch.finfo(torch.float32).eps) * float(Gd.norm()) * math.sqrt(256)
        assert torch.all(S <= s0[:k] + noise)
        Ud, Vd = res.U.double(), res.Vh.double().T
        resid = max(float(torch.linalg.matrix_norm(Gd @ Vd - Ud * S, 2)),
                    float(torch.linalg.matrix_norm(Gd.T @ Ud - Vd * S, 2)))
        delta = float(S[-1] - s0[k])
        bound = (resid + noise) / delta if delta > 0 else math.inf
        sines = max(_max_sine(U0[:, :k], res.U), _max_sine(Vh0[:k].T, res.Vh.T))
        assert sines <= min(1.0, bound), name
        gap = float(s0[k - 1] / s0[k])
        cos = _cos(lora_ga_step(G, U0, Vh0, R), lora_ga_step(G, res.U, res.Vh, R))
        report.append((name, gap, cos, sines))
        if gap >= 1.05:
            assert cos >= 0.999, (name, gap, cos)
    print("\nlayer, gap_2r, 1 - first-step cosine, top-2r sine:")
    for row in report:
        print("  %-76s %.4f %.2e %.2e" % (row[0], row[1], 1 - row[2], row[3]))
    assert any(gap >= 1.05 for _, gap, _, _ in report)  # the bound above was exercised


def test_minilm_reentrant_checkpointing_same_estimate(setup):
    model, batches, _ = setup
    plain = lt.estimate_gradient_svd(model, batches, 2 * R, n_sweeps=2, rng=1, progress=False)
    ckpt = copy.deepcopy(model)
    ckpt.base_model.model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": True})
    ckpt.train()  # transformers checkpoints only in train mode (dropout is 0 here)
    got = lt.estimate_gradient_svd(ckpt, batches, 2 * R, n_sweeps=2, rng=1, progress=False)
    assert sorted(got) == sorted(plain)
    for name, res in plain.items():
        tol = 1e-4 * float(res.S[0])
        assert torch.allclose(got[name].S, res.S, rtol=0, atol=tol), name
    assert all(p.grad is None for p in ckpt.parameters())
