"""What the trainers share: hardware-chosen precision, a time budget, loss plot, card.

TRL's configs default to `bf16=True` and `gradient_checkpointing=True`, even on a CPU;
on these CPUs (no bf16 matrix units) that made an SFT step 12x slower (DESIGN). We pick
precision from the hardware instead: bf16 on a GPU that supports it, else fp32, and no
gradient checkpointing unless asked.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("saferinstruct")


def hardware_args() -> dict[str, Any]:
    """TrainingArguments fields that depend on the machine."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return {
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": not cuda,
        "dataloader_num_workers": 0,
    }


def time_budget_callback(max_minutes: float | None) -> Any:
    """A TrainerCallback that stops training cleanly (and saves) after `max_minutes`."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.time()
            self.stopped_early = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if max_minutes is not None and time.time() - self.start > max_minutes * 60:
                control.should_training_stop = True
                control.should_save = True
                self.stopped_early = True
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_card(path: Path, title: str, sections: dict[str, Any]) -> Path:
    """A Markdown training card: one section per key, values as JSON blocks or text."""
    lines = [f"# {title}", ""]
    for name, value in sections.items():
        lines += [f"## {name}", ""]
        if isinstance(value, str):
            lines += [value, ""]
        else:
            lines += ["```json", json.dumps(value, indent=2, default=str), "```", ""]
    path.write_text("\n".join(lines))
    return path
