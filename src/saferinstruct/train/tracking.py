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

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from ..config import REPORT_TO, report_targets
from ..errors import BadInput

FOLDER = "tracking"
"""The tracking folder inside a training folder (its trackers' files, one folder each)."""
PROJECT = "safer-instruct"
"""The project name trackio and wandb file the runs under."""


def parse_report_to(value: str, where: str) -> list[str]:
    """The trackers named in `value` (`none` -> []); BadInput for an unknown one or one
    whose package is not installed, before any model loads."""
    targets = report_targets(value, where)
    for name in targets:
        if importlib.util.find_spec(name) is None:
            raise BadInput(f"{where}.report_to {name}: the {name} package is not installed "
                           f"(pip install {name})")  # fmt: skip
    return targets


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


def point_tensorboard(trainer: Any, work: Path) -> None:
    """Send the TensorBoard callback's event files to `work/tracking/tensorboard`
    (transformers would put them among the checkpoints, which go when training ends)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and not os.environ.get(
                "TENSORBOARD_LOGGING_DIR"):  # fmt: skip
            callback.logging_dir = str(Path(work).resolve() / FOLDER / "tensorboard")


def tracking_record(trainer: Any, work: Path) -> dict[str, Any] | None:
    """What training.json and the card say about the trackers: which ran, and where
    each one's files are (None when none ran)."""
    targets = [t for t in trainer.args.report_to if t in REPORT_TO]
    if not targets:
        return None
    folders: dict[str, str] = {}
    for name in targets:
        if name == "tensorboard":
            folders[name] = str(Path(work).resolve() / FOLDER / "tensorboard")
        elif name == "trackio":
            folders[name] = os.environ.get("TRACKIO_DIR") or "trackio's default folder"
        else:
            folders[name] = os.environ.get("WANDB_DIR") or "wandb's default folder"
    return {"report_to": targets, "project": PROJECT, "run_name": trainer.args.run_name,
            "folders": folders}  # fmt: skip


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
