"""SFT on the chosen responses of preference data (the paper's first alignment step).

Rows are TRL conversational preference rows; the trainer sees prompt-completion rows
built from `prompt` and `chosen` only. `rejected` is dropped before the dataset is
built, so it is never a training target. Loss on the completion only. Precision comes
from the hardware (hardware.hardware_args: TRL's bf16 + gradient-checkpointing defaults
are 12x slower on these CPUs). LoRA by default (r=16, alpha=32, lr 2e-4, merged into a
normal HF directory at the end); full fine-tune default lr 2e-5. A killed run resumes
from its last checkpoint; `max_minutes` stops cleanly and saves. Every setting is one
`TrainStepConfig` (the defaults are `config.AlignConfig().sft`: 3 epochs).

    model_dir = train_sft(rows, AlignConfig().sft, Path("runs/align/sft"))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import TrainStepConfig, report_targets
from ..errors import BadInput
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

LORA_LR = 2e-4
FULL_LR = 2e-5


def sft_rows(data: list[dict]) -> list[dict]:
    """Prompt-completion rows: `prompt` and `chosen` only (never `rejected`)."""
    rows = []
    for r in data:
        if not r.get("prompt") or not r.get("chosen"):
            continue
        rows.append({"prompt": list(r["prompt"]), "completion": list(r["chosen"])})
    return rows


def make_sft_trainer(data: list[dict], step: TrainStepConfig, out_dir: Path,
                     held_out: list[dict] | None = None) -> tuple[Any, Any]:  # fmt: skip
    """The TRL SFTTrainer for `step` (not yet trained) and its time budget callback; with
    `held_out` pairs, its evaluation set (the loss on their chosen answers)."""
    from trl import SFTConfig, SFTTrainer

    rows, held_rows = sft_rows(data), sft_rows(held_out or [])
    if not rows:
        raise BadInput("sft: no rows with a prompt and a chosen answer")
    trackers = report_targets(step.report_to, "sft")
    model, tokenizer, _ = load_base(step.base_model)
    lr = learning_rate(step, LORA_LR, FULL_LR)
    args = SFTConfig(
        **schedule_args(out_dir, len(rows), step.batch_size, lr, step.epochs, step.max_length,
                        step.seed, step.trainer_args(), step.base_model.device,
                        step.max_steps, evaluate=bool(held_rows),
                        report_to=trackers),  # fmt: skip
        completion_only_loss=True,
    )
    budget = time_budget_callback(step.max_minutes)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset(rows, out_dir),
        eval_dataset=train_dataset(held_rows, out_dir) if held_rows else None,
        processing_class=tokenizer,
        peft_config=step_adapters(model, step),
        callbacks=[budget, threads_callback()],
    )
    return quiet_stdout(trainer), budget


def train_sft(data: list[dict], step: TrainStepConfig, out_dir: Path,
              source: dict[str, Any] | None = None, force: bool = False,
              held: HeldOut | None = None) -> Path:  # fmt: skip
    """Train (or resume, or reuse) SFT on `chosen`; returns `out_dir/model` (HF dir).
    `source` (file, hash, rows) goes into the card's data section; `held` pairs measure
    the held-out loss before and after. A folder trained with other settings or data is
    refused (BadInput naming what changed) unless `force`."""
    out_dir = Path(out_dir)
    held = held or HeldOut([], "none given")
    data_id = {**rows_identity(sft_rows(data)),
               "held_out": rows_identity(sft_rows(held.rows))}  # fmt: skip
    identity = step_identity("sft", step, data_id)
    with training_session(out_dir, identity, force) as done:
        if done is not None:
            return done
        trainer, budget = make_sft_trainer(data, step, out_dir, held.rows)
        sections = {
            "data": {**(source or {}), "pairs": len(sft_rows(data)),
                     "target": "chosen (rejected never used)"},  # fmt: skip
            "hyper-parameters": card_settings(step, trainer),
        }
        return train_and_save(
            trainer, budget, out_dir, step.lora, "SFT model (trained on the chosen answers "
            "only)", sections, Measured("sft", held),
        )  # fmt: skip
