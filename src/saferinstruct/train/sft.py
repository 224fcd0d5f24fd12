"""SFT on the chosen responses of preference data (the paper's first alignment step).

Rows are TRL conversational preference rows; the trainer sees prompt-completion rows
built from `prompt` and `chosen` only. `rejected` is dropped before the dataset is
built, so it is never a training target. Loss on the completion only. Precision comes
from the hardware (common.hardware_args: TRL's bf16 + gradient-checkpointing defaults
are 12x slower on these CPUs). LoRA by default (r=16, alpha=32, lr 2e-4, merged into a
normal HF directory at the end); full fine-tune default lr 2e-5. A killed run resumes
from its last checkpoint; `max_minutes` stops cleanly and saves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .common import (
    load_base,
    lora_config,
    quiet_stdout,
    schedule_args,
    time_budget_callback,
    train_and_save,
)

log = logging.getLogger("saferinstruct")

LORA_LR = 2e-4
FULL_LR = 2e-5
EPOCHS = 3.0  # one moved the embedded model's refusal rate half as far (docs/benchmarks.md)


def sft_rows(data: list[dict]) -> list[dict]:
    """Prompt-completion rows: `prompt` and `chosen` only (never `rejected`)."""
    rows = []
    for r in data:
        if not r.get("prompt") or not r.get("chosen"):
            continue
        rows.append({"prompt": list(r["prompt"]), "completion": list(r["chosen"])})
    return rows


def make_sft_trainer(
    data: list[dict],
    base_model: str,
    out_dir: Path,
    lora: bool = True,
    learning_rate: float | None = None,
    batch_size: int = 8,
    epochs: float = EPOCHS,
    max_length: int = 256,
    max_minutes: float | None = None,
    seed: int = 0,
    trainer_args: dict[str, Any] | None = None,
    lora_top_fraction: float = 1.0,
) -> tuple[Any, Any]:
    """The TRL SFTTrainer (not yet trained) and its time budget callback."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = sft_rows(data)
    if not rows:
        raise BadInput("sft: no rows with a prompt and a chosen answer")
    model, tokenizer, _ = load_base(base_model)
    lr = learning_rate if learning_rate is not None else (LORA_LR if lora else FULL_LR)
    args = SFTConfig(
        **schedule_args(
            out_dir, len(rows), batch_size, lr, epochs, max_length, seed, trainer_args
        ),  # fmt: skip
        completion_only_loss=True,
    )
    budget = time_budget_callback(max_minutes)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(model, lora_top_fraction) if lora else None,
        callbacks=[budget],
    )
    return quiet_stdout(trainer), budget


def train_sft(
    data: list[dict],
    base_model: str = "embedded",
    out_dir: Path = Path("sft-out"),
    lora: bool = True,
    learning_rate: float | None = None,
    batch_size: int = 8,
    epochs: float = EPOCHS,
    max_length: int = 256,
    max_minutes: float | None = None,
    seed: int = 0,
    trainer_args: dict[str, Any] | None = None,
    lora_top_fraction: float = 1.0,
) -> Path:
    """Train (or resume, or reuse) SFT on `chosen`; returns `out_dir/model` (HF dir)."""
    out_dir = Path(out_dir)
    final = out_dir / "model"
    if (final / "config.json").exists():
        log.info("SFT model already trained: %s", final)
        return final
    settings = dict(
        base_model=base_model, lora=lora, learning_rate=learning_rate, batch_size=batch_size,
        epochs=epochs, max_length=max_length, max_minutes=max_minutes, seed=seed,
        trainer_args=trainer_args, lora_top_fraction=lora_top_fraction,
    )  # fmt: skip
    trainer, budget = make_sft_trainer(data, out_dir=out_dir, **settings)
    sections = {
        "data": {"pairs": len(sft_rows(data)), "target": "chosen (rejected never used)"},
        "hyper-parameters": {**settings, "learning_rate": trainer.args.learning_rate},
    }
    return train_and_save(
        trainer, budget, out_dir, lora, "SFT model (trained on the chosen answers only)", sections
    )
