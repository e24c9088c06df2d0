"""Saving a LoRA-GA-initialised PEFT model: correct on the original base, resumable.

After the init, ``save_pretrained`` writes the rank-2r export, which stock PEFT loads on
the ORIGINAL base with the same outputs (also after deepcopy/pickle of the model, and
with PEFT's ``path_initial_model_for_weight_conversion``); ``load_adapter`` reads the
rank-r weights back into the same modified model and refuses a different init. With
``lowrank_allow_modified_base=True`` PEFT's own rank-r adapter is written: its config
carries ``init_lora_weights="lora_ga"``, and a reloaded adapter is then refused a second
init (its base must carry the offset), as is a reloaded export (its B is not zero), the
model left bitwise unchanged.
"""

from __future__ import annotations

import copy
import json
import pickle

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
    model.save_pretrained(tmp_path / "stock", lowrank_allow_modified_base=True)
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


def _trained(model):
    """Move every LoRA factor a little, as a few optimiser steps would."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for pair in lt.find_lora_pairs(model):
            pair.A.add_(0.05 * torch.randn(pair.A.shape, generator=gen))
            pair.B.add_(0.05 * torch.randn(pair.B.shape, generator=gen))
    return model


def _assert_same_function(got_model, want_model):
    x = _batches()[1]
    with torch.no_grad():
        got, want = got_model(x), want_model(x)
    # W_res + s B A against W + s [B, -B0][A; A0]: float32 roundings of terms of size
    # max|W| (and the offsets, which here are of that size), a few per entry and layer
    tol = 64 * torch.finfo(torch.float32).eps * float(want.abs().max())
    assert float((got - want).abs().max()) <= tol


def test_plain_save_after_init_reloads_on_the_original_base(tmp_path):
    base = _base()
    model, _, state = _initialised(base)
    _trained(model)
    snap = _snapshot(model)
    model.save_pretrained(tmp_path / "out")
    _assert_bitwise(model, snap)  # saving does not touch the model
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["init_lora_weights"] is True
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "out"))
    _assert_same_function(reloaded, model)
    # the files beside the export hold the initial factors exactly
    back = lt.load_lora_ga_init(tmp_path / "out" / "lowrank_lora_ga_init.pt")
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(back[k].A, v.A) and torch.equal(back[k].B, v.B), k


def test_the_save_survives_deepcopy_and_pickle(tmp_path):
    base = _base()
    model, _, _ = _initialised(base)
    _trained(model)
    for i, copied in enumerate([copy.deepcopy(model), pickle.loads(pickle.dumps(model))]):
        assert copied.save_pretrained.model is copied  # bound to the copy, not the original
        copied.save_pretrained(tmp_path / str(i))
        reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / str(i)))
        _assert_same_function(reloaded, model)


def test_peft_conversion_convention_gives_the_same_export(tmp_path):
    base = _base()
    model, _, _ = _initialised(base)
    model.save_pretrained(tmp_path / "init")  # PEFT's recipe: save right after the init
    before = sorted(p.name for p in (tmp_path / "init").iterdir())
    _trained(model)
    init = str(tmp_path / "init")
    model.save_pretrained(tmp_path / "out", path_initial_model_for_weight_conversion=init)
    assert sorted(p.name for p in (tmp_path / "init").iterdir()) == before
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "out"))
    _assert_same_function(reloaded, model)
    # PEFT's own conversion, from a rank-r initial adapter, agrees
    other, _, _ = _initialised(base)
    other.save_pretrained(tmp_path / "init_r", lowrank_allow_modified_base=True)
    _trained(other)
    init = str(tmp_path / "init_r")
    other.save_pretrained(tmp_path / "peft", path_initial_model_for_weight_conversion=init)
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "peft"))
    _assert_same_function(reloaded, other)


def test_merge_and_unload_gives_the_trained_function_on_the_original_layout(tmp_path):
    base = _base()
    model, _, _ = _initialised(base)
    _trained(model)
    model.save_pretrained(tmp_path / "out")
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "out"))
    merged = copy.deepcopy(model).merge_and_unload()
    assert isinstance(merged, torch.nn.Sequential)
    _assert_same_function(merged, reloaded)


def test_load_adapter_resumes_the_same_init_and_refuses_another(tmp_path):
    base = _base()
    model, _, _ = _initialised(base)
    _trained(model)
    model.save_pretrained(tmp_path / "ckpt")
    saved = _snapshot(model)
    _trained(model)  # train on past the checkpoint
    model.load_adapter(str(tmp_path / "ckpt"), "default", is_trainable=True)
    _assert_bitwise(model, saved)  # the rank-r weights are back, the base untouched
    # a model initialised from other gradients has another modified base: refused
    other = _wrapped(base)
    grads = lt.estimate_gradients(other, _batches(), loss_fn=_loss, progress=False)
    grads = {k: 2 * v.flip(0) for k, v in grads.items()}
    lt.lora_ga_init_(other, grads)
    snap = _snapshot(other)
    with pytest.raises(ValueError, match="different LoRA-GA init.*apply_lora_ga_offset_"):
        other.load_adapter(str(tmp_path / "ckpt"), "default")
    _assert_bitwise(other, snap)
    # in a new process: rebuild from the original base and the saved initial factors
    fresh = _wrapped(base)
    initial = lt.load_lora_ga_init(tmp_path / "ckpt" / "lowrank_lora_ga_init.pt")
    lt.apply_lora_ga_offset_(fresh, initial)
    fresh.load_adapter(str(tmp_path / "ckpt"), "default")
    _assert_bitwise(fresh, saved)




def test_opt_out_must_be_a_bool(tmp_path):
    model, _, _ = _initialised(_base())
    with pytest.raises(TypeError, match="lowrank_allow_modified_base"):
        model.save_pretrained(tmp_path / "x", lowrank_allow_modified_base="yes")
    assert not (tmp_path / "x").exists()


def test_save_reads_a_given_state_dict(tmp_path):
    # the Trainer hands save_pretrained the state dict to write (gathered under FSDP)
    base = _base()
    model, _, _ = _initialised(base)
    trained = _trained(copy.deepcopy(model))
    model.save_pretrained(tmp_path / "out", state_dict=trained.state_dict())
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "out"))
    _assert_same_function(reloaded, trained)
