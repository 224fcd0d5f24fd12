"""DPO on preference data (the paper's second alignment step, beta 0.1), over TRL.

A thin layer over TRL's DPOTrainer with the same hardware handling as SFT (precision
from the hardware, no gradient checkpointing). With LoRA the reference model is the
base model with its adapters disabled (no second copy in memory); `precompute_ref`
computes the reference log-probs once before training. The result is merged into a
normal HF directory at `out_dir/model`, with a card and a loss plot beside it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .common import (
    hardware_args,
    last_checkpoint,
    loss_history,
    plot_losses,
    quiet_stdout,
    time_budget_callback,
    write_card,
)
from .reverse import _lora_config, _save_final

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
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from ..llm.local import resolve_model_path

    rows = dpo_rows(data)
    if not rows:
        raise BadInput("dpo: no rows with a prompt, a chosen and a rejected answer")
    base = resolve_model_path(base_model)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hw = hardware_args()
    dtype = torch.bfloat16 if hw["bf16"] else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)
    ref_model = None
    if not lora:
        ref_model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)
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
        peft_config=_lora_config() if lora else None,
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
    resume = last_checkpoint(out_dir / "checkpoints")
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - start) / 60
    _save_final(trainer, trainer.processing_class, final, lora)
    points = loss_history(trainer.state.log_history)
    plot_losses(points, out_dir / "loss.png", "DPO loss")
    write_card(
        out_dir / "README.md",
        "DPO model",
        {
            "data": {"pairs": len(dpo_rows(data))},
            "hyper-parameters": {**settings, "learning_rate": trainer.args.learning_rate},
            "training": {
                "steps": trainer.state.global_step,
                "minutes": round(minutes, 2),
                "resumed_from": resume,
                "stopped_by_budget": budget.stopped_early,
                "hardware": hardware_args(),
            },
            "loss": points,
            "loss curve": "![loss](loss.png)",
        },
    )
    (out_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return final
