"""The training recipes: the data a command names read as preference rows, then SFT,
DPO or reverse tuning into an output folder that knows what made it
(`train/outputs.training_session`).

    sft("runs/quick", "runs/align/sft", AlignConfig().sft)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import (
    RunConfig,
    TrainStepConfig,
)
from ..errors import BadInput
from ..paths import cache_root
from ..rundir import RunDir, dataset_file, ref_logps_dir

if TYPE_CHECKING:
    from ..train.held_out import HeldOut

log = logging.getLogger("saferinstruct")


def reverse_train(cfg: RunConfig, out_dir: str | Path | None = None,
                  force: bool = False) -> Path:  # fmt: skip
    """Train the reverse model for `cfg.reverse_train` (or reuse the cached one); an
    `out_dir` trained otherwise is refused unless `force`."""
    from ..train.reverse import train_reverse

    if out_dir:
        check_out_dir(out_dir)
    return train_reverse(cfg.reverse_train, Path(out_dir) if out_dir else None, force)


def load_training_data(data: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference rows for SFT/DPO: `hh` (the shipped HH-RLHF training part), a run or
    dataset directory (refused while incomplete), a TRL-format jsonl, or a released
    Safer-Instruct csv."""
    from ..preferences import load_hh, load_preferences

    if str(data) == "hh":
        return load_hh(split="train", limit=limit)
    if Path(data).is_dir():
        RunDir(data).require_complete("--data")
    return load_preferences(data, limit=limit)


def training_rows(data: str | Path, step: TrainStepConfig) -> tuple[list[dict], HeldOut]:
    """(the pairs to train on, the held-out pairs that measure what training learned):
    the data's own held-out part where it has one (a run or dataset directory's test
    split, HH-RLHF's evaluation part), else `step.held_out_share` of its pairs."""
    from ..preferences import load_hh, load_preferences
    from ..train.held_out import MAX_PAIRS, HeldOut, split_rows

    rows = load_training_data(data, step.max_pairs)
    if str(data) == "hh":
        held = load_hh(split="eval", limit=MAX_PAIRS)
        return rows, HeldOut(held, "the HH-RLHF evaluation part (never trained on)")
    if Path(data).is_dir() and has_split(data, "test"):
        held = load_preferences(dataset_file(data, "test"), limit=MAX_PAIRS)
        return rows, HeldOut(held, "the data's test split")
    return split_rows(rows, step.held_out_share)


def has_split(folder: str | Path, split: str) -> bool:
    """Whether a run or dataset directory has this split's file."""
    try:
        return dataset_file(folder, split).exists()
    except BadInput:
        return False


def sft(data: str | Path, out_dir: str | Path, step: TrainStepConfig,
        force: bool = False) -> Path:  # fmt: skip
    """SFT on the `chosen` responses (never on `rejected`); returns the model directory.
    A folder trained with other settings or data is refused unless `force`."""
    from ..train.sft import train_sft

    step.check("sft")
    check_out_dir(out_dir)
    rows, held = training_rows(data, step)
    return train_sft(rows, step, Path(out_dir), source=data_source(data, rows), force=force,
                     held=held)  # fmt: skip


def data_source(data: str | Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a model card says about its data: the file, its sha256 and the rows used."""
    from ..llm.fingerprint import file_hash
    from ..preferences import hh_default_path

    path = hh_default_path() if str(data) == "hh" else dataset_file(data, "train")
    return {"file": str(Path(path).resolve()), "sha256_16": file_hash(Path(path)),
            "rows": len(rows), "given_as": str(data)}  # fmt: skip


def result_line(model_dir: Path) -> dict[str, Any]:
    """What `sft` and `dpo` print: the model, and what its held-out pairs say (from the
    training record beside it)."""
    import json

    from ..train.outputs import TRAINING_RECORD

    line: dict[str, Any] = {"model": str(model_dir)}
    record = Path(model_dir).parent / TRAINING_RECORD
    if record.exists():
        held = json.loads(record.read_text()).get("held_out")
        if held and held.get("pairs"):  # with none, its warning is in the log and record
            line["held_out"] = held
    return line


def check_out_dir(out_dir: str | Path) -> None:
    """BadInput before any work when an output folder is an existing file."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise BadInput(f"--out {out_dir}: is a file, not a folder")


def dpo_ref_dir(data: str | Path) -> Path:
    """Where DPO keeps reference log-probs: beside the dataset (`ref_logps/`), or in the
    user cache for the shipped HH-RLHF part."""
    if str(data) == "hh":
        return cache_root() / "ref_logps" / "hh"
    return ref_logps_dir(dataset_file(data, "train"))


def dpo(data: str | Path, out_dir: str | Path, step: TrainStepConfig,
        force: bool = False) -> Path:  # fmt: skip
    """DPO (beta 0.1 by default) on preference rows; returns the model directory.
    Reference log-probs are computed once and saved beside the dataset for reuse. A
    folder trained with other settings or data is refused unless `force`."""
    from ..train.dpo import train_dpo

    step.check("dpo")
    check_out_dir(out_dir)
    rows, held = training_rows(data, step)
    return train_dpo(rows, step, Path(out_dir), ref_dir=dpo_ref_dir(data),
                     source=data_source(data, rows), force=force, held=held)  # fmt: skip
