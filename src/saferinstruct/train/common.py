"""What the trainers share: hardware-chosen precision, a time budget, loss plot, card,
and the rules for several processes.

TRL's configs default to `bf16=True` and `gradient_checkpointing=True`, even on a CPU;
on these CPUs (no bf16 matrix units) that made an SFT step 12x slower (DESIGN). We pick
precision from the hardware instead: bf16 on a GPU that supports it, else fp32, and no
gradient checkpointing unless asked.

Under `accelerate launch` (DDP, FSDP or DeepSpeed; configs/accelerate/) every process
trains and only the main one writes the model, card, loss plot, log and training record;
the others wait for it. The time guard stops every process at the same step. A
several-process run records, in training.json, the world size and what each rank saw
(a digest per batch) and held (a digest of its trainable weights), so that anyone can
check the ranks split the data and ended identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import ModelConfig, TrainStepConfig
from ..io import apply_umask, write_atomic

log = logging.getLogger("saferinstruct")


def train_dataset(rows: list[dict[str, Any]], work: Path) -> Any:
    """`rows` as a datasets.Dataset for the trainer. With one process it lives in memory;
    with several, the main process saves it once under work/checkpoints/ and every rank
    memory-maps that copy, so the caches TRL writes beside a dataset (tokenized rows, the
    DPO reference log-probs) are one set of files that all ranks read."""
    from datasets import Dataset, load_from_disk

    if world_size() <= 1:
        return Dataset.from_list(rows)
    from accelerate import PartialState

    blob = json.dumps(rows, sort_keys=True, default=str).encode()
    folder = Path(work) / "checkpoints" / f"rows-{hashlib.sha256(blob).hexdigest()[:16]}"
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not folder.exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            Dataset.from_list(rows).save_to_disk(str(tmp))
            tmp.rename(folder)
    return load_from_disk(str(folder))


def world_size() -> int:
    """Processes in this training (from the launcher's environment; 1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


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
            if max_minutes is None:
                return control
            # every rank must stop at the same step (else the others wait forever)
            if any_rank(args, time.time() - self.start > max_minutes * 60):
                control.should_training_stop = True
                control.should_save = True
                cut = state.global_step < state.max_steps
                if not self.stopped_early and cut and state.is_world_process_zero:
                    log.warning("time guard: max_minutes=%g stopped training at step %d of %d; "
                                "the model is saved but not finished, and the next run resumes "
                                "its training", max_minutes, state.global_step,
                                state.max_steps)  # fmt: skip
                self.stopped_early = cut
            return control

    return TimeBudget()


def any_rank(args: Any, flag: bool) -> bool:
    """Whether `flag` holds on any process (itself when there is one process)."""
    if args.world_size <= 1:
        return flag
    from accelerate.utils import gather_object

    return any(gather_object([flag]))


def quiet_stdout(trainer: Any) -> Any:
    """Send the trainer's per-step log lines to our stderr logger instead of stdout
    (stdout is for results), with numbers only."""
    from transformers import PrinterCallback, TrainerCallback

    class LogToStderr(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and state.is_world_process_zero:
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
    """Save a normal HF directory (LoRA merged) at `final`, from the main process only.

    With DDP (or one process) every rank holds the whole model and the main one writes
    it; with FSDP or DeepSpeed the weights are sharded, so every rank takes part in
    Trainer.save_model, which gathers them (LoRA: the adapter, merged afterwards)."""
    if is_sharded(trainer):
        tmp = shared_temp_dir(trainer, final)
        trainer.save_model(str(tmp))
        if trainer.is_world_process_zero():
            gathered_into_place(tmp, final, lora)
    elif trainer.is_world_process_zero():
        write_model(trainer.model.merge_and_unload() if lora else trainer.model,
                    trainer.processing_class, final)  # fmt: skip
    trainer.accelerator.wait_for_everyone()


def write_model(model: Any, tokenizer: Any, final: Path) -> None:
    """Write model and tokenizer atomically: into a fresh temp folder beside `final`
    (unique per process), then renamed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(tmp: Path, final: Path) -> None:
    """Replace `final` by the finished folder `tmp`, with the user's umask (mkdtemp is
    0700, safetensors writes 0600)."""
    apply_umask(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def is_sharded(trainer: Any) -> bool:
    """Whether the weights are split across the processes (FSDP or DeepSpeed): saving
    then gathers them, and no rank holds them whole."""
    return bool(trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)


def shared_temp_dir(trainer: Any, final: Path) -> Path:
    """A fresh folder beside `final` made by the main process; its name is sent to the
    others (they write nothing into it: Trainer.save_model writes from the main one)."""
    from accelerate.utils import broadcast_object_list

    name = [None]
    if trainer.is_world_process_zero():
        final.parent.mkdir(parents=True, exist_ok=True)
        name = [tempfile.mkdtemp(prefix=f".{final.name}.gather.", dir=final.parent)]
    return Path(broadcast_object_list(name)[0])


def gathered_into_place(tmp: Path, final: Path, lora: bool) -> None:
    """Move what Trainer.save_model gathered into `final`: a full model as it is, a LoRA
    adapter merged into its base model first."""
    try:
        if lora:
            from peft import AutoPeftModelForCausalLM
            from transformers import AutoTokenizer

            merged = AutoPeftModelForCausalLM.from_pretrained(str(tmp)).merge_and_unload()
            write_model(merged, AutoTokenizer.from_pretrained(str(tmp)), final)
        else:
            move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def record_batches(trainer: Any) -> list[str]:
    """Digests of the batches this process trains on, appended as they come (a wrapper
    around the trainer's compute_loss; token ids only)."""
    seen: list[str] = []
    inner = trainer.compute_loss

    def compute_loss(model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
        seen.append(batch_digest(inputs))
        return inner(model, inputs, *args, **kw)

    trainer.compute_loss = compute_loss
    return seen


def batch_digest(inputs: dict[str, Any]) -> str:
    """sha256 (12 hex) of a batch's integer tensors, by key."""
    h = hashlib.sha256()
    for key in sorted(inputs):
        value = inputs[key]
        if hasattr(value, "is_floating_point") and not value.is_floating_point():
            h.update(key.encode())
            h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def trainable_digest(model: Any) -> str:
    """sha256 (12 hex) of the trainable weights, by name: equal on every DDP rank."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda np: np[0]):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def ranks_record(trainer: Any, batches: list[str]) -> dict[str, Any] | None:
    """What each process saw and holds, gathered on every rank (None with one process).
    Weights are digested only where each rank holds them whole (not FSDP/DeepSpeed)."""
    if trainer.args.world_size <= 1:
        return None
    from accelerate.utils import gather_object

    weights = None if is_sharded(trainer) else trainable_digest(trainer.model)
    mine = {"rank": trainer.args.process_index, "batches": batches, "trainable_sha256": weights}
    return {"world_size": trainer.args.world_size,
            "distributed_type": trainer.accelerator.distributed_type.value,
            "ranks": sorted(gather_object([mine]), key=lambda r: r["rank"])}  # fmt: skip


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
    for the next call to resume from). Under several processes every one trains and the
    main one writes; all return when the files are in place."""
    final = work / "model"
    resume = last_checkpoint(work / "checkpoints")
    batches = record_batches(trainer) if trainer.args.world_size > 1 else []
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - start) / 60
    ranks = ranks_record(trainer, batches)
    save_final(trainer, final, lora)
    facts = {"minutes": round(minutes, 2), "resumed_from": resume}
    if trainer.is_world_process_zero():
        write_training_files(trainer, budget, work, title, sections, facts, ranks)
    trainer.accelerator.wait_for_everyone()
    return final


def write_training_files(trainer: Any, budget: Any, work: Path, title: str,
                         sections: dict[str, Any], facts: dict[str, Any],
                         ranks: dict[str, Any] | None) -> None:  # fmt: skip
    """The main process's files beside the model: loss.png, README.md (the card),
    train_log.json and training.json; the checkpoints go when the training finished."""
    points = loss_history(trainer.state.log_history)
    plot_losses(points, work / "loss.png", f"{title}: loss")
    training = {
        "steps": trainer.state.global_step,
        **facts,
        "stopped_by_budget": budget.stopped_early,
        "hardware": effective_hardware(trainer.args),
    }
    if ranks:
        training["world_size"] = ranks["world_size"]
    card = {**sections, "training": training, "loss": points, "loss curve": "![loss](loss.png)"}
    write_card(work / "README.md", title, card)
    write_atomic(work / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
    record = {"complete": not budget.stopped_early, "steps": trainer.state.global_step,
              "planned_steps": trainer.state.max_steps}  # fmt: skip
    if ranks:
        record["distributed"] = ranks
    write_atomic(work / TRAINING_RECORD, json.dumps(record))
    if not budget.stopped_early:
        shutil.rmtree(work / "checkpoints", ignore_errors=True)


def learning_rate(step: TrainStepConfig, lora_lr: float, full_lr: float) -> float:
    """The step's learning rate, else the trainer's default for LoRA or full."""
    if step.learning_rate is not None:
        return step.learning_rate
    return lora_lr if step.lora else full_lr


def card_settings(step: TrainStepConfig, trainer: Any) -> dict[str, Any]:
    """The settings a training card shows: every field, the learning rate as used."""
    return {**dataclasses.asdict(step), "learning_rate": trainer.args.learning_rate}
