"""Where a training's curves go besides loss.png: TRL's `report_to`, in the training folder.

`report_to` (a field of `reverse-train`, `sft` and `dpo`; `--report-to` on the command
line) names trackers, comma separated: `none` (the default), `tensorboard`, `trackio`,
`wandb`. Every one logs to local files under `OUT/tracking/`, no account needed:

    OUT/tracking/tensorboard/   event files:  tensorboard --logdir OUT/tracking/tensorboard
    OUT/tracking/trackio/       trackio's database (unless TRACKIO_DIR says elsewhere):
                                TRACKIO_DIR=OUT/tracking/trackio trackio show
    OUT/tracking/wandb/         an offline wandb run (WANDB_MODE=offline unless set):
                                wandb sync OUT/tracking/wandb/wandb/offline-run-*

training.json and the model card say which trackers ran and where their files are. The
tracker is not part of the training's identity: it changes no weight.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..config import REPORT_TO

FOLDER = "tracking"
"""The tracking folder inside a training folder (its trackers' files, one folder each)."""
PROJECT = "safer-instruct"
"""The project name trackio and wandb file the runs under."""


def tracking_args(targets: list[str], work: Path) -> dict[str, Any]:
    """The TrainingArguments fields for `targets`, their files under `work/tracking`
    (trackio's and wandb's folders go through their environment variables, set here
    unless the user set them)."""
    if not targets:
        return {"report_to": []}
    folder = Path(work).resolve() / FOLDER
    if "trackio" in targets and "trackio" not in sys.modules:  # it reads TRACKIO_DIR on import
        os.environ.setdefault("TRACKIO_DIR", str(folder / "trackio"))
    if "wandb" in targets:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(folder / "wandb"))
        (folder / "wandb").mkdir(parents=True, exist_ok=True)
    return {"report_to": targets, "run_name": Path(work).resolve().name, "project": PROJECT}


def tracker_folder(name: str, work: Path) -> str:
    """Where tracker `name` writes for the training in `work`: TensorBoard's folder under
    `work/tracking` (or TENSORBOARD_LOGGING_DIR), trackio's and wandb's as their
    environment variables say (`tracking_args` sets them unless the user did)."""
    if name == "tensorboard":
        return os.environ.get("TENSORBOARD_LOGGING_DIR") or str(
            Path(work).resolve() / FOLDER / "tensorboard")  # fmt: skip
    variable = {"trackio": "TRACKIO_DIR", "wandb": "WANDB_DIR"}[name]
    return os.environ.get(variable) or f"{name}'s default folder"


def point_tensorboard(trainer: Any, work: Path) -> None:
    """Send the TensorBoard callback's event files to `tracker_folder` (transformers
    would put them among the checkpoints, which go when training ends)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = tracker_folder("tensorboard", work)


def tracking_record(trainer: Any, work: Path) -> dict[str, Any] | None:
    """What training.json and the card say about the trackers: which ran, and where
    each one's files are (None when none ran)."""
    targets = [t for t in trainer.args.report_to if t in REPORT_TO]
    if not targets:
        return None
    return {"report_to": targets, "project": PROJECT, "run_name": trainer.args.run_name,
            "folders": {name: tracker_folder(name, work) for name in targets}}  # fmt: skip


def tracking_links(record: dict[str, Any], work: Path) -> str:
    """The card's tracking section: each tracker and a link to its files (relative to the
    training folder when they are inside it)."""
    lines = []
    for name, folder in record["folders"].items():
        path = Path(folder)
        if path.is_absolute() and path.is_relative_to(Path(work).resolve()):
            folder = path.relative_to(Path(work).resolve()).as_posix()
            lines.append(f"- {name}: [{folder}]({folder})")
        else:
            lines.append(f"- {name}: {folder}")
    return "\n".join([f"Run `{record['run_name']}` of project `{record['project']}`.", "",
                      *lines])
