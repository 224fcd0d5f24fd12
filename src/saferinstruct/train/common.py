"""What the trainers share: hardware-chosen precision, a time budget, loss plot, card.

TRL's configs default to `bf16=True` and `gradient_checkpointing=True`, even on a CPU;
on these CPUs (no bf16 matrix units) that made an SFT step 12x slower (DESIGN). We pick
precision from the hardware instead: bf16 on a GPU that supports it, else fp32, and no
gradient checkpointing unless asked.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import ModelConfig, TrainStepConfig
from ..io import apply_umask, write_atomic

log = logging.getLogger("saferinstruct")


def hardware_args(device: str = "auto") -> dict[str, Any]:
    """TrainingArguments fields that depend on the machine (`device` 'cpu' keeps a
    GPU machine's training on the CPU)."""
    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return {
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": not cuda,
        "dataloader_num_workers": 0,
    }


def schedule_args(
    out_dir: Path,
    n_rows: int,
    batch_size: int,
    learning_rate: float,
    epochs: float,
    max_length: int,
    seed: int,
    extra: dict[str, Any] | None = None,
    device: str = "auto",
    max_steps: int | None = None,
) -> dict[str, Any]:
    """The TrainingArguments fields every trainer here shares: a cosine schedule with a
    short warm-up, ~20 log lines and ~5 checkpoints per epoch in `out_dir/checkpoints`
    (for resuming; only the last is kept), no reporting or tqdm, precision from the
    hardware. `extra` (a user's optimizer settings, say) overrides any of them. Steps
    are optimizer steps: with gradient accumulation in `extra`, an epoch has
    n_rows / (batch_size x accumulation) of them (warm-up, logging and saving count
    those, so a 2-step run is not all warm-up)."""
    accumulation = max(1, int((extra or {}).get("gradient_accumulation_steps") or 1))
    steps_per_epoch = max(1, -(-n_rows // (batch_size * accumulation)))
    return {
        "output_dir": str(Path(out_dir) / "checkpoints"),
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "max_steps": max_steps if max_steps else -1,
        "lr_scheduler_type": "cosine",
        "warmup_steps": min(10, steps_per_epoch // 10),
        "max_length": max_length,
        "logging_steps": max(1, steps_per_epoch // 20),
        "save_strategy": "steps",
        "save_steps": max(5, steps_per_epoch // 5),
        "save_total_limit": 1,
        "report_to": [],
        "seed": seed,
        "disable_tqdm": True,
        **hardware_args(device),
        **(extra or {}),
    }


def time_budget_callback(max_minutes: float | None) -> Any:
    """A TrainerCallback that stops training cleanly (and saves) after `max_minutes`: a
    guard, not a budget. What it cuts is said loudly, and a model it cut is not finished
    (`finished_model`): the next call resumes its training from the checkpoint."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.time()
            self.stopped_early = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if max_minutes is not None and time.time() - self.start > max_minutes * 60:
                control.should_training_stop = True
                control.should_save = True
                if not self.stopped_early and state.global_step < state.max_steps:
                    log.warning("time guard: max_minutes=%g stopped training at step %d of %d; "
                                "the model is saved but not finished, and the next run resumes "
                                "its training", max_minutes, state.global_step,
                                state.max_steps)  # fmt: skip
                self.stopped_early = state.global_step < state.max_steps
            return control

    return TimeBudget()


def quiet_stdout(trainer: Any) -> Any:
    """Send the trainer's per-step log lines to our stderr logger instead of stdout
    (stdout is for results), with numbers only."""
    from transformers import PrinterCallback, TrainerCallback

    class LogToStderr(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs:
                nums = {k: round(v, 4) for k, v in logs.items() if isinstance(v, int | float)}
                log.info("step %d: %s", state.global_step, json.dumps(nums))

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogToStderr())
    return trainer


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` folder in `output_dir`, for resuming."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    return get_last_checkpoint(str(output_dir))


def loss_history(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def plot_losses(points: list[tuple[int, float]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        steps, losses = zip(*points, strict=True)
        ax.plot(steps, losses, marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


def write_card(path: Path, title: str, sections: dict[str, Any]) -> Path:
    """A Markdown training card: one section per key, values as JSON blocks or text."""
    lines = [f"# {title}", ""]
    for name, value in sections.items():
        lines += [f"## {name}", ""]
        if isinstance(value, str):
            lines += [value, ""]
        else:
            lines += ["```json", json.dumps(value, indent=2, default=str), "```", ""]
    return write_atomic(path, "\n".join(lines))


def load_base(base_model: ModelConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, dtype) of the base model: in its config's dtype, or with
    `dtype: auto` in the precision the hardware wants."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..llm.local import resolve_model_path

    base = resolve_model_path(base_model.model)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.float32
    if base_model.dtype != "auto":
        dtype = getattr(torch, base_model.dtype)
    elif hardware_args(base_model.device)["bf16"]:
        params = parameter_count(base)
        gpu = torch.cuda.get_device_properties(0).total_memory
        dtype = torch.float32 if fp32_training_fits(params, gpu) else torch.bfloat16
        log.info("%.2fB parameters: %s weights, bf16 autocast", params / 1e9, dtype)
    return AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype), tokenizer, dtype


FP32_TRAINING_BYTES = 16
"""Per parameter, full fine-tune with AdamW in fp32: weights 4, gradients 4, moments 8."""


def fp32_training_fits(params: int, gpu_bytes: int, share: float = 0.5) -> bool:
    """Whether fp32 master weights (with bf16 autocast: mixed precision) fit a GPU.

    They do when weights, gradients and optimizer state take at most `share` of its
    memory (the rest for activations). Pure bf16 weights round small updates away
    (reverse tuning of the 135M model on 800 pairs: 0.284 / 0.589 with bf16 weights on
    an H100, 0.331 / 0.655 in fp32 on a CPU; other library versions there too), so they
    are kept for models that would not fit otherwise, such as a 7B full fine-tune on one
    80 GB card."""
    return params * FP32_TRAINING_BYTES <= share * gpu_bytes


def parameter_count(model_dir: Path) -> int:
    """Parameters of the model in `model_dir`, counted on the meta device (no weights
    are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def lora_config(model: Any = None, top_fraction: float = 1.0) -> Any:
    """LoRA on every attention and MLP projection (r 16, alpha 32).

    With `top_fraction` < 1, only the top share of `model`'s layers get adapters: the
    backward pass then stops at the lowest adapted layer and the layers below run
    without keeping activations, which is most of a CPU step (benchmarks/dpo_speed.py)."""
    from peft import LoraConfig

    layers = None
    if top_fraction < 1.0:
        if not 0.0 < top_fraction:
            raise ValueError("top_fraction must be in (0, 1]")
        n = int(model.config.get_text_config().num_hidden_layers)
        k = max(1, round(n * top_fraction))
        layers = list(range(n - k, n))
    return LoraConfig(
        layers_to_transform=layers,
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],  # fmt: skip
        task_type="CAUSAL_LM",
    )


def save_final(trainer: Any, final: Path, lora: bool) -> None:
    """Save a normal HF directory (LoRA merged), atomically: into a fresh temp folder
    beside it (unique per process), then renamed."""
    model = trainer.model
    if lora:
        model = model.merge_and_unload()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        model.save_pretrained(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        apply_umask(tmp)  # mkdtemp is 0700, safetensors writes 0600
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def effective_hardware(args: Any) -> dict[str, Any]:
    """What the trainer really ran with (a config's trainer_args can override the
    hardware defaults, e.g. gradient checkpointing for the 7B config)."""
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return {
        "device": str(args.device),
        "precision": precision,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }


TRAINING_RECORD = "training.json"
"""Beside a trained model: whether its training finished (steps done and planned)."""


def finished_model(work: Path) -> Path | None:
    """`work/model` when its training ran to the end; None when absent or cut short by
    the time guard (older models without a record: read from their card)."""
    final = Path(work) / "model"
    if not (final / "config.json").exists():
        return None
    record = Path(work) / TRAINING_RECORD
    if record.exists():
        try:
            return final if json.loads(record.read_text()).get("complete") else None
        except ValueError:
            return None
    card = Path(work) / "README.md"
    cut = card.exists() and '"stopped_by_budget": true' in card.read_text()
    return None if cut else final


def train_and_save(
    trainer: Any, budget: Any, work: Path, lora: bool, title: str, sections: dict[str, Any]
) -> Path:
    """Train (resuming from work/checkpoints), save work/model, then the loss curve, the
    card (`sections` first, then training facts and losses), the log and the training
    record; drop the checkpoints, unless the time guard cut the training (then they stay,
    for the next call to resume from)."""
    final = work / "model"
    resume = last_checkpoint(work / "checkpoints")
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - start) / 60
    save_final(trainer, final, lora)
    points = loss_history(trainer.state.log_history)
    plot_losses(points, work / "loss.png", f"{title}: loss")
    training = {
        "steps": trainer.state.global_step,
        "minutes": round(minutes, 2),
        "resumed_from": resume,
        "stopped_by_budget": budget.stopped_early,
        "hardware": effective_hardware(trainer.args),
    }
    card = {**sections, "training": training, "loss": points, "loss curve": "![loss](loss.png)"}
    write_card(work / "README.md", title, card)
    write_atomic(work / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
    record = {"complete": not budget.stopped_early, "steps": trainer.state.global_step,
              "planned_steps": trainer.state.max_steps}  # fmt: skip
    write_atomic(work / TRAINING_RECORD, json.dumps(record))
    if not budget.stopped_early:
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return final


def learning_rate(step: TrainStepConfig, lora_lr: float, full_lr: float) -> float:
    """The step's learning rate, else the trainer's default for LoRA or full."""
    if step.learning_rate is not None:
        return step.learning_rate
    return lora_lr if step.lora else full_lr


def card_settings(step: TrainStepConfig, trainer: Any) -> dict[str, Any]:
    """The settings a training card shows: every field, the learning rate as used."""
    return {**dataclasses.asdict(step), "learning_rate": trainer.args.learning_rate}
