"""Reversed instruction tuning on a tiny slice of the shipped AlpacaEval pairs."""

from __future__ import annotations

import gzip
import json

import pytest

from saferinstruct.config import ReverseTrainConfig
from saferinstruct.errors import BadInput
from saferinstruct.measures.splits import split_of
from saferinstruct.paths import data_dir
from saferinstruct.train.reverse import (
    load_pairs,
    make_trainer,
    model_key,
    train_reverse,
    trained_model,
)

pytestmark = pytest.mark.slow


def tiny_pairs(tmp_path, n=4):
    """A few real AlpacaEval pairs with short outputs, so steps are quick."""
    rows = []
    with gzip.open(data_dir() / "alpacaeval" / "pairs.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            if len(r["output"]) < 200 and split_of(str(r["id"]), 0.1) == "train":
                rows.append(r)
            if len(rows) == n:
                break
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def small_cfg(path, **kw):
    base = dict(
        path=str(path),
        max_pairs=4,
        batch_size=4,
        max_response_chars=160,
        max_length=96,
        learning_rate=2e-4,
        epochs=3.0,
        validation_fraction=0.1,
    )
    base.update(kw)
    return ReverseTrainConfig(**base)


def test_split_is_by_id_and_stable():
    cfg = ReverseTrainConfig(path=str(data_dir() / "alpacaeval" / "pairs.jsonl.gz"))
    train = load_pairs(cfg, "train")
    val = load_pairs(cfg, "validation")
    assert not {p["id"] for p in train} & {p["id"] for p in val}
    assert (
        0.05
        < len({p["id"] for p in val}) / len({p["id"] for p in train} | {p["id"] for p in val})
        < 0.15
    )
    assert [p["id"] for p in load_pairs(cfg, "validation")] == [p["id"] for p in val]


def test_training_prefix_covers_distinct_instructions_first():
    """AlpacaEval has 16 answers per instruction: the first max_pairs pairs must not repeat
    an instruction while another one is still unused."""
    cfg = ReverseTrainConfig(path=str(data_dir() / "alpacaeval" / "pairs.jsonl.gz"))
    train = load_pairs(cfg, "train")
    ids = {p["id"] for p in train}
    prefix = [p["id"] for p in train[: len(ids)]]
    assert len(set(prefix)) == len(ids)
    assert len({p["id"] for p in train[len(ids) : 2 * len(ids)]}) == len(ids)
    assert len(train) > 10 * len(ids)  # still every pair, only reordered


def test_only_completion_tokens_carry_loss(tmp_path):
    path, rows = tiny_pairs(tmp_path)
    trainer, _, _ = make_trainer(small_cfg(path), tmp_path / "w")
    example = trainer.train_dataset[0]
    batch = trainer.data_collator([example])
    labels = batch["labels"][0].tolist()
    ids = batch["input_ids"][0].tolist()
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    tok = trainer.processing_class
    text = tok.decode(supervised)
    instructions = {r["instruction"].strip() for r in rows}
    assert text.endswith(tok.eos_token)
    assert text[: -len(tok.eos_token)] in instructions
    # every prompt token (the template and the response) is masked
    first = labels.index(next(lab for lab in labels if lab != -100))
    assert "### Instruction:" in tok.decode(ids[:first])
    assert all(lab == -100 for lab in labels[:first])


def test_training_lowers_loss_changes_weights_and_is_reused(tmp_path):
    import torch
    from safetensors.torch import load_file

    from saferinstruct.llm.embedded import ensure_converted

    path, _ = tiny_pairs(tmp_path)
    cfg = small_cfg(path, lora=True, learning_rate=2e-3)
    out = train_reverse(cfg, tmp_path / "rev")
    log = json.loads((tmp_path / "rev" / "train_log.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert (tmp_path / "rev" / "loss.png").stat().st_size > 1000
    assert "train_pairs" in (tmp_path / "rev" / "README.md").read_text()
    new = load_file(str(out / "model.safetensors"))
    old = load_file(str(ensure_converted() / "model.safetensors"))
    name = next(k for k in new if "q_proj.weight" in k)
    assert not torch.equal(new[name], old[name])
    assert not (out.parent / "checkpoints").exists()
    # a second call with the same settings reuses the model instead of training again
    mtime = (out / "model.safetensors").stat().st_mtime
    assert train_reverse(cfg, tmp_path / "rev") == out
    assert (out / "model.safetensors").stat().st_mtime == mtime
    # other settings into the same folder: refused, naming the setting; --force retrains
    other = small_cfg(path, lora=True, learning_rate=1e-3)
    with pytest.raises(BadInput, match=r"settings\.learning_rate"):
        train_reverse(other, tmp_path / "rev")
    assert (out / "model.safetensors").stat().st_mtime == mtime
    assert train_reverse(other, tmp_path / "rev", force=True) == out
    assert (out / "model.safetensors").stat().st_mtime != mtime


def test_cache_key_depends_on_settings(tmp_path):
    path, _ = tiny_pairs(tmp_path)
    a = small_cfg(path)
    assert model_key(a) == model_key(small_cfg(path))
    assert model_key(a) != model_key(small_cfg(path, learning_rate=1e-3))
    assert model_key(a) == model_key(small_cfg(path, max_minutes=5.0))
    assert trained_model(small_cfg(path, seed=123)) is None
    assert model_key(a) != model_key(small_cfg(path, max_steps=2))


def test_time_guard_cut_model_is_not_reused_and_training_resumes(tmp_path):
    """Under load the guard may stop training early: that model is saved but never taken
    as finished, and the next call resumes from its checkpoint to the planned end."""
    from saferinstruct.train.outputs import finished_model

    path, _ = tiny_pairs(tmp_path)
    work = tmp_path / "rev"
    train_reverse(small_cfg(path, max_minutes=1e-6), work)
    record = json.loads((work / "training.json").read_text())
    assert not record["complete"] and record["steps"] < record["planned_steps"]
    assert finished_model(work) is None and (work / "checkpoints").exists()
    out = train_reverse(small_cfg(path), work)
    record = json.loads((work / "training.json").read_text())
    assert record["complete"] and record["steps"] == record["planned_steps"]
    assert finished_model(work) == out and not (work / "checkpoints").exists()
    card = (work / "README.md").read_text()
    assert '"resumed_from": "' in card and '"stopped_by_budget": false' in card
