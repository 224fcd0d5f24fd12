"""A training's output folder (`--out`, or the reverse model's folder in the user cache):
what made it, and what it holds.

    DIR/run.json        identity (settings, base model, data, package versions) and status
    DIR/model/          the trained model (a normal HF directory, LoRA merged)
    DIR/README.md       the card; loss.png, train_log.json, training.json beside it
    DIR/checkpoints/    while training (a killed or time-cut run resumes from them)

`training_session` opens the folder as every writer does (`OutputDir.begin`): the same
identity resumes a cut training or reuses a finished model; another identity is refused
with the changed fields named (exit 2) unless `force`, which starts the folder afresh.
A model is finished when the folder says `complete` (a time-guard cut leaves it
`running`). Under several processes the main one holds the lock and writes; the others
read the folder after it.

    with training_session(out, training_identity("sft", step, data), force) as done:
        model = done or train_and_save(...)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainStepConfig, without_transport
from ..errors import BadInput
from ..io import write_atomic
from ..llm.fingerprint import fingerprint
from ..rundir import OutputDir, identity_changes, package_versions
from .hardware import effective_hardware
from .held_out import HeldOut, summary
from .ranks import ranks_record, record_batches, world_size
from .saving import save_final
from .schedule import last_checkpoint
from .tracking import FOLDER as TRACKING
from .tracking import point_tensorboard, tracking_links, tracking_record

log = logging.getLogger("saferinstruct")


RESULT_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate")
"""The packages whose versions change a trained model (in every training identity)."""


HELD_OUT_BEFORE = "held_out_before.json"
"""The untrained policy's held-out metrics, kept while a training may still resume."""
MODEL = "model"
CHECKPOINTS = "checkpoints"


TRAINING_RECORD = "training.json"
"""Beside a trained model: whether its training finished (steps done and planned)."""
TRAINING_OUTPUTS = (MODEL, CHECKPOINTS, "README.md", "loss.png", "train_log.json",
                    TRAINING_RECORD, HELD_OUT_BEFORE, "ref_logps", TRACKING)
"""Everything a training writes in its folder (what `--force` clears)."""


NOT_WEIGHTS = ("max_minutes", "report_to")
"""Settings that change no weight (a guard, the trackers): left out of the identity."""


def training_identity(command: str, settings: dict[str, Any], base_model: str,
                      data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What a trained model depends on: the command, its weight-changing settings (the
    `NOT_WEIGHTS` and how the base model is reached left out), the base model's
    fingerprint (path and content hash), the data (content hash and rows) and
    `RESULT_PACKAGES`' versions."""
    settings = without_transport({k: v for k, v in settings.items() if k not in NOT_WEIGHTS})
    if isinstance(settings.get("base_model"), dict):
        settings["base_model"] = {k: v for k, v in settings["base_model"].items()
                                  if k != "model"}  # fmt: skip
    return json.loads(json.dumps({
        "command": command, "settings": settings, "base_model": fingerprint(base_model),
        "data": data, "versions": package_versions(RESULT_PACKAGES),
    }, default=str))  # fmt: skip


def step_identity(command: str, step: TrainStepConfig, data: dict[str, Any]) -> dict[str, Any]:
    """`training_identity` of an `sft` or `dpo` step."""
    return training_identity(command, dataclasses.asdict(step), step.base_model.model, data)


def rows_identity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The data a trainer sees: a digest of its rows in order, and their count."""
    blob = json.dumps(rows, sort_keys=True, default=str).encode()
    return {"rows_sha256": hashlib.sha256(blob).hexdigest()[:16], "rows": len(rows)}


@contextmanager
def training_session(work: Path, identity: dict[str, Any], force: bool = False,
                     owned: bool = False) -> Iterator[Path | None]:  # fmt: skip
    """Open a training folder; yields its finished model when it holds one made with
    `identity`, else None (train, then `train_and_save` marks it complete). A folder
    made otherwise: BadInput naming what changed, unless `force` (or `owned`: a folder
    of the user cache keyed by its settings, started afresh when anything else differs,
    such as the package versions)."""
    out = OutputDir(work, TRAINING_OUTPUTS)
    main = int(os.environ.get("RANK", "0")) == 0
    with ExitStack() as stack:
        if main:
            stack.enter_context(out.lock())
        first = nullcontext() if world_size() <= 1 else _main_process_first()
        with first:
            done = open_training(out, identity, force or owned, main, owned)
        yield done


def _main_process_first() -> Any:
    from accelerate import PartialState

    return PartialState().main_process_first()


def open_training(out: OutputDir, identity: dict[str, Any], force: bool, main: bool,
                  owned: bool = False) -> Path | None:  # fmt: skip
    """The finished model when `out` holds one made with `identity`; else None, after
    `begin` (the main process: refuses or clears, then marks the folder running)."""
    if owned and main:
        adopt_legacy(out, identity)
    state = out.read_state()
    changed = identity_changes(state, identity)
    model = out.root / MODEL
    if not changed and out.complete() and (model / "config.json").exists():
        log.info("%s: already trained with these settings (reused)", model)
        return model
    if not state and (model / "config.json").exists() and not force:
        raise BadInput(f"{out.root} holds a model with no record of its settings: write to "
                       "a new --out, or add --force to train afresh")  # fmt: skip
    if main:
        out.begin(identity, force)
    else:
        out.refuses(identity, force)  # the main process's refusal, on this rank too
    return None


def legacy_finished(out: OutputDir) -> bool | None:
    """Whether a folder trained before run.json existed finished, by its training.json
    (None: it has run.json, or no readable record)."""
    if out.state.exists():
        return None
    try:
        return bool(json.loads((out.root / TRAINING_RECORD).read_text()).get("complete"))
    except (OSError, ValueError):
        return None


def adopt_legacy(out: OutputDir, identity: dict[str, Any]) -> None:
    """A cache folder trained before identities were kept (training.json, no run.json)
    is taken as made with `identity`: its key has every setting."""
    finished = legacy_finished(out)
    if finished is not None:
        out.mark("complete" if finished else "running", identity)


def finished_model(work: Path) -> Path | None:
    """`work/model` when its training ran to the end (the folder says complete, or, for a
    reverse model of the cache from before run.json, its training.json); None when absent
    or cut short by the time guard."""
    out = OutputDir(work)
    final = out.root / MODEL
    if not (final / "config.json").exists():
        return None
    finished = out.complete() if out.state.exists() else legacy_finished(out)
    return final if finished else None


@dataclass(frozen=True)
class Measured:
    """How a training is measured on its held-out pairs (`held_out.py`): which trainer's
    metrics, the pairs' origin, and DPO's beta (rewards / beta = log-prob change)."""

    kind: str
    held: HeldOut
    beta: float | None = None


def train_and_save(
    trainer: Any, budget: Any, work: Path, lora: bool, title: str, sections: dict[str, Any],
    measured: Measured | None = None,
) -> Path:
    """Train (resuming from work/checkpoints), save work/model, then the loss curve, the
    card (`sections` first, then training facts and losses), the log and the training
    record; drop the checkpoints, unless the time guard cut the training (then they stay,
    for the next call to resume from). With held-out pairs (`measured`), the policy is
    measured on them before and after training, and the record says what it learned.
    Under several processes every one trains and the main one writes; all return when
    the files are in place."""
    final = work / MODEL
    resume = last_checkpoint(work / CHECKPOINTS)
    batches = record_batches(trainer) if trainer.args.world_size > 1 else []
    evaluate = measured is not None and trainer.eval_dataset is not None
    before = measure_before(trainer, work, resume) if evaluate else None
    point_tensorboard(trainer, work)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - start) / 60
    after = trainer.evaluate() if evaluate else None
    ranks = ranks_record(trainer, batches)
    save_final(trainer, final, lora)
    facts: dict[str, Any] = {"minutes": round(minutes, 2), "resumed_from": resume}
    if measured is not None:
        facts["held_out"] = summary(measured.kind, before, after, measured.held, measured.beta)
    if trainer.is_world_process_zero():
        write_training_files(trainer, budget, work, title, sections, facts, ranks)
    trainer.accelerator.wait_for_everyone()
    return final


def measure_before(trainer: Any, work: Path, resume: str | None) -> dict[str, Any]:
    """The held-out metrics of the untrained policy: measured now, or read back when the
    training resumes (the policy of a checkpoint is no longer untrained)."""
    path = work / HELD_OUT_BEFORE
    if resume and path.exists():
        return json.loads(path.read_text())
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        write_atomic(path, json.dumps(metrics))
    return metrics


def write_training_files(trainer: Any, budget: Any, work: Path, title: str,
                         sections: dict[str, Any], facts: dict[str, Any],
                         ranks: dict[str, Any] | None) -> None:  # fmt: skip
    """The main process's files beside the model: loss.png, README.md (the card),
    train_log.json and training.json; the checkpoints go when the training finished."""
    points = loss_history(trainer.state.log_history)
    held_points = loss_history(trainer.state.log_history, "eval_loss")
    plot_losses(points, work / "loss.png", f"{title}: loss", held_points)
    held_out = facts.pop("held_out", None)
    training = {
        "steps": trainer.state.global_step,
        **facts,
        "stopped_by_budget": budget.stopped_early,
        "hardware": effective_hardware(trainer.args),
    }
    if ranks:
        training["world_size"] = ranks["world_size"]
    tracking = tracking_record(trainer, work)
    for warning in (held_out or {}).get("warnings", []):
        log.warning("%s: %s", title.split(" (")[0], warning)
    card = {**sections, "training": training, "loss": points, "loss curve": "![loss](loss.png)"}
    if held_out is not None:
        card["held-out pairs: what training learned"] = held_out
    if tracking is not None:
        card["tracking"] = tracking_links(tracking, work)
    write_card(work / "README.md", title, card)
    write_atomic(work / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
    record = {"complete": not budget.stopped_early, "steps": trainer.state.global_step,
              "planned_steps": trainer.state.max_steps}  # fmt: skip
    if held_out is not None:
        record["held_out"] = held_out
    if ranks:
        record["distributed"] = ranks
    if tracking is not None:
        record["tracking"] = tracking
    write_atomic(work / TRAINING_RECORD, json.dumps(record))
    if not budget.stopped_early:
        shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
        (work / HELD_OUT_BEFORE).unlink(missing_ok=True)
        OutputDir(work).finish()


def loss_history(log_history: list[dict[str, Any]],
                 key: str = "loss") -> list[tuple[int, float]]:  # fmt: skip
    """(step, value) of one logged quantity: the training loss, or `eval_loss` (the
    held-out pairs')."""
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def plot_losses(points: list[tuple[int, float]], path: Path, title: str,
                held_out: list[tuple[int, float]] | None = None) -> Path:  # fmt: skip
    """The training loss by step, and the held-out pairs' loss beside it when measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for series, label in ((points, "training"), (held_out or [], "held-out pairs")):
        if series:
            steps, losses = zip(*series, strict=True)
            ax.plot(steps, losses, marker="o", markersize=3, label=label)
    if held_out:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
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


def card_settings(step: TrainStepConfig, trainer: Any) -> dict[str, Any]:
    """The settings a training card shows: every field, the learning rate as used."""
    return {**dataclasses.asdict(step), "learning_rate": trainer.args.learning_rate}
