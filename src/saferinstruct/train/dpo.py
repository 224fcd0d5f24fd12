"""DPO on preference data (the paper's second alignment step, beta 0.1), over TRL.

A thin layer over TRL's DPOTrainer with the same hardware handling as SFT (precision
from the hardware, no gradient checkpointing). LoRA by default, on the top half of the
layers (`lora_top_fraction`): the backward pass stops half-way down, which is what makes
a CPU step fast (benchmarks/dpo_speed.py). With LoRA the reference model is the
base model with its adapters disabled (no second copy in memory); `precompute_ref`
computes the reference log-probs once before training. The result is merged into a
normal HF directory at `out_dir/model`, with a card and a loss plot beside it.

Reference log-probs depend only on the reference model, the rows and `max_length`, so
they are saved once (`ref_logps/<key>.jsonl` beside the dataset, see `ref_logps_file`)
and reused by every later DPO run on the same data and base model: the trainer then
reads them from the batch and never runs the reference model (benchmarks/dpo_speed.py).
Every setting is one `TrainStepConfig` (the defaults are `config.AlignConfig().dpo`).

    model_dir = train_dpo(rows, AlignConfig().dpo, Path("runs/align/dpo"), ref_dir)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from ..config import ModelConfig, TrainStepConfig, report_targets
from ..errors import BadInput
from ..io import write_atomic
from .hardware import load_base, step_adapters
from .held_out import HeldOut
from .outputs import (
    Measured,
    card_settings,
    rows_identity,
    step_identity,
    train_and_save,
    training_session,
)
from .ranks import train_dataset
from .schedule import (
    learning_rate,
    quiet_stdout,
    schedule_args,
    threads_callback,
    time_budget_callback,
)

log = logging.getLogger("saferinstruct")

# LoRA: 2e-4, measured (docs/benchmarks.md, "DPO on our own pairs"): 11 steps at the
# earlier 5e-5 moved the log-probs 0.2-0.4 nats and no refusal; 33 steps at 2e-4 lifted
# harmful refusal 9-10 points on the tuning prompts. Full fine-tune: the paper's 5e-7.
LORA_LR = 2e-4
FULL_LR = 5e-7


def dpo_rows(data: list[dict]) -> list[dict]:
    """prompt/chosen/rejected only, rows with an empty rejected answer dropped."""
    rows = []
    for r in data:
        rej = r.get("rejected") or []
        if not r.get("prompt") or not r.get("chosen") or not rej or not rej[0].get("content"):
            continue
        rows.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": rej})
    return rows


def ref_logps_key(base_model: ModelConfig, max_length: int) -> str:
    """Names the reference log-prob file: the reference model's files and max_length."""
    from ..llm.fingerprint import fingerprint
    from ..llm.local import resolve_model_path

    ident = fingerprint(str(resolve_model_path(base_model.model)))
    return hashlib.sha256(f"{ident}\nmax_length={max_length}".encode()).hexdigest()[:16]


def row_key(row: dict) -> str:
    """Identifies one row's reference log-probs inside the file: its texts."""
    text = json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_ref_logps(path: Path | None) -> dict[str, tuple[float, float]]:
    """Stored row key -> (chosen, rejected) reference log-probs; empty when absent."""
    if path is None or not path.exists():
        return {}
    out: dict[str, tuple[float, float]] = {}
    try:
        for line in path.read_text().splitlines():
            if line.strip():
                key, chosen, rejected = json.loads(line)
                out[str(key)] = (float(chosen), float(rejected))
    except (ValueError, TypeError):
        log.warning("ignoring unreadable reference log-probs: %s", path)
        return {}
    return out


def save_ref_logps(path: Path, datasets: list[Any], keep: dict[str, tuple[float, float]]) -> None:
    """Write `[row key, chosen, rejected]` lines: the trainer's precomputed columns (of
    its training and held-out sets), plus the rows of `keep` (an earlier file) that these
    datasets do not have."""
    fresh = {
        k: (float(c), float(r))
        for dataset in datasets
        for k, c, r in zip(dataset["ref_key"], dataset["ref_chosen_logps"],
                           dataset["ref_rejected_logps"], strict=True)
    }  # fmt: skip
    merged = {**keep, **fresh}
    write_atomic(path, "".join(json.dumps([k, c, r]) + "\n" for k, (c, r) in merged.items()))
    log.info("saved reference log-probs for %d rows: %s", len(fresh), path)


def with_stored_refs(rows: list[dict], stored: dict[str, tuple[float, float]]) -> list[dict]:
    """Rows carrying their stored reference log-probs (NaN where none is stored)."""
    nan = (float("nan"), float("nan"))
    out = []
    for r in rows:
        chosen, rejected = stored.get(r["ref_key"], nan)
        out.append({**r, "ref_chosen_logps": chosen, "ref_rejected_logps": rejected})
    return out


def StoredReferenceDPOTrainer() -> Any:  # noqa: N802 (a class, made when TRL is loaded)
    """TRL's DPOTrainer that takes reference log-probs already in the rows as precomputed
    (its precompute step keeps such a dataset as it is)."""
    from trl import DPOTrainer

    class StoredReference(DPOTrainer):
        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            if "ref_chosen_logps" in dataset.column_names:
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return StoredReference


def make_dpo_trainer(
    data: list[dict], step: TrainStepConfig, out_dir: Path, ref_logps_path: Path | None = None,
    held_out: list[dict] | None = None,
) -> tuple[Any, Any]:
    """The TRL DPOTrainer for `step` (not yet trained) and its time budget callback; with
    `held_out` pairs, its evaluation set (preference accuracy, margins, log-prob change).

    With `step.precompute_ref` and a `ref_logps_path`, stored reference log-probs are
    reused when every row (held-out ones too) has one, and saved there after TRL computes
    them."""
    from trl import DPOConfig, DPOTrainer

    rows = [{**r, "ref_key": row_key(r)} for r in dpo_rows(data)]
    held = [{**r, "ref_key": row_key(r)} for r in dpo_rows(held_out or [])]
    if not rows:
        raise BadInput("dpo: no rows with a prompt, a chosen and a rejected answer")
    stored = load_ref_logps(ref_logps_path) if step.precompute_ref else {}
    lr = learning_rate(step, LORA_LR, FULL_LR)
    budget = time_budget_callback(step.max_minutes)
    trackers = report_targets(step.report_to, "dpo")

    def build(train_rows: list[dict], eval_rows: list[dict], precompute: bool,
              trainer_class: Any = DPOTrainer) -> Any:  # fmt: skip
        model, tokenizer, _ = load_base(step.base_model)
        args = DPOConfig(
            **schedule_args(out_dir, len(rows), step.batch_size, lr, step.epochs,
                            step.max_length, step.seed, step.trainer_args(),
                            step.base_model.device, step.max_steps,
                            evaluate=bool(eval_rows), report_to=trackers),  # fmt: skip
            beta=step.beta,
            loss_type=[step.loss_type],
            label_smoothing=step.label_smoothing,
            precompute_ref_log_probs=precompute,
        )
        return trainer_class(
            model=model,
            # a reference copy only when it must run during training: with LoRA the
            # adapters are switched off, with precompute TRL scores the untrained policy
            ref_model=None if step.lora or precompute else load_base(step.base_model)[0],
            args=args,
            train_dataset=train_dataset(train_rows, out_dir),
            eval_dataset=train_dataset(eval_rows, out_dir) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=step_adapters(model, step),
            callbacks=[budget, threads_callback()],
        )

    if stored and all(r["ref_key"] in stored for r in rows + held):
        # The rows carry their reference log-probs (TRL's collator passes them on) and the
        # loss reads them from the batch, as after TRL's own precompute: no reference
        # model is loaded, LoRA or full.
        trainer = build(with_stored_refs(rows, stored), with_stored_refs(held, stored), True,
                        StoredReferenceDPOTrainer())  # fmt: skip
        if not any(math.isnan(v) for d in datasets_of(trainer) for v in d["ref_chosen_logps"]):
            log.info("reusing reference log-probs: %s", ref_logps_path)
            return quiet_stdout(trainer), budget
    if stored:
        log.info("some rows have no stored reference log-probs: computing them all")
    trainer = build(rows, held, precompute=step.precompute_ref)
    if step.precompute_ref and ref_logps_path is not None and trainer.is_world_process_zero():
        # every rank holds all rows' log-probs (TRL gathers them); the main one writes
        save_ref_logps(ref_logps_path, datasets_of(trainer), stored)
    return quiet_stdout(trainer), budget


def datasets_of(trainer: Any) -> list[Any]:
    """The trainer's training set, and its held-out set when it has one."""
    return [d for d in (trainer.train_dataset, trainer.eval_dataset) if d is not None]


def train_dpo(
    data: list[dict], step: TrainStepConfig, out_dir: Path, ref_dir: Path | None = None,
    source: dict[str, Any] | None = None, force: bool = False, held: HeldOut | None = None,
) -> Path:
    """Train (or resume, or reuse) DPO; returns `out_dir/model` (a merged HF dir).

    Reference log-probs are kept in `ref_dir` (default: `out_dir/ref_logps`); `source`
    (file, hash, rows) goes into the card's data section; `held` pairs measure what the
    policy learned (training.json's `held_out`). A folder trained with other settings or
    data is refused (BadInput naming what changed) unless `force`."""
    out_dir = Path(out_dir)
    held = held or HeldOut([], "none given")
    data_id = {**rows_identity(dpo_rows(data)), "held_out": rows_identity(dpo_rows(held.rows))}
    identity = step_identity("dpo", step, data_id)
    with training_session(out_dir, identity, force) as done:
        if done is not None:
            return done
        key = ref_logps_key(step.base_model, step.max_length) if step.precompute_ref else None
        ref_path = Path(ref_dir or out_dir / "ref_logps") / f"{key}.jsonl" if key else None
        trainer, budget = make_dpo_trainer(data, step, out_dir, ref_path, held.rows)
        sections = {
            "data": {**(source or {}), "pairs": len(dpo_rows(data)),
                     "reference log-probs": str(ref_path)},  # fmt: skip
            "hyper-parameters": card_settings(step, trainer),
        }
        return train_and_save(trainer, budget, out_dir, step.lora, "DPO model", sections,
                              Measured("dpo", held, step.beta))  # fmt: skip
