"""SFT and DPO over TRL: the HH converter on real transcripts, SFT's targets (chosen
only), a few DPO steps that widen the chosen-minus-rejected margin, and the loaders."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from saferinstruct.config import AlignConfig
from saferinstruct.errors import BadInput
from saferinstruct.io import read_jsonl
from saferinstruct.paths import data_dir
from saferinstruct.preferences import (
    hh_default_path,
    hh_split,
    hh_to_preference,
    load_hh,
    load_preferences,
)

pytestmark = pytest.mark.slow

CSV = data_dir() / "safer-instruct" / "hate-sample.csv"
ROOT = data_dir().parent


def sft_step(**changes):
    """The SFT defaults (`AlignConfig().sft`) with `changes`."""
    return dataclasses.replace(AlignConfig().sft, **changes)


def dpo_step(**changes):
    """The DPO defaults (`AlignConfig().dpo`) with `changes`."""
    return dataclasses.replace(AlignConfig().dpo, **changes)


def short_pairs(n: int, max_chars: int = 300) -> list[dict]:
    """Released Safer-Instruct pairs whose chosen and rejected differ clearly and are short."""
    rows = []
    for r in load_preferences(CSV):
        c, j = r["chosen"][0]["content"], r["rejected"][0]["content"]
        p = r["prompt"][0]["content"]
        if len(c) + len(j) + len(p) < max_chars and c[:20] != j[:20]:
            rows.append(r)
        if len(rows) == n:
            break
    assert len(rows) == n
    return rows


def test_hh_converter_on_real_transcripts():
    raw = list(read_jsonl(hh_default_path()))
    pairs = [hh_to_preference(r["chosen"], r["rejected"]) for r in raw]
    ok = [p for p in pairs if p is not None]
    assert len(ok) > 0.95 * len(raw)
    for p in ok:
        roles = [m["role"] for m in p["prompt"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        assert all(m["content"] for m in p["prompt"])
        assert [m["role"] for m in p["chosen"]] == ["assistant"]
        assert [m["role"] for m in p["rejected"]] == ["assistant"]
        # no turn marker leaks into a message (HH's own "Assistant: Human: ..." quirk,
        # a model answer that starts with "Human:", is data and stays)
        for m in p["prompt"] + p["chosen"] + p["rejected"]:
            assert "\n\nHuman:" not in m["content"] and "\n\nAssistant:" not in m["content"]
    # a multi-turn example keeps earlier assistant turns in the prompt
    assert any(len(p["prompt"]) >= 3 for p in ok)
    # a mismatched prefix is refused
    assert hh_to_preference(raw[0]["chosen"], raw[1]["rejected"]) is None
    train, ev = load_hh(split="train"), load_hh(split="eval")
    assert len(train) + len(ev) == len(ok)
    assert 0.15 < len(ev) / len(ok) < 0.25
    first = lambda rows: {r["prompt"][0]["content"].strip() for r in rows}  # noqa: E731
    assert not first(train) & first(ev)
    assert [r["id"] for r in load_hh(split="eval")] == [r["id"] for r in ev]
    assert hh_split(ev[0]["prompt"]) == "eval"
    assert len(load_hh(split="train", limit=7)) == 7


def test_load_preferences_csv_and_jsonl(tmp_path):
    rows = load_preferences(CSV)
    assert rows and all(r["rejected"][0]["content"] for r in rows)
    r = rows[0]
    assert r["prompt"][0]["role"] == "user" and len(r["prompt"]) == 1
    assert r["chosen"][0]["role"] == "assistant"
    assert len(load_preferences(CSV, limit=3)) == 3
    # TRL-format jsonl, as a file and as a contract dataset directory
    (tmp_path / "dataset").mkdir()
    path = tmp_path / "dataset" / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    assert load_preferences(path) == rows[:5]
    assert load_preferences(tmp_path) == rows[:5]
    assert len(load_preferences(tmp_path, limit=2)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "chosen": "y", "rejected": "z"}) + "\n")
    from saferinstruct.errors import BadInput

    with pytest.raises(BadInput):
        load_preferences(bad)


def test_sft_trains_on_chosen_only(tmp_path):
    from saferinstruct.train.sft import make_sft_trainer, sft_rows

    data = short_pairs(4)
    assert all("rejected" not in r for r in sft_rows(data))
    trainer, _ = make_sft_trainer(data, sft_step(batch_size=2, max_length=128), tmp_path)
    tok = trainer.processing_class
    for i, row in enumerate(data):
        batch = trainer.data_collator([trainer.train_dataset[i]])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        supervised = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen in supervised
        assert rejected not in supervised
        assert row["prompt"][0]["content"] not in supervised


def margin(model, tok, rows) -> float:
    """Sum over rows of log p(chosen | prompt) - log p(rejected | prompt)."""
    import torch

    def score(prompt, answer):
        p_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(prompt + answer, tokenize=False)
        assert full.startswith(p_ids)
        a = tok(p_ids, add_special_tokens=False)["input_ids"]
        b = tok(full, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([b])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        target = ids[0, 1:]
        lp = logp.gather(1, target[:, None])[:, 0]
        return lp[len(a) - 1 :].sum().item()

    model.eval()
    return sum(score(r["prompt"], r["chosen"]) - score(r["prompt"], r["rejected"]) for r in rows)


def test_dpo_steps_widen_the_margin(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saferinstruct.llm.local import resolve_model_path
    from saferinstruct.train.dpo import train_dpo

    data = short_pairs(4)
    base = resolve_model_path("embedded")
    tok = AutoTokenizer.from_pretrained(str(base))
    before = margin(AutoModelForCausalLM.from_pretrained(str(base)), tok, data)
    step = dpo_step(batch_size=2, epochs=2.0, max_length=128, learning_rate=5e-4)
    out = train_dpo(data, step, tmp_path)
    after = margin(AutoModelForCausalLM.from_pretrained(str(out)), tok, data)
    print("margin before, after:", before, after)
    assert after > before + 1.0, (before, after)
    assert (tmp_path / "README.md").exists() and (tmp_path / "loss.png").exists()
    assert not (tmp_path / "checkpoints").exists()
    # another beta into the same folder is refused, naming it; the model stays
    with pytest.raises(BadInput, match=r"settings\.beta"):
        train_dpo(data, dataclasses.replace(step, beta=0.5), tmp_path)
    assert train_dpo(data, step, tmp_path) == out


def test_train_sft_writes_a_merged_model_and_card(tmp_path):
    from transformers import AutoModelForCausalLM

    from saferinstruct.train.sft import train_sft

    data = short_pairs(4)
    out = train_sft(data, sft_step(batch_size=2, max_length=96, epochs=1.0), tmp_path)
    assert out == tmp_path / "model" and (out / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())
    card = (tmp_path / "README.md").read_text()
    assert "chosen" in card and "steps" in card
    # the card says what the trainer really used (here: a CPU, so fp32)
    assert '"precision": "fp32"' in card and '"device": "cpu"' in card
    assert (tmp_path / "loss.png").exists() and not (tmp_path / "checkpoints").exists()
    # a second call with the same settings and data reuses the finished model; other
    # settings or other data are refused, naming what changed
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    step = sft_step(batch_size=2, max_length=96, epochs=1.0)
    assert train_sft(data, step, tmp_path) == out
    with pytest.raises(BadInput, match=r"settings\.batch_size.*settings\.epochs"):
        train_sft(data, sft_step(), tmp_path)
    with pytest.raises(BadInput, match=r"data\.rows"):
        train_sft(data[:3], step, tmp_path)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_dpo_reference_logps_are_saved_and_reused(tmp_path):
    """The first trainer saves TRL's precomputed reference log-probs; a second one on the
    same rows reads them back, holds no reference model, and its first loss is the same.
    New rows make it compute again and add them to the file."""
    import torch

    from saferinstruct.train.dpo import load_ref_logps, make_dpo_trainer, row_key

    data = short_pairs(5)
    path = tmp_path / "ref_logps" / "k.jsonl"
    step = dpo_step(batch_size=2, max_length=96, seed=0)

    def first_loss(trainer):
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            return float(trainer.compute_loss(trainer.model, batch))

    a, _ = make_dpo_trainer(data[:4], step, tmp_path / "a", path)
    stored = load_ref_logps(path)
    assert set(stored) == {row_key(r) for r in data[:4]}
    assert all(c < 0 and r < 0 for c, r in stored.values())
    computed = dict(zip(a.train_dataset["ref_key"], a.train_dataset["ref_chosen_logps"],
                        strict=True))  # fmt: skip
    assert all(abs(computed[k] - c) < 1e-4 for k, (c, _) in stored.items())
    mtime = path.stat().st_mtime_ns
    b, _ = make_dpo_trainer(data[:4], step, tmp_path / "b", path)
    assert b.precompute_ref_logps and b.ref_model is None
    assert path.stat().st_mtime_ns == mtime  # read, not recomputed
    assert abs(first_loss(a) - first_loss(b)) < 1e-4
    c, _ = make_dpo_trainer(data, step, tmp_path / "c", path)
    assert set(load_ref_logps(path)) == {row_key(r) for r in data}
    assert not any(v != v for v in c.train_dataset["ref_chosen_logps"])  # no NaN


def test_ref_logps_live_beside_the_dataset(tmp_path):
    from saferinstruct.errors import BadInput
    from saferinstruct.recipes.training import dpo_ref_dir

    run = tmp_path / "run"
    (run / "dataset").mkdir(parents=True)
    (run / "dataset" / "train.jsonl").write_text("")
    assert dpo_ref_dir(run) == run / "dataset" / "ref_logps"
    assert dpo_ref_dir(run / "dataset" / "train.jsonl") == run / "dataset" / "ref_logps"
    assert dpo_ref_dir(run / "dataset") == run / "dataset" / "ref_logps"
    assert dpo_ref_dir("hh").name == "hh"
    with pytest.raises(BadInput, match="train.jsonl"):
        dpo_ref_dir(tmp_path)


def test_training_config_reaches_the_trainer(tmp_path):
    """The shipped 7B config parses; its optimizer settings reach TrainingArguments; a
    broken config is one line and exit 2."""
    from saferinstruct.config import ModelConfig, load_align_config
    from saferinstruct.train.sft import make_sft_trainer
    from test_cli import cli

    paper = load_align_config(ROOT / "configs" / "train-paper-7b.yaml")
    assert paper.dpo.beta == 0.1 and paper.dpo.learning_rate == 5e-7 and not paper.sft.lora
    assert paper.sft.trainer_args()["optim"] == "rmsprop"
    step = dataclasses.replace(paper.sft, base_model=ModelConfig(), batch_size=2,
                               max_length=64, lora=True)  # fmt: skip
    trainer, _ = make_sft_trainer(short_pairs(2), step, tmp_path)
    assert trainer.args.optim == "rmsprop" and trainer.args.gradient_accumulation_steps == 16
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  batch_sise: 4\n")
    r = cli("sft", "--data", "hh", "--out", str(tmp_path / "o"), "--config", str(bad))
    assert r.returncode == 2 and "sft.batch_sise" in r.stderr and "bad.yaml" in r.stderr
    r = cli("dpo", "--data", "hh", "--out", str(tmp_path / "o"), "--lora-top-fraction", "0")
    assert r.returncode == 2 and "dpo.lora_top_fraction" in r.stderr
    assert not (tmp_path / "o").exists()


def test_lora_rank_reaches_the_adapters(tmp_path):
    """`lora_rank` sets every adapter's rank, alpha twice it (the scale stays 2), so a
    smaller rank trains fewer parameters; a rank below 1 is one line and exit 2."""
    from saferinstruct.config import AlignConfig
    from saferinstruct.train.sft import make_sft_trainer
    from test_cli import cli

    def adapters(rank: int):
        step = dataclasses.replace(AlignConfig().sft, lora_rank=rank, batch_size=2,
                                   max_length=64)  # fmt: skip
        model = make_sft_trainer(short_pairs(2), step, tmp_path / f"r{rank}")[0].model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return model.peft_config["default"], trainable

    (small, n_small), (default, n_default) = adapters(4), adapters(16)
    assert (small.r, small.lora_alpha) == (4, 8) and (default.r, default.lora_alpha) == (16, 32)
    assert n_default == 4 * n_small
    r = cli("dpo", "--data", "hh", "--out", str(tmp_path / "o"), "--lora-rank", "0")
    assert r.returncode == 2 and "dpo: lora_rank" in r.stderr
    assert not (tmp_path / "o").exists()


def test_schedule_counts_optimizer_steps_under_gradient_accumulation(tmp_path):
    """The paper config accumulates 16 micro-batches of 4: 128 rows are 2 optimizer
    steps, so warm-up must not cover the whole run and logging happens every step."""
    from saferinstruct.train.schedule import schedule_args

    plain = schedule_args(tmp_path, 2000, 4, 1e-5, 1.0, 256, 0)
    assert plain["warmup_steps"] == 10 and plain["logging_steps"] == 25
    paper = schedule_args(tmp_path, 128, 4, 5e-7, 1.0, 1024, 0,
                          {"gradient_accumulation_steps": 16})  # fmt: skip
    assert paper["warmup_steps"] == 0 and paper["logging_steps"] == 1
    assert paper["gradient_accumulation_steps"] == 16
    big = schedule_args(tmp_path, 2000, 4, 5e-7, 1.0, 1024, 0, {"gradient_accumulation_steps": 16})
    assert big["warmup_steps"] == 3 and big["save_steps"] == 6


def test_full_dpo_precomputes_without_a_reference_copy(tmp_path, monkeypatch):
    """Full fine-tune DPO scores the reference with the untrained policy itself (no
    second model in memory: 14 GB for the 7B config) and gets the same log-probs as the
    LoRA trainer, whose adapters start at zero; a training step then runs."""
    from saferinstruct.train.dpo import load_ref_logps, make_dpo_trainer

    data = short_pairs(4)
    step = dpo_step(batch_size=2, max_length=96, seed=0)
    lora_path, full_path = tmp_path / "lora.jsonl", tmp_path / "full.jsonl"
    make_dpo_trainer(data, step, tmp_path / "a", lora_path)
    full_step = dataclasses.replace(step, lora=False, epochs=0.5)
    full, _ = make_dpo_trainer(data, full_step, tmp_path / "b", full_path)
    assert full.ref_model is None
    a, b = load_ref_logps(lora_path), load_ref_logps(full_path)
    assert set(a) == set(b)
    assert all(abs(a[k][0] - b[k][0]) < 1e-3 and abs(a[k][1] - b[k][1]) < 1e-3 for k in a)
    full.train()
    assert full.state.global_step == 1
    # reusing the stored log-probs, a full fine-tune loads the policy alone
    from saferinstruct.train import dpo as dpo_module

    loads = []
    real = dpo_module.load_base
    monkeypatch.setattr(dpo_module, "load_base", lambda m: loads.append(m) or real(m))
    again, _ = make_dpo_trainer(data, full_step, tmp_path / "c", full_path)
    assert again.ref_model is None and len(loads) == 1
    again.train()
    assert again.state.global_step == 1


def test_gpu_training_keeps_fp32_weights_when_they_fit():
    """Mixed precision (fp32 weights, bf16 maths) for a model whose fp32 training state
    fits half the card; bf16 weights only for one that would not (the 7B config)."""
    from saferinstruct.llm.local import resolve_model_path
    from saferinstruct.train.hardware import fp32_training_fits, parameter_count

    h100 = 80 * 1024**3
    n = parameter_count(resolve_model_path("embedded"))
    assert 130e6 < n < 140e6  # SmolLM2-135M, counted without reading weights
    assert fp32_training_fits(n, h100)
    assert not fp32_training_fits(6_878_924_800, h100)  # the 6.9B model of the GPU check
    assert not fp32_training_fits(n, 2 * 1024**3)


def test_training_takes_the_model_config(tmp_path):
    """A training base is a model config like any role's: its dtype reaches the loaded
    model, a YAML mapping or a SPEC string both parse, and a remote model is bad input."""
    import torch

    from saferinstruct.config import load_align_config
    from saferinstruct.train.hardware import load_base
    from test_cli import cli

    cfg = tmp_path / "train.yaml"
    cfg.write_text("sft:\n  base_model: {model: embedded, dtype: bfloat16}\n"
                   "dpo:\n  base_model: embedded\n")  # fmt: skip
    align = load_align_config(cfg)
    assert align.sft.base_model.dtype == "bfloat16" and align.dpo.base_model.model == "embedded"
    model, _, dtype = load_base(align.sft.base_model)
    assert dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.bfloat16
    r = cli("sft", "--data", "hh", "--out", str(tmp_path / "o"), "--base-model",
            "openai:m@http://127.0.0.1:9/v1")  # fmt: skip
    assert r.returncode == 2 and "sft.base_model" in r.stderr and "local" in r.stderr


def test_dpo_reports_what_it_learned_on_held_out_pairs(tmp_path):
    """DPO measures held-out pairs before and after training; the figures it records are
    the saved model's: a trainer over the saved model and the stored reference log-probs
    measures the same accuracy and margin."""
    from saferinstruct.train.dpo import make_dpo_trainer, ref_logps_key, train_dpo
    from saferinstruct.train.held_out import HeldOut

    pairs = short_pairs(10, max_chars=400)
    step = dpo_step(batch_size=2, epochs=2.0, max_length=128, learning_rate=5e-4)
    held = HeldOut(pairs[6:], "the last 4 pairs")
    out = train_dpo(pairs[:6], step, tmp_path / "dpo", held=held)
    record = json.loads((tmp_path / "dpo" / "training.json").read_text())["held_out"]
    assert record["pairs"] == 4 and record["from"] == "the last 4 pairs"
    before, after = record["before"], record["after"]
    assert before["accuracy"] == 0.0 and abs(before["margin"]) < 1e-6  # policy = reference
    assert after["margin"] > before["margin"]
    assert after["chosen_logp_change"] == pytest.approx(after["chosen_reward"] / step.beta,
                                                        abs=1e-3)  # fmt: skip
    assert "held-out pairs" in (tmp_path / "dpo" / "README.md").read_text()
    # the same numbers from the saved model and the stored reference log-probs
    ref_path = tmp_path / "dpo" / "ref_logps" / f"{ref_logps_key(step.base_model, 128)}.jsonl"
    check = dataclasses.replace(step, base_model=dataclasses.replace(step.base_model,
                                model=str(out)), lora=False)  # fmt: skip
    again, _ = make_dpo_trainer(pairs[:6], check, tmp_path / "check", ref_path, held.rows)
    assert again.ref_model is None
    metrics = again.evaluate()
    assert metrics["eval_rewards/accuracies"] == pytest.approx(after["accuracy"], abs=1e-4)
    assert metrics["eval_rewards/margins"] == pytest.approx(after["margin"], abs=2e-3)


def test_a_dpo_run_that_does_not_move_says_so(tmp_path, caplog):
    """Learning rate 0: the held-out log-probs stay where they were, and the run ends
    with a warning naming the setting to change."""
    import logging

    from saferinstruct.train.dpo import train_dpo
    from saferinstruct.train.held_out import HeldOut

    pairs = short_pairs(8, max_chars=400)
    step = dpo_step(batch_size=2, max_steps=1, max_length=96, learning_rate=0.0)
    with caplog.at_level(logging.WARNING, logger="saferinstruct"):
        train_dpo(pairs[:4], step, tmp_path, held=HeldOut(pairs[4:], "4 pairs"))
    record = json.loads((tmp_path / "training.json").read_text())["held_out"]
    assert any("barely moved" in w and "learning_rate" in w for w in record["warnings"])
    assert any("near chance" in w for w in record["warnings"])
    assert "barely moved" in caplog.text


@pytest.mark.parametrize("loss_type,smoothing", [("sigmoid", 0.0), ("ipo", 0.0),
                                                 ("robust", 0.1)])  # fmt: skip
def test_every_offered_loss_type_trains_and_saves(tmp_path, loss_type, smoothing):
    from saferinstruct.train.dpo import train_dpo

    step = dpo_step(batch_size=2, max_steps=1, max_length=96, loss_type=loss_type,
                    label_smoothing=smoothing)  # fmt: skip
    out = train_dpo(short_pairs(4), step, tmp_path)
    assert (out / "config.json").exists()
    log = json.loads((tmp_path / "train_log.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    card = (tmp_path / "README.md").read_text()
    assert f'"loss_type": "{loss_type}"' in card


def test_sft_measures_its_held_out_loss(tmp_path):
    from saferinstruct.train.held_out import HeldOut
    from saferinstruct.train.sft import train_sft

    pairs = short_pairs(8, max_chars=400)
    step = sft_step(batch_size=2, epochs=2.0, max_length=128)
    train_sft(pairs[:5], step, tmp_path, held=HeldOut(pairs[5:], "3 pairs"))
    record = json.loads((tmp_path / "training.json").read_text())["held_out"]
    assert record["pairs"] == 3 and record["after"]["loss"] < record["before"]["loss"]


def test_held_out_pairs_come_from_the_test_split_else_a_hashed_share(tmp_path):
    """A dataset folder's test split is the held-out set; a file without one gives a
    share of its pairs, the same pairs every time, never also trained on."""
    from saferinstruct.io import write_jsonl_atomic
    from saferinstruct.recipes.training import training_rows

    pairs = short_pairs(12, max_chars=500)
    folder = tmp_path / "dataset"
    write_jsonl_atomic(folder / "train.jsonl", pairs[:9])
    write_jsonl_atomic(folder / "test.jsonl", pairs[9:])
    rows, held = training_rows(folder, sft_step())
    assert len(rows) == 9 and held.rows == pairs[9:] and "test split" in held.source
    single = tmp_path / "pairs.jsonl"
    write_jsonl_atomic(single, pairs)
    rows, held = training_rows(single, sft_step(held_out_share=0.3))
    again, held_again = training_rows(single, sft_step(held_out_share=0.3))
    assert held.rows == held_again.rows and held.rows and "30%" in held.source
    assert len(rows) + len(held.rows) == 12
    assert not [r for r in held.rows if r in rows]
