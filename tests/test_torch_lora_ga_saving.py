"""A LoRA-GA adapter stays recognisable after PEFT's save_pretrained and a reload.

The init is recorded as ``init_lora_weights="lora_ga"`` in the adapter's PEFT config,
which ``save_pretrained`` writes; a reloaded adapter is then refused a second init (its
base must carry the offset), as is a reloaded stock-PEFT export (its B is not zero), and
the model is left bitwise unchanged.
"""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import lowrank.torch as lt  # noqa: E402


def _base(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))


def _wrapped(base):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, target_modules=["0", "2"]))


def _batches():
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(8, 12, generator=gen) for _ in range(2)]


def _loss(model, x):
    return model(x).square().mean()


def _initialised(base):
    model = _wrapped(base)
    grads = lt.estimate_gradients(model, _batches(), loss_fn=_loss, progress=False)
    state = lt.lora_ga_init_(model, grads, check_inputs=_batches()[0])
    return model, grads, state


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bitwise(model, snap):
    now = model.state_dict()
    assert now.keys() == snap.keys()
    for k, v in snap.items():
        assert torch.equal(now[k], v), k


def test_saved_config_carries_the_mark_and_a_reload_is_refused(tmp_path):
    base = _base()
    model, grads, state = _initialised(base)
    assert model.peft_config["default"].init_lora_weights == "lora_ga"
    model.save_pretrained(tmp_path / "stock")
    saved = json.loads((tmp_path / "stock" / "adapter_config.json").read_text())
    assert saved["init_lora_weights"] == "lora_ga"
    # stock PEFT reloads it (onto the initialised base, where the rank-r adapter fits)
    residual = copy.deepcopy(base)  # the original base with the residual weights W - s B0 A0
    with torch.no_grad():
        for i in (0, 2):
            residual[i].weight.copy_(model.base_model.model[i].base_layer.weight)
    reloaded = peft.PeftModel.from_pretrained(residual, str(tmp_path / "stock"))
    assert reloaded.peft_config["default"].init_lora_weights == "lora_ga"
    x = _batches()[0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    snap = _snapshot(reloaded)
    with pytest.raises(ValueError, match=r"already initialised by LoRA-GA.*init_lora_weights"):
        lt.lora_ga_init_(reloaded, grads)
    _assert_bitwise(reloaded, snap)
    with pytest.raises(ValueError, match="already initialised by LoRA-GA"):
        lt.apply_lora_ga_offset_(reloaded, state)
    _assert_bitwise(reloaded, snap)


def test_a_reloaded_export_is_refused_by_its_nonzero_b(tmp_path):
    base = _base()
    model, grads, state = _initialised(base)
    lt.export_lora_adapter(model, state, tmp_path / "export")
    saved = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert saved["init_lora_weights"] is True  # a plain LoRA for the original base
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "export"))
    snap = _snapshot(reloaded)
    with pytest.raises(ValueError, match="nonzero lora_B"):
        lt.lora_ga_init_(reloaded, grads)
    _assert_bitwise(reloaded, snap)


def test_a_fresh_adapter_gets_the_mark_only_on_success():
    base = _base()
    model = _wrapped(base)
    grads = lt.estimate_gradients(model, _batches(), loss_fn=_loss, progress=False)
    bad = {k: v * float("nan") for k, v in grads.items()}
    with pytest.raises(ValueError, match="NaN"):
        lt.lora_ga_init_(model, bad)
    assert model.peft_config["default"].init_lora_weights is True  # refused: no mark
    lt.lora_ga_init_(model, grads)
    assert model.peft_config["default"].init_lora_weights == "lora_ga"
