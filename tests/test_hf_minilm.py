"""LoRA-GA on a real Hugging Face model: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) with its
masked-LM head, whose decoder is tied to the word embeddings. Estimation against PEFT's own,
init with the output check, and every corruption case refused with the model bitwise
unchanged."""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

import _hf_model as hf  # noqa: E402

import lowrank.torch as lt  # noqa: E402

ENCODER = ["query", "intermediate.dense"]  # 12 layers in two shape groups (CI time)


def _peft(base, targets=ENCODER, **cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, **cfg)
        return peft.get_peft_model(copy.deepcopy(base), config)


@pytest.fixture(scope="session")
def base():
    return hf.load("masked_lm")


@pytest.fixture(scope="session")
def batches():
    return hf.mlm_batches(hf.tokenizer(), n_batches=2, size=4)


@pytest.fixture(scope="session")
def check(batches):
    return {k: v for k, v in batches[0].items() if k != "labels"}


@pytest.fixture(scope="session")
def encoder(base, batches):
    """An un-initialised PEFT model on the encoder and its estimated gradients."""
    model = _peft(base)
    return model, lt.estimate_gradients(model, batches, progress=False)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bitwise(model, snap):
    state = model.state_dict()
    assert state.keys() == snap.keys()
    for k, v in snap.items():
        assert torch.equal(state[k], v), k


def _logits(model, check):
    with torch.no_grad():
        return model(**check).logits


def test_estimation_matches_peft_and_leaves_the_model_alone(base, batches, encoder):
    model, grads = encoder
    assert len(grads) == 12
    assert all(p.grad is None for p in model.parameters())
    theirs = copy.deepcopy(base)
    cfg = peft.LoraConfig(r=4, target_modules=ENCODER, init_lora_weights="lora_ga",
                          lora_ga_config=peft.LoraGAConfig())

    def train_step():
        for b in batches:
            theirs(**b).loss.backward()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook")  # PEFT's own hooks
        peft.preprocess_loraga(theirs, cfg, train_step)
    modules = dict(theirs.named_modules())
    for key, g in grads.items():
        name = key.removeprefix("base_model.model.").removesuffix(".base_layer.weight")
        ref = modules[name]._peft_loraga_grad
        scale = float(ref.abs().max())
        torch.testing.assert_close(g, ref, rtol=0, atol=64 * torch.finfo(g.dtype).eps * scale)


def test_init_keeps_outputs_and_reports_gaps(encoder, check):
    model, grads = copy.deepcopy(encoder[0]), encoder[1]
    logits = _logits(model, check)
    w0 = {p.name: p.weight.detach().clone() for p in lt.find_lora_pairs(model)}
    state, info = lt.lora_ga_init_(model, grads, check_inputs=check, return_info=True)
    scale = float(logits.abs().max())
    eps = torch.finfo(torch.float32).eps
    growth = 1 + max(i.offset_ratio for i in info.values())
    assert float((_logits(model, check) - logits).abs().max()) <= 64 * eps * scale * growth
    for pair in lt.find_lora_pairs(model):
        w = pair.weight.detach() + pair.scaling * (pair.B @ pair.A).detach()
        # one rounding of W_res and of the float32 product: eps of the larger entries
        tol = 4 * eps * float(w0[pair.name].abs().max()) * (1 + info[pair.name].offset_ratio)
        assert float((w - w0[pair.name]).abs().max()) <= tol, pair.name
        item = info[pair.name]
        assert item.gap_2r >= 1.0 and item.gap_r >= 1.0  # sorted singular values
        assert 0.0 < item.energy_2r < 1.0
    assert set(state) == set(info) and len(state) == 12


def test_tied_decoder_is_refused_by_name_and_untie_works(base, batches, check):
    model = _peft(base, targets=["query", "decoder"])
    grads = lt.estimate_gradients(model, batches, progress=False)
    inner = model.base_model.model
    emb = inner.bert.embeddings.word_embeddings.weight
    assert inner.cls.predictions.decoder.base_layer.weight is emb
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"decoder.*tied.*word_embeddings\.weight"):
        lt.lora_ga_init_(model, grads, check_inputs=check)
    _assert_bitwise(model, snap)
    emb_before = emb.detach().clone()
    logits = _logits(model, check)
    _, info = lt.lora_ga_init_(model, grads, check_inputs=check, untie=True, return_info=True)
    assert torch.equal(inner.bert.embeddings.word_embeddings.weight, emb_before)
    assert inner.cls.predictions.decoder.base_layer.weight is not emb
    # Rounding W_res = W - s B0 A0 costs eps/2 of its entries: the bound grows with the
    # offset (the decoder's is several times its weight under the stable scale).
    growth = 1 + max(i.offset_ratio for i in info.values())
    scale = float(logits.abs().max())
    diff = float((_logits(model, check) - logits).abs().max())
    assert diff <= 64 * torch.finfo(torch.float32).eps * scale * growth


def test_corruption_cases_leave_the_model_bitwise_unchanged(encoder, check):
    model, grads = copy.deepcopy(encoder[0]), dict(encoder[1])
    snap = _snapshot(model)
    bad = dict(grads)
    last = list(bad)[-1]  # the last layer's gradient: a later shape group than the first
    bad[last] = bad[last].clone()
    bad[last][3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lt.lora_ga_init_(model, bad, check_inputs=check)
    _assert_bitwise(model, snap)
    with pytest.raises(TypeError, match="unknown option"):
        lt.lora_ga_init_(model, grads, return_infos=True)
    _assert_bitwise(model, snap)
    lt.lora_ga_init_(model, grads, check_inputs=check)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="already initialised"):  # a re-run cell
        lt.lora_ga_init_(model, grads, check_inputs=check)
    _assert_bitwise(model, snap)
    model.merge_adapter()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="already initialised"):
        lt.lora_ga_init_(model, grads)
    _assert_bitwise(model, snap)


def test_rank_too_large_in_one_layer_is_refused(base, batches, encoder):
    model = _peft(base, rank_pattern={"layer.5.intermediate.dense": 200})  # 400 > 384
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"layer\.5\.intermediate\.dense.*2r <= min"):
        lt.lora_ga_init_(model, encoder[1])
    _assert_bitwise(model, snap)


def test_bf16_default_init_stays_within_bf16_rounding(encoder, check):
    model = copy.deepcopy(encoder[0]).to(torch.bfloat16)
    grads = encoder[1]
    unclipped = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no large-offset warning with the default
        lt.lora_ga_init_(model, grads, check_inputs=check)
        # the official scaling too, with the default bf16 bound on the offsets
        lt.lora_ga_init_(copy.deepcopy(unclipped), grads, check_inputs=check, compat="paper")
    snap = _snapshot(unclipped)
    # the official code's scaling: offsets 10³-10⁵x the default's, above the weight unclipped
    with pytest.warns(UserWarning, match="exceeds its low-precision base weight"):
        _, info = lt.lora_ga_init_(copy.deepcopy(unclipped), grads, norm_clip=False,
                                   compat="paper", return_info=True)
    assert max(i.offset_ratio for i in info.values()) > 1
    _assert_bitwise(unclipped, snap)
