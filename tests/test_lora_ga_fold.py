"""estimate_gradients sums linear layers' weight gradients straight into the accumulators.

Every case is checked against plain autograd (the mean of ``torch.autograd.grad`` over the
batches): 3-D inputs, transformers' ``Conv1D`` layout, a weight also used outside its
layer, two layers sharing one weight, reentrant checkpointing, autocast, bf16 weights, a
float64 accumulator; and the layers' forwards are put back afterwards, also on errors.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import lowrank.torch as lt  # noqa: E402


def _batches(shape, n=3, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen).to(dtype) for _ in range(n)]


def _loss(model, x):
    return model(x).square().mean()


def _reference(model, batches, params, loss_fn=_loss):
    """Mean gradient by plain autograd, in float64."""
    total = None
    for x in batches:
        g = torch.autograd.grad(loss_fn(model, x), params)
        g = [t.double() for t in g]
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
    return [t / len(batches) for t in total]


def _close(got, want, rel=1e-5):
    scale = float(want.abs().max())
    assert got.shape == want.shape
    assert float((got.double() - want).abs().max()) <= rel * scale, float(
        (got.double() - want).abs().max()
    )


def _no_instance_forward(model):
    return all("forward" not in vars(m) for m in model.modules())


class _MLP(torch.nn.Module):
    def __init__(self, d_in=6, h=10, d_out=3):
        super().__init__()
        self.fc1 = torch.nn.Linear(d_in, h)
        self.fc2 = torch.nn.Linear(h, d_out, bias=False)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_three_dimensional_inputs_match_autograd():
    torch.manual_seed(0)
    model = _MLP()
    batches = _batches((4, 5, 6))  # (batch, sequence, features)
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss, progress=False)
    want = _reference(model, batches, [model.fc1.weight, model.fc2.weight])
    _close(grads["fc1.weight"], want[0])
    _close(grads["fc2.weight"], want[1])
    assert _no_instance_forward(model)


def test_conv1d_layout_matches_autograd():
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D

    class GPTish(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = conv1d(10, 6)  # nf=10 outputs, nx=6 inputs: weight (6, 10)
            self.c_proj = conv1d(3, 10)

        def forward(self, x):
            return self.c_proj(torch.tanh(self.c_fc(x)))

    torch.manual_seed(0)
    model = GPTish()
    batches = _batches((2, 7, 6))
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss, targets=["c_fc", "c_proj"],
                                  progress=False)
    want = _reference(model, batches, [model.c_fc.weight, model.c_proj.weight])
    assert grads["c_fc.weight"].shape == (6, 10)  # the parameter's own (in, out) layout
    _close(grads["c_fc.weight"], want[0])
    _close(grads["c_proj.weight"], want[1])


class _Reused(torch.nn.Module):
    """``fc``'s weight also feeds a functional use; ``tied_b`` shares ``tied_a``'s weight."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 6)
        self.tied_a = torch.nn.Linear(6, 6, bias=False)
        self.tied_b = torch.nn.Linear(6, 6, bias=False)
        self.tied_b.weight = self.tied_a.weight

    def forward(self, x):
        h = torch.tanh(self.fc(x)) + torch.nn.functional.linear(x, self.fc.weight).sin()
        return self.tied_b(torch.tanh(self.tied_a(h)))


def test_every_use_of_an_explicit_target_is_summed():
    torch.manual_seed(0)
    model = _Reused()
    batches = _batches((5, 6))
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss,
                                  targets=["fc.weight", "tied_a.weight"], progress=False)
    want = _reference(model, batches, [model.fc.weight, model.tied_a.weight])
    _close(grads["fc.weight"], want[0])
    _close(grads["tied_a.weight"], want[1])


def test_reentrant_checkpointing_matches_autograd():
    class Ckpt(_MLP):
        def forward(self, x):
            h = torch.utils.checkpoint.checkpoint(self.fc1, x, use_reentrant=True)
            return self.fc2(torch.tanh(h))

    torch.manual_seed(0)
    model = Ckpt()
    batches = [x.requires_grad_(True) for x in _batches((4, 6))]  # reentrant: inputs need grad
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss, progress=False)
    plain = _MLP()  # reentrant checkpoints refuse torch.autograd.grad: same weights, no ckpt
    plain.load_state_dict(model.state_dict())
    want = _reference(plain, batches, [plain.fc1.weight, plain.fc2.weight])
    _close(grads["fc1.weight"], want[0])
    _close(grads["fc2.weight"], want[1])


def test_autocast_calls_match_autograd_under_the_same_autocast():
    torch.manual_seed(0)
    model = _MLP()
    batches = _batches((8, 6))

    def loss(m, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(x).float().square().mean()

    grads = lt.estimate_gradients(model, batches, loss_fn=loss, progress=False)
    want = _reference(model, batches, [model.fc1.weight, model.fc2.weight], loss_fn=loss)
    _close(grads["fc1.weight"], want[0], rel=1e-5)  # same bf16 products, summed in fp32
    _close(grads["fc2.weight"], want[1], rel=1e-5)


def test_bf16_weights_and_float64_accumulators():
    torch.manual_seed(0)
    model = _MLP().to(torch.bfloat16)
    batches = _batches((8, 6), dtype=torch.bfloat16)
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss, progress=False)
    want = _reference(model, batches, [model.fc1.weight, model.fc2.weight])
    assert all(g.dtype == torch.float32 for g in grads.values())
    # each batch's product is rounded to bf16 as autograd's .grad is; the sum is fp32
    _close(grads["fc1.weight"], want[0], rel=2 * 2.0**-8)
    model = _MLP()
    batches = _batches((8, 6))
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss, dtype=torch.float64,
                                  progress=False)
    want = _reference(model, batches, [model.fc1.weight, model.fc2.weight])
    assert all(g.dtype == torch.float64 for g in grads.values())
    _close(grads["fc2.weight"], want[1])


def test_forwards_are_restored_after_an_error_and_instance_forwards_kept():
    torch.manual_seed(0)
    model = _MLP()
    own = model.fc2.forward  # a bound method set on the instance: must survive untouched
    model.fc2.forward = own
    calls = []

    def loss(m, x):
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("boom")
        return _loss(m, x)

    with pytest.raises(KeyError, match="boom"):
        lt.estimate_gradients(model, _batches((4, 6)), loss_fn=loss, progress=False)
    assert "forward" not in vars(model.fc1) and vars(model.fc2)["forward"] is own
    batches = _batches((4, 6))
    grads = lt.estimate_gradients(model, batches, loss_fn=_loss, progress=False)
    want = _reference(model, batches, [model.fc1.weight, model.fc2.weight])
    _close(grads["fc1.weight"], want[0])
    _close(grads["fc2.weight"], want[1])  # through autograd and the hook, not the fold
    assert all(p.grad is None for p in model.parameters())
