"""estimate_gradients keeps nothing but what it returns, and returns nothing for unused targets.

Deterministic accounting (no RSS sampling): every tensor object alive after the call that
was not alive before must be one of the returned gradients, and a target the loss does not
reach gets no (zero) gradient at all, but a warning that names it.
"""

from __future__ import annotations

import copy
import gc
import warnings

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import lowrank.torch as lt  # noqa: E402


class _WithUnused(torch.nn.Module):
    """Two used layers and one (``pooler``) that the loss never reaches."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 16)
        self.fc2 = torch.nn.Linear(16, 4)
        self.pooler = torch.nn.Linear(16, 16)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _loss(model, batch):
    return model(batch).square().mean()


def _batches():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(8, 12, generator=gen) for _ in range(3)]


def _live_tensors():
    gc.collect()
    return {id(o): o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)}  # type(): no lazy attrs


def test_unused_target_gets_no_gradient_and_a_warning_by_name():
    torch.manual_seed(0)
    model = _WithUnused()
    with pytest.warns(UserWarning, match=r"no gradient reached 1 target.*'pooler\.weight'"):
        grads = lt.estimate_gradients(model, _batches(), loss_fn=_loss, progress=False)
    assert sorted(grads) == ["fc1.weight", "fc2.weight"]


def test_unused_lora_layer_of_a_peft_model_is_left_out():
    torch.manual_seed(0)
    model = peft.get_peft_model(
        _WithUnused(), peft.LoraConfig(r=2, target_modules=["fc1", "fc2", "pooler"])
    )
    with pytest.warns(UserWarning, match="pooler"):
        grads = lt.estimate_gradients(model, _batches(), loss_fn=_loss, progress=False)
    assert len(grads) == 2 and not any("pooler" in n for n in grads)


def test_only_the_returned_gradients_outlive_the_call():
    """Accumulators of all targets, hooks' buffers and .grad are gone after return."""
    torch.manual_seed(0)
    model = _WithUnused()
    batches = _batches()
    targets = ["fc1", "fc2"]
    lt.estimate_gradients(model, batches, loss_fn=_loss, targets=targets, progress=False)  # warm
    before = _live_tensors()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every target is reached: no warning
        grads = lt.estimate_gradients(model, batches, loss_fn=_loss, targets=targets,
                                      progress=False)
    new = {i: t for i, t in _live_tensors().items() if i not in before}
    returned = {id(g) for g in grads.values()}
    assert set(new) == returned
    assert all(p.grad is None for p in model.parameters())
    # the returned gradients own exactly their bytes: no larger buffer behind a view
    for g in grads.values():
        assert g.untyped_storage().nbytes() == g.numel() * g.element_size()



class _TwoOutputs(_WithUnused):
    """The pooler feeds a second output that the estimation loss leaves out."""

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h), self.pooler(h)


def _first_output_loss(model, batch):
    return model(batch)[0].square().mean()


def _lora_model(module_cls=_WithUnused, seed=0):
    torch.manual_seed(seed)
    base = module_cls()
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc1", "fc2", "pooler"])
    return base, peft.get_peft_model(copy.deepcopy(base), cfg)


def _reference_mean(model, loss_fn, names):
    """Mean gradient by plain autograd, every LoRA branch running."""
    params = dict(model.named_parameters())
    total = None
    for batch in _batches():
        g = torch.autograd.grad(loss_fn(model, batch), [params[n] for n in names])
        total = list(g) if total is None else [t + d for t, d in zip(total, g, strict=True)]
    return {n: t / len(_batches()) for n, t in zip(names, total, strict=True)}


def test_zero_lora_branches_are_bypassed_and_the_gradients_are_unchanged():
    _, model = _lora_model()
    fc2 = model.base_model.model.fc2
    with torch.no_grad():  # a trained-looking fc2 adapter: its branch is part of the function
        fc2.lora_B["default"].weight.normal_(generator=torch.Generator().manual_seed(1))
    names = ["base_model.model.fc1.base_layer.weight", "base_model.model.fc2.base_layer.weight"]
    for n in names:
        dict(model.named_parameters())[n].requires_grad_(True)
    want = _reference_mean(model, _loss, names)
    for n in names:
        dict(model.named_parameters())[n].requires_grad_(False)
    calls = {"fc1": 0, "fc2": 0}
    for key in calls:
        layer = getattr(model.base_model.model, key).lora_A["default"]
        layer.register_forward_hook(lambda *_, k=key: calls.__setitem__(k, calls[k] + 1))
    with pytest.warns(UserWarning, match="pooler"):
        grads = lt.estimate_gradients(model, _batches(), loss_fn=_loss, progress=False)
    # B = 0 on fc1: its branch adds exact zeros, so skipping it changes no bit; fc2's runs
    assert calls == {"fc1": 0, "fc2": 3}
    for n in names:
        assert torch.equal(grads[n], want[n]), n
    model(_batches()[0])
    assert calls["fc1"] == 1  # the bypass ends with the call


def test_init_leaves_a_layer_without_gradient_alone_and_the_export_reloads(tmp_path):
    base, model = _lora_model(_TwoOutputs)
    with pytest.warns(UserWarning, match="pooler"):
        grads = lt.estimate_gradients(model, _batches(), loss_fn=_first_output_loss,
                                      progress=False)
    pooler = model.base_model.model.pooler
    before = {k: v.clone() for k, v in pooler.state_dict().items()}
    x = _batches()[0]
    with torch.no_grad():
        out0 = model(x)
    with pytest.warns(UserWarning, match=r"no gradient for 1 LoRA layer.*pooler"):
        state = lt.lora_ga_init_(model, grads, check_inputs=x)
    assert sorted(state) == ["base_model.model.fc1.default", "base_model.model.fc2.default"]
    for k, v in pooler.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        out1 = model(x)
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(out0, out1, strict=True):  # the function is kept (rounding of W - s B0 A0)
        assert float((a - b).abs().max()) <= 64 * eps * max(1.0, float(a.abs().max()))
    lt.export_lora_adapter(model, state, tmp_path / "export")
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "export"))
    with torch.no_grad():
        out2 = reloaded(x)
    for a, b in zip(out1, out2, strict=True):
        assert float((a - b).abs().max()) <= 64 * eps * max(1.0, float(a.abs().max()))
    with pytest.raises(ValueError, match="already initialised"):
        lt.lora_ga_init_(model, grads)  # the initialised layers refuse a second init


def _allocator_peak(fn):
    """``fn()``, and the peak and final bytes the torch CPU allocator held above its start.

    The profiler's memory events are the allocator's own report of every allocation and
    free (exact and deterministic, unlike resident-set sampling).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return out, peak, live


def _nbytes(grads):
    return sum(g.numel() * g.element_size() for g in grads.values())


def test_peak_is_the_accumulators_plus_activations_only():
    """No gradient-sized temporary: one extra gradient (or 2x the gradients) fails."""
    widths, tokens = (256, 512, 512, 256), 4
    torch.manual_seed(0)
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    model = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1], torch.nn.Tanh(), layers[2])
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(tokens, widths[0], generator=gen) for _ in range(4)]
    lt.estimate_gradients(model, batches[:2], loss_fn=_loss, progress=False)  # warm-up
    grads, peak, end = _allocator_peak(
        lambda: lt.estimate_gradients(model, batches, loss_fn=_loss, progress=False)
    )
    total = _nbytes(grads)
    smallest = min(g.numel() * g.element_size() for g in grads.values())
    # activations, their gradients and the loss: a few (tokens x width) float32 blocks
    activations = 16 * tokens * max(widths) * 4
    assert activations < smallest / 2
    assert end == total  # only the returned gradients stay allocated
    assert total <= peak <= total + activations, (peak - total, activations)


def test_peak_below_peft_on_minilm():
    """All-MiniLM-L6-v2, every encoder Linear: PEFT's estimation holds one layer's
    gradient on top of every accumulated one while a backward forms the next; ours does
    not, so its peak is lower by at least half the largest gradient."""
    import _hf_model as hf

    base = hf.load("base")
    tok = hf.tokenizer()
    batches = [dict(tok(hf.SENTENCES[i : i + 4], return_tensors="pt", padding=True))
               for i in (0, 4, 0)]
    names = r".*encoder\..*\.(query|key|value|dense)"  # every Linear but the unused pooler

    def loss(m, b):
        return m(**b).last_hidden_state.square().mean()

    loss(base, batches[0]).backward()  # autograd's start-up, outside both measurements
    base.zero_grad(set_to_none=True)
    ours = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=8, target_modules=names))
    theirs = copy.deepcopy(base)
    grads, peak, end = _allocator_peak(
        lambda: lt.estimate_gradients(ours, batches, loss_fn=loss, progress=False)
    )
    cfg = peft.LoraConfig(r=8, target_modules=names, init_lora_weights="lora_ga",
                          lora_ga_config=peft.LoraGAConfig())

    def train_step():
        for b in batches:
            loss(theirs, b).backward()

    def run_peft():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook")  # PEFT's hooks
            peft.preprocess_loraga(theirs, cfg, train_step)
        return {n: m._peft_loraga_grad for n, m in theirs.named_modules()
                if hasattr(m, "_peft_loraga_grad")}

    their_grads, their_peak, their_end = _allocator_peak(run_peft)
    total = _nbytes(grads)
    assert len(grads) == len(their_grads) == 36 and total == _nbytes(their_grads)
    assert end == their_end == total  # only the gradients stay allocated, in both
    largest = max(g.numel() * g.element_size() for g in grads.values())
    assert peak <= their_peak - largest / 2, (peak / 2**20, their_peak / 2**20)
