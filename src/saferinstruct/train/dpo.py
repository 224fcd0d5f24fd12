"""DPO on preference data (the paper's second alignment step, beta 0.1), over TRL.

A thin layer over TRL's DPOTrainer with the same hardware handling as SFT (precision
from the hardware, no gradient checkpointing). With LoRA the reference model is the
base model with its adapters disabled (no second copy in memory); `precompute_ref`
computes the reference log-probs once before training. The result is merged into a
normal HF directory at `out_dir/model`, with a card and a loss plot beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .common import (
    hardware_args,
    load_base,
    lora_config,
    quiet_stdout,
    time_budget_callback,
    train_and_save,
)

log = logging.getLogger("saferinstruct")

LORA_LR = 5e-5
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


def make_dpo_trainer(
    data: list[dict],
    base_model: str,
    out_dir: Path,
    beta: float = 0.1,
    lora: bool = True,
    learning_rate: float | None = None,
    batch_size: int = 4,
    epochs: float = 1.0,
    max_length: int = 256,
    max_minutes: float | None = None,
    seed: int = 0,
    precompute_ref: bool = True,
) -> tuple[Any, Any]:
    """The TRL DPOTrainer (not yet trained) and its time budget callback."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = dpo_rows(data)
    if not rows:
        raise BadInput("dpo: no rows with a prompt, a chosen and a rejected answer")
    hw = hardware_args()
    model, tokenizer, _ = load_base(base_model)
    ref_model = None
    if not lora:
        ref_model = load_base(base_model)[0]
    lr = learning_rate if learning_rate is not None else (LORA_LR if lora else FULL_LR)
    steps_per_epoch = max(1, -(-len(rows) // batch_size))
    args = DPOConfig(
        output_dir=str(Path(out_dir) / "checkpoints"),
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        num_train_epochs=epochs,
        lr_scheduler_type="cosine",
        warmup_steps=min(10, steps_per_epoch // 10),
        max_length=max_length,
        beta=beta,
        precompute_ref_log_probs=precompute_ref,
        logging_steps=max(1, steps_per_epoch // 20),
        save_strategy="steps",
        save_steps=max(5, steps_per_epoch // 5),
        save_total_limit=1,
        report_to=[],
        seed=seed,
        disable_tqdm=True,
        **hw,
    )
    budget = time_budget_callback(max_minutes)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config() if lora else None,
        callbacks=[budget],
    )
    return quiet_stdout(trainer), budget


def train_dpo(
    data: list[dict],
    base_model: str = "embedded",
    out_dir: Path = Path("dpo-out"),
    beta: float = 0.1,
    lora: bool = True,
    learning_rate: float | None = None,
    batch_size: int = 4,
    epochs: float = 1.0,
    max_length: int = 256,
    max_minutes: float | None = None,
    seed: int = 0,
    precompute_ref: bool = True,
) -> Path:
    """Train (or resume, or reuse) DPO; returns `out_dir/model` (a merged HF dir)."""
    out_dir = Path(out_dir)
    final = out_dir / "model"
    if (final / "config.json").exists():
        log.info("DPO model already trained: %s", final)
        return final
    settings = dict(
        base_model=base_model, beta=beta, lora=lora, learning_rate=learning_rate,
        batch_size=batch_size, epochs=epochs, max_length=max_length,
        max_minutes=max_minutes, seed=seed, precompute_ref=precompute_ref,
    )  # fmt: skip
    trainer, budget = make_dpo_trainer(data, out_dir=out_dir, **settings)
    sections = {
        "data": {"pairs": len(dpo_rows(data))},
        "hyper-parameters": {**settings, "learning_rate": trainer.args.learning_rate},
    }
    return train_and_save(trainer, budget, out_dir, lora, "DPO model", sections)
