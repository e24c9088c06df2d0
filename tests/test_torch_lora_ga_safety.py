"""lora_ga_init_ never corrupts a model: all-or-nothing writes, refused re-inits, ties,
precision checks, unsupported layers, and estimate_gradients leaving the model as it was."""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import lowrank.torch as lt  # noqa: E402

D_IN, H, D_OUT, R = 12, 24, 10, 2


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(D_IN, H)
        self.fc2 = torch.nn.Linear(H, D_OUT)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class TiedLM(torch.nn.Module):
    """Embedding -> hidden Linear -> decoder tied to the embedding (a tiny masked LM)."""

    def __init__(self, vocab=16, d=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.hidden = torch.nn.Linear(d, d)
        self.decoder = torch.nn.Linear(d, vocab, bias=False)
        self.decoder.weight = self.emb.weight

    def forward(self, ids):
        return self.decoder(torch.tanh(self.hidden(self.emb(ids))))


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g), torch.randn(n, D_OUT, generator=g)


def _mse(model, batch):
    return torch.nn.functional.mse_loss(model(batch[0]), batch[1])


def _peft(model, seed=0, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = {"r": R, "lora_alpha": 4, "target_modules": ["fc1", "fc2"], **cfg}
        return peft.get_peft_model(model, peft.LoraConfig(**cfg))


def _model_and_grads(**cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _peft(MLP(), **cfg)
    X, Y = _data()
    return model, lt.estimate_gradients(model, [(X, Y)], loss_fn=_mse, progress=False), X


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_unchanged(model, snap):
    state = model.state_dict()
    assert state.keys() == snap.keys()
    for k, v in snap.items():
        assert torch.equal(state[k], v), k


def _key(name):
    return f"base_model.model.{name}.base_layer.weight"


# --- all or nothing -------------------------------------------------------------------------


def test_nan_gradient_in_a_later_group_leaves_every_layer_unchanged():
    model, grads, X = _model_and_grads()
    grads[_key("fc2")] = grads[_key("fc2")].clone()
    grads[_key("fc2")][0, 0] = float("nan")
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="NaN"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)
    grads[_key("fc2")][0, 0] = 0.0
    lt.lora_ga_init_(model, grads, check_inputs=X)  # a retry after the fix works once


def test_rank_too_large_in_a_later_group_is_refused_before_any_write():
    model, grads, _ = _model_and_grads(rank_pattern={"fc2": 6})  # 2 * 6 > min(10, 24)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"fc2.*2r <= min\(out, in\) = 10"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)


def test_failure_after_the_first_write_restores_every_tensor(monkeypatch):
    import lowrank.torch._lora_ga_init as init_mod

    model, grads, X = _model_and_grads()
    snap = _snapshot(model)
    real, calls = init_mod.subtract_offset_, []

    def failing_second(pair, A0, B0):
        calls.append(pair.name)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in the second layer")
        return real(pair, A0, B0)

    monkeypatch.setattr(init_mod, "subtract_offset_", failing_second)
    with pytest.raises(RuntimeError, match="simulated"):
        lt.lora_ga_init_(model, grads)
    assert len(calls) == 2  # the first layer had been written
    assert_bitwise_unchanged(model, snap)
    monkeypatch.setattr(init_mod, "subtract_offset_", real)
    lt.lora_ga_init_(model, grads, check_inputs=X)  # not marked: a clean retry works


def test_failed_output_check_restores_the_model(monkeypatch):
    """Every layer check passes; the output check (made to see a shifted "before")
    fails after all layers were written."""
    import lowrank.torch._lora_ga_init as init_mod

    model, grads, X = _model_and_grads()
    snap = _snapshot(model)
    real = init_mod.model_outputs_close

    def shifted(model_, inputs, before, *args):
        moved = before if before is None else (before[0] + 1.0, before[1])
        return real(model_, inputs, moved, *args)

    monkeypatch.setattr(init_mod, "model_outputs_close", shifted)
    with pytest.raises(ValueError, match="outputs changed"):
        lt.lora_ga_init_(model, grads, check_inputs=X)
    assert_bitwise_unchanged(model, snap)


# --- idempotence ----------------------------------------------------------------------------


def test_second_init_is_refused_and_changes_nothing():
    model, grads, X = _model_and_grads()
    state = lt.lora_ga_init_(model, grads, check_inputs=X)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="already initialised by LoRA-GA"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)
    with pytest.raises(ValueError, match="already initialised by LoRA-GA"):
        lt.apply_lora_ga_offset_(model, state)  # applying the saved offset twice
    assert_bitwise_unchanged(model, snap)
    marked = copy.deepcopy(model)  # the mark travels with copies of the model
    with pytest.raises(ValueError, match="already initialised"):
        lt.lora_ga_init_(marked, grads)


def test_init_after_merge_and_on_an_inactive_adapter_is_refused():
    model, grads, X = _model_and_grads()
    lt.lora_ga_init_(model, grads)
    model.merge_adapter()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="already initialised"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)
    model.unmerge_adapter()
    model.add_adapter("other", peft.LoraConfig(r=R, lora_alpha=4, target_modules=["fc1", "fc2"]))
    model.set_adapter("other")
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="already initialised"):
        lt.lora_ga_init_(model, grads, adapter="default")
    assert_bitwise_unchanged(model, snap)


def test_merged_adapter_that_was_never_initialised_is_refused():
    model, grads, _ = _model_and_grads()
    model.merge_adapter()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="merged"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)


# --- tied and shared weights ----------------------------------------------------------------


def _tied_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = TiedLM()
    ids = torch.randint(0, 16, (6, 5), generator=torch.Generator().manual_seed(0))
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["hidden", "decoder"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = peft.get_peft_model(copy.deepcopy(base), cfg)
    return base, model, ids


def _lm_loss(model, ids):
    return torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())


def test_weight_tied_to_a_non_lora_module_is_refused_by_name():
    _, model, ids = _tied_model()
    grads = lt.estimate_gradients(model, [ids], loss_fn=_lm_loss, progress=False)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"decoder.*tied.*emb\.weight.*untie=True"):
        lt.lora_ga_init_(model, grads, check_inputs=ids)
    assert_bitwise_unchanged(model, snap)


def test_per_use_gradient_of_a_tied_lora_weight():
    """The decoder's gradient is the one through the decoder alone, not the sum with the
    embedding's use: autograd on an untied copy is the oracle."""
    base, model, ids = _tied_model()
    grads = lt.estimate_gradients(model, [ids], loss_fn=_lm_loss, progress=False)
    untied = copy.deepcopy(base)
    untied.decoder.weight = torch.nn.Parameter(base.emb.weight.detach().clone())
    ref = torch.autograd.grad(_lm_loss(untied, ids), untied.decoder.weight)[0]
    got = grads["base_model.model.decoder.base_layer.weight"]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    tied_sum = torch.autograd.grad(_lm_loss(base, ids), base.emb.weight)[0]
    assert float((tied_sum - ref).abs().max()) > 1e-3  # the two differ: the test can fail
    emb = model.base_model.model.emb.weight
    assert model.base_model.model.decoder.base_layer.weight is emb  # tie back in place


def test_untie_true_gives_the_layer_its_own_copy():
    _, model, ids = _tied_model()
    grads = lt.estimate_gradients(model, [ids], loss_fn=_lm_loss, progress=False)
    emb_before = model.base_model.model.emb.weight.detach().clone()
    lt.lora_ga_init_(model, grads, check_inputs=ids, untie=True)
    inner = model.base_model.model
    assert torch.equal(inner.emb.weight, emb_before)  # the embeddings did not move
    assert inner.decoder.base_layer.weight is not inner.emb.weight


def test_two_lora_layers_sharing_one_weight_are_refused():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(8, 8, bias=False)
            self.b = torch.nn.Linear(8, 8, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    model = _peft(Shared(), target_modules=["a", "b"])
    X = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    grads = lt.estimate_gradients(model, [X], loss_fn=lambda m, x: m(x).square().mean(),
                                  progress=False)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="tied"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)


# --- unsupported layers and options ---------------------------------------------------------


def test_embedding_lora_is_refused_by_name():
    class Emb(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 6)
            self.out = torch.nn.Linear(6, 4)

        def forward(self, ids):
            return self.out(self.emb(ids))

    model = _peft(Emb(), target_modules=["emb", "out"])
    ids = torch.arange(6).reshape(2, 3)
    grads = lt.estimate_gradients(model, [ids], loss_fn=lambda m, x: m(x).square().mean(),
                                  targets=["base_model.model.out.base_layer.weight"],
                                  progress=False)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"emb\.default.*embedding"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)


def test_non_floating_base_weight_is_refused():
    lin = torch.nn.Linear(8, 6)
    lin.weight = torch.nn.Parameter(torch.ones(6, 8, dtype=torch.int8), requires_grad=False)
    with pytest.raises(TypeError, match="not floating.*int8"):
        lt.estimate_gradients(lin, [torch.ones(2, 8)], loss_fn=lambda m, x: m(x).sum(),
                              targets=["weight"], progress=False)
    model, grads, _ = _model_and_grads()
    layer = model.base_model.model.fc1
    layer.base_layer.weight = torch.nn.Parameter(
        layer.base_layer.weight.detach().to(torch.int8), requires_grad=False
    )
    snap = _snapshot(model)
    with pytest.raises(TypeError, match=r"fc1.*quantized or non-floating.*int8"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)


def test_base_layer_without_weight_tensor_is_refused_by_name():
    """A custom base layer holding packed data and no weight tensor: a clear refusal."""
    model, grads, _ = _model_and_grads()
    layer = model.base_model.model.fc1
    base = layer.base_layer
    packed = base.weight.detach().clone()
    del base.weight
    base.packed = packed  # what a custom quantized module might hold instead
    snap = _snapshot(model)
    with pytest.raises(TypeError, match=r"fc1.*no tensor base weight.*lora_ga_init_residual_"):
        lt.lora_ga_init_(model, grads)
    assert_bitwise_unchanged(model, snap)


def test_unknown_option_is_refused_by_name_and_info_is_returned():
    model, grads, X = _model_and_grads()
    snap = _snapshot(model)
    with pytest.raises(TypeError, match="unknown option.*'sclae'"):
        lt.lora_ga_init_(model, grads, sclae="unit")
    assert_bitwise_unchanged(model, snap)
    state, info = lt.lora_ga_init_(model, grads, return_info=True, svd="exact")
    assert set(info) == set(state)
    for name, item in info.items():
        assert isinstance(item, lt.LoraGALayerInfo)
        G = grads[_key(name.split(".")[-2])].double()
        S = torch.linalg.svdvals(G)
        r = R
        torch.testing.assert_close(item.S.double(), S[: 2 * r + 1], rtol=1e-4, atol=1e-7)
        assert item.gap_2r == pytest.approx(float(S[2 * r - 1] / S[2 * r]), rel=1e-4)
        assert item.gap_r == pytest.approx(float(S[r - 1] / S[r]), rel=1e-4)
        energy = float((S[: 2 * r] ** 2).sum() / (S**2).sum())
        assert item.energy_2r == pytest.approx(energy, rel=1e-5)
        pair = next(p for p in lt.find_lora_pairs(model) if p.name == name)
        offset = pair.scaling * (pair.B @ pair.A).detach()
        w_max = float((pair.weight.detach() + offset).abs().max())  # the original W
        assert item.offset_ratio == pytest.approx(float(offset.abs().max()) / w_max, rel=1e-3)


# --- precision ------------------------------------------------------------------------------


def _bf16_model():
    model, grads, X = _model_and_grads()
    return model.to(torch.bfloat16), grads, X.bfloat16()


def test_bf16_output_check_is_relative_to_the_models_own_rounding():
    """A change of the size a second offset makes (10 % of a weight) passed the old 0.5
    absolute bf16 tolerance; it is far above bf16's own rounding and must raise."""
    from lowrank.torch._lora_ga_targets import model_outputs_close

    model, _, X = _bf16_model()
    before = model_outputs_close(model, X, None)
    model_outputs_close(model, X, before)  # unchanged: passes
    snap = _snapshot(model)
    with torch.no_grad():
        w = model.base_model.model.fc1.base_layer.weight
        w.add_(0.1 * w)
    with torch.no_grad():
        assert float((model(X).float() - before[0].float()).abs().max()) < 0.5
    with pytest.raises(ValueError, match="own torch.bfloat16 rounding"):
        model_outputs_close(model, X, before)
    with torch.no_grad():
        w.copy_(snap["base_model.model.fc1.base_layer.weight"])
    assert_bitwise_unchanged(model, snap)  # the float32 check put every tensor back
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_bf16_default_clips_and_passes_the_check_unclipped_warns():
    model, grads, X = _bf16_model()
    unclipped = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = lt.lora_ga_init_(model, grads, check_inputs=X, return_info=True)
    assert max(i.offset_ratio for i in info.values()) <= 0.5 + 1e-6
    with pytest.warns(UserWarning, match="exceeds its low-precision base weight"):
        _, info_big = lt.lora_ga_init_(
            unclipped, grads, return_info=True, norm_clip=False, stable_gamma=0.05
        )
    assert max(i.offset_ratio for i in info_big.values()) > 1
    with pytest.raises(ValueError, match="norm_clip"):
        lt.lora_ga_init_(copy.deepcopy(model), grads, norm_clip=-1.0)


# --- estimate_gradients leaves the model as it was ------------------------------------------


def test_estimate_gradients_restores_grads_flags_and_modes():
    model, _, _ = _model_and_grads()
    inner = model.base_model.model
    target = inner.fc1.base_layer.weight
    old_grad = torch.full_like(target, 3.0)
    target.grad = old_grad
    inner.fc1.lora_A["default"].weight.requires_grad_(False)
    model.train()
    inner.fc2.eval()  # mixed modes must come back as they were
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    X, Y = _data()
    lt.estimate_gradients(model, [(X, Y)], loss_fn=_mse, progress=False)
    assert target.grad is old_grad and torch.equal(old_grad, torch.full_like(target, 3.0))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes


@pytest.mark.parametrize("name", ["untie", "return_info"])
def test_bool_options_name_themselves(name):
    model = _peft(MLP())
    snap = _snapshot(model)
    with pytest.raises(TypeError, match=rf"`{name}` must be a bool; got 'yes'"):
        lt.lora_ga_init_(model, {}, **{name: "yes"})
    assert_bitwise_unchanged(model, snap)
