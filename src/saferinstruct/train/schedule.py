"""The schedule every trainer here shares: TrainingArguments fields, the time guard,
the threads between steps, per-step log lines on stderr, and the checkpoint to resume from.

    args = SFTConfig(**schedule_args(out_dir, n_rows, 8, 2e-4, 1.0, 256, seed=0))
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import TrainStepConfig
from .hardware import hardware_args
from .tracking import tracking_args

log = logging.getLogger("saferinstruct")


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
    evaluate: bool = False,
    report_to: list[str] | None = None,
) -> dict[str, Any]:
    """The TrainingArguments fields every trainer here shares: a cosine schedule with a
    short warm-up, ~20 log lines and ~5 checkpoints per epoch in `out_dir/checkpoints`
    (for resuming; only the last is kept), no tqdm, precision from the hardware, and
    the trackers `report_to` names (tracking.py: none by default). `extra` (a user's
    optimizer settings, say) overrides any of them. Steps are optimizer steps: with
    gradient accumulation in `extra`, an epoch has n_rows / (batch_size x accumulation)
    of them (warm-up, logging and saving count those, so a 2-step run is not all
    warm-up). With `evaluate`, the held-out pairs are
    measured about four times during training (the held-out curve)."""
    accumulation = max(1, int((extra or {}).get("gradient_accumulation_steps") or 1))
    steps_per_epoch = max(1, -(-n_rows // (batch_size * accumulation)))
    total = max_steps or max(1, int(steps_per_epoch * epochs))
    measured = {"eval_strategy": "steps", "eval_steps": max(1, total // 4),
                "per_device_eval_batch_size": batch_size} if evaluate else {}  # fmt: skip
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
        **tracking_args(report_to or [], Path(out_dir)),
        "seed": seed,
        "disable_tqdm": True,
        **measured,
        **hardware_args(device),
        **(extra or {}),
    }


def learning_rate(step: TrainStepConfig, lora_lr: float, full_lr: float) -> float:
    """The step's learning rate, else the trainer's default for LoRA or full."""
    if step.learning_rate is not None:
        return step.learning_rate
    return lora_lr if step.lora else full_lr


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


def threads_callback() -> Any:
    """A TrainerCallback that sets torch's threads between optimizer steps from what the
    other processes are doing (`threads.CoreWatch`: every core while they are idle), and
    puts back the count it found when training ends: what runs after it in the same
    process (`run` induces right after reverse training) keeps the CLI's choice."""
    import torch
    from transformers import TrainerCallback

    from ..threads import CoreWatch

    class Threads(TrainerCallback):
        def __init__(self) -> None:
            self.watch = CoreWatch()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.before = torch.get_num_threads()
            self.watch.adapt(wait=True)  # at most a second, so that the first step gains
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.watch.adapt()
            return control

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            torch.set_num_threads(self.before)
            return control

    return Threads()


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
