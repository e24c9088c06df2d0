"""LoRA-GA in a Hugging Face Trainer: pre-pass from the trainer, training, saving honestly."""

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
