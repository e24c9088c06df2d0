"""LoRA-GA in a Hugging Face Trainer: pre-pass, training, saving honestly, resuming."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from _hf_model import model_dir  # noqa: E402

import lowrank.torch as lt  # noqa: E402

TEXTS = ["the meal was good", "the show was awful", "the trip was not bad", "a dull book"]


def classifier():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the new head, identical for every call
            return transformers.BertForSequenceClassification.from_pretrained(
                model_dir(), num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
            )
    finally:
        transformers.logging.set_verbosity(verbosity)


def dataset():
    tok = transformers.AutoTokenizer.from_pretrained(model_dir())
    enc = tok(TEXTS * 4, padding="max_length", max_length=12)
    labels = [0, 1, 1, 0] * 4
    return [
        {"input_ids": i, "attention_mask": a, "labels": y}
        for i, a, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]


def test_trainer_pre_pass_train_and_save_reload_on_the_original_base(tmp_path):
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    model = peft.get_peft_model(classifier(), cfg)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset())
    state = lt.lora_ga_init_trainer_(trainer, n_batches=2, rng=0)
    assert sorted(state) == sorted(p.name for p in lt.find_lora_pairs(model))
    pair = lt.find_lora_pairs(model)[0]
    A0 = pair.A.detach().clone()
    trainer.train()
    assert not torch.equal(pair.A.detach(), A0)  # it trained
    trainer.save_model(str(tmp_path / "final"))
    rows = dataset()[:4]
    batch = {k: torch.tensor([d[k] for d in rows]) for k in ("input_ids", "attention_mask")}
    model.eval()
    with torch.no_grad():
        want = model(**batch).logits
        reloaded = peft.PeftModel.from_pretrained(classifier(), str(tmp_path / "final")).eval()
        got = reloaded(**batch).logits
    # fp32: the export re-associates W_res + s B A as W + s [B, -B0][A; A0], rounding only
    tol = 64 * torch.finfo(torch.float32).eps * float(want.abs().max())
    assert float((got - want).abs().max()) <= tol


def test_n_batches_is_checked():
    with pytest.raises(ValueError, match="n_batches"):
        lt.lora_ga_init_trainer_(object(), n_batches=0)


def _batch():
    rows = dataset()[:4]
    return {k: torch.tensor([d[k] for d in rows]) for k in ("input_ids", "attention_mask")}


def _peft_classifier():
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # the same lora_A start for every call
        return peft.get_peft_model(classifier(), cfg)


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(**_batch()).logits


def test_plain_save_after_init_reloads_on_the_original_base(tmp_path):
    model = _peft_classifier()
    batch = {**_batch(), "labels": torch.tensor([0, 1, 1, 0])}
    grads = lt.estimate_gradients(model, [batch], progress=False)
    lt.lora_ga_init_(model, grads, check_inputs=_batch())
    files = {k: v.clone() for k, v in model.state_dict().items()}
    model.save_pretrained(str(tmp_path / "adapter"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in files.items())  # untouched
    want = _logits(model)
    got = _logits(peft.PeftModel.from_pretrained(classifier(), str(tmp_path / "adapter")))
    tol = 64 * torch.finfo(torch.float32).eps * float(want.abs().max())
    assert float((got - want).abs().max()) <= tol
    # PEFT's own rank-r adapter (the opt-out) misses every offset s B0 A0 on this base
    model.save_pretrained(str(tmp_path / "rank_r"), lowrank_allow_modified_base=True)
    off = _logits(peft.PeftModel.from_pretrained(classifier(), str(tmp_path / "rank_r")))
    assert float((off - want).abs().max()) > 100 * tol


def _args(out, **kw):
    return transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **kw,
    )


def _lora_params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_trainer_checkpoint_resumes_in_a_new_model(tmp_path):
    model = _peft_classifier()
    args = _args(tmp_path, save_strategy="steps", save_steps=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset())
    lt.lora_ga_init_trainer_(trainer, n_batches=2, rng=0)
    trainer.train()
    want = _lora_params(model)
    ckpt = tmp_path / "checkpoint-2"
    # the checkpoint is a stock adapter for the original base, plus the resume files
    reloaded = peft.PeftModel.from_pretrained(classifier(), str(ckpt))
    assert reloaded.peft_config["default"].r == 8
    # a new process: rebuild the initialised model from the original base, then resume
    fresh = _peft_classifier()
    lt.apply_lora_ga_offset_(fresh, lt.load_lora_ga_init(ckpt / "lowrank_lora_ga_init.pt"))
    again = transformers.Trainer(model=fresh, args=_args(tmp_path / "again"), train_dataset=dataset())
    again.train(resume_from_checkpoint=str(ckpt))
    got = _lora_params(fresh)
    assert got.keys() == want.keys()
    for k, v in want.items():
        # same steps from the same state; only summation order may differ
        tol = 64 * torch.finfo(torch.float32).eps * max(float(v.abs().max()), 1e-30)
        assert float((got[k] - v).abs().max()) <= tol, k
    # resuming a model initialised differently is refused before anything is loaded
    other = _peft_classifier()
    lt.lora_ga_init_trainer_(
        transformers.Trainer(model=other, args=_args(tmp_path / "o"), train_dataset=dataset()),
        n_batches=1,
        rng=1,
    )
    before = _lora_params(other)
    with pytest.raises(ValueError, match="different LoRA-GA init"):
        other.load_adapter(str(ckpt), "default", is_trainable=True)
    assert all(torch.equal(v, _lora_params(other)[k]) for k, v in before.items())


def test_export_callback_writes_a_stock_peft_adapter_at_every_save(tmp_path):
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    model = peft.get_peft_model(classifier(), cfg)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
        learning_rate=1e-3, report_to=[], save_strategy="steps", save_steps=1,
        save_total_limit=1, use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset())
    state = lt.lora_ga_init_trainer_(trainer, n_batches=2, rng=0)
    trainer.add_callback(lt.lora_ga_export_callback(state))
    trainer.train()
    exports = tmp_path / "run" / "lora_ga_export"
    # one export per save, kept although the rotation left only the last checkpoint
    assert sorted(p.name for p in exports.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-2"]
    rows = dataset()[:4]
    batch = {k: torch.tensor([d[k] for d in rows]) for k in ("input_ids", "attention_mask")}
    model.eval()
    with torch.no_grad():
        want = model(**batch).logits
        got = peft.PeftModel.from_pretrained(classifier(), str(exports / "checkpoint-2"))
        got = got.eval()(**batch).logits
    tol = 64 * torch.finfo(torch.float32).eps * float(want.abs().max())
    assert float((got - want).abs().max()) <= tol
    with pytest.raises(TypeError, match="state must be"):
        lt.lora_ga_export_callback({"x": 1})
    with pytest.raises(TypeError, match="adapter must be a str, got int"):
        lt.lora_ga_export_callback(state, adapter=0)
    with pytest.raises(TypeError, match="export_dir must be a path.*got int"):
        lt.lora_ga_export_callback(state, 5)
