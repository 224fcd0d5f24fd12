"""Reversed instruction tuning (before the stages): learn P(instruction | response).

Pairs (instruction, response) are flipped: the prompt is the paper's template
(prompts/reverse.txt) filled with the response, cut to `max_response_chars` (the same
cut the induce stage makes, so training and induction see the same prompt); the
completion is the instruction. TRL's SFTTrainer trains on the completion only. Full
fine-tune or LoRA (merged into a normal HF directory at the end). Pairs are split into
train and validation **by id** (an instruction's 16 answers never straddle the split).

The model lives in the user cache under a hash of (base model, data file, settings), so
`safer-instruct run` reuses it (the induce stage runs it); a killed training resumes
from its last checkpoint. Its length is set in steps (pairs, epochs, `max_steps`), so the
model does not depend on the machine's load; `max_minutes` is only a guard: a model it
cut short is saved but not finished, so it is never reused as the trained model, and the
next call resumes its training.

    safer-instruct reverse-train --max-pairs 480 --max-minutes 30
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import ReverseTrainConfig, report_targets
from ..errors import BadInput
from ..io import read_records
from ..llm.fingerprint import file_hash, fingerprint
from ..measures.splits import split_of
from ..paths import cache_root
from ..prompts import reverse_prompt
from .hardware import load_base, lora_config
from .outputs import finished_model, train_and_save, training_identity, training_session
from .schedule import quiet_stdout, schedule_args, threads_callback, time_budget_callback

log = logging.getLogger("saferinstruct")

# Settings that change the trained weights (and so the cache key). max_minutes is not
# one of them: it is a guard, and a model it cuts short is never taken as finished, so a
# finished model is the same whatever it was.
_DATA_ORDER = "distinct-ids-first"  # how pairs are picked; part of the cache key
_KEY_FIELDS = (
    "base_model", "instruction_column", "response_column", "max_pairs", "validation_fraction",
    "max_response_chars", "max_length", "lora", "learning_rate", "batch_size", "epochs", "seed",
    "max_steps",
)  # fmt: skip


def load_pairs(cfg: ReverseTrainConfig, split: str) -> list[dict[str, str]]:
    """The (id, instruction, response) pairs of one split, in a seeded shuffled order with
    distinct ids first (see `distinct_ids_first`)."""
    columns = {"instruction": cfg.instruction_column, "response": cfg.response_column}
    rows = [
        {"id": str(r["group_id"]), "instruction": r["instruction"], "response": r["response"]}
        for r in _with_group_ids(read_records(cfg.path, columns=columns))
        if r["instruction"] and r["response"]
    ]
    rows = [r for r in rows if split_of(r["id"], cfg.validation_fraction) == split]
    random.Random(cfg.seed).shuffle(rows)
    return distinct_ids_first(rows)


def distinct_ids_first(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Reorder so that every id's first pair comes before any id's second, and so on:
    a `max_pairs` prefix then covers as many different instructions as it can (AlpacaEval
    has 16 answers per instruction). Stable: keeps the shuffled order within each round."""
    seen: Counter[str] = Counter()
    rounds = []
    for r in rows:
        rounds.append(seen[r["id"]])
        seen[r["id"]] += 1
    order = sorted(range(len(rows)), key=rounds.__getitem__)  # sorted() is stable
    return [rows[i] for i in order]


def _with_group_ids(records: Any) -> Any:
    """Split key: the file's own `id` (shared by a prompt's answers), else the row id."""
    for r in records:
        r["group_id"] = r.get("id")
        yield r


def build_dataset(pairs: list[dict[str, str]], max_chars: int) -> Any:
    """TRL prompt-completion format: loss on the completion (the instruction) only."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": reverse_prompt(p["response"], max_chars),
                "completion": p["instruction"].strip(),
            }
            for p in pairs
        ]
    )


def model_key(cfg: ReverseTrainConfig) -> str:
    """Hash of base model identity, data file content and weight-changing settings."""
    settings = {k: getattr(cfg, k) for k in _KEY_FIELDS}
    if cfg.max_steps is None:  # only when set: older keys stay valid
        del settings["max_steps"]
    settings["base_model"] = fingerprint(cfg.base_model.model)
    if cfg.base_model.dtype != "auto":  # only then: older keys stay valid
        settings["dtype"] = cfg.base_model.dtype
    settings["data"] = file_hash(Path(cfg.path))
    settings["order"] = _DATA_ORDER
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(cfg: ReverseTrainConfig) -> Path:
    """Where the trained reverse model for these settings lives (it may not exist yet)."""
    return cache_root() / "reverse" / model_key(cfg)


def trained_model(cfg: ReverseTrainConfig) -> Path | None:
    """The model directory for these settings, if its training finished."""
    return finished_model(model_dir(cfg))


def reverse_identity(cfg: ReverseTrainConfig) -> dict[str, Any]:
    """What a reverse model depends on (`outputs.training_identity`): the cache key's
    settings, the pairs file's content and the package versions."""
    settings = {k: getattr(cfg, k) for k in _KEY_FIELDS if k != "base_model"}
    settings["order"] = _DATA_ORDER
    data = {"file_sha256": file_hash(Path(cfg.path))}
    return training_identity("reverse-train", settings, cfg.base_model.model, data)


def train_reverse(cfg: ReverseTrainConfig, out_dir: Path | None = None,
                  force: bool = False) -> Path:  # fmt: skip
    """Train (or resume, or reuse) the reverse model; returns the HF model directory
    (cut short when the `max_minutes` guard stopped it: `finished_model` says so). An
    `out_dir` trained with other settings is refused (naming what changed) unless
    `force`; the user cache's folder for these settings is retrained when anything else
    (the package versions) differs."""
    work = Path(out_dir) if out_dir else model_dir(cfg)
    with training_session(work, reverse_identity(cfg), force, owned=out_dir is None) as done:
        if done is not None:
            return done
        trainer, budget, n_pairs = make_trainer(cfg, work)
        sections = {
            "data": {"path": cfg.path, "train_pairs": n_pairs, "split": "by id"},
            "hyper-parameters": asdict(cfg),
        }
        title = "Reverse model (P(instruction | response))"
        return train_and_save(trainer, budget, work, cfg.lora, title, sections)


def make_trainer(cfg: ReverseTrainConfig, work: Path) -> tuple[Any, Any, int]:
    """The TRL SFTTrainer for these settings (not yet trained), its budget, pair count."""
    from trl import SFTConfig, SFTTrainer

    train_pairs = load_pairs(cfg, "train")[: cfg.max_pairs]
    if not train_pairs:
        raise BadInput(f"reverse_train.path: no training pairs in {cfg.path}")
    dataset = build_dataset(train_pairs, cfg.max_response_chars)
    trackers = report_targets(cfg.report_to, "reverse_train")
    model, tokenizer, _ = load_base(cfg.base_model)
    args = SFTConfig(
        **schedule_args(work, len(train_pairs), cfg.batch_size, cfg.learning_rate, cfg.epochs,
                        cfg.max_length, cfg.seed, device=cfg.base_model.device,
                        max_steps=cfg.max_steps, report_to=trackers),  # fmt: skip
        completion_only_loss=True,
        train_sampling_strategy="group_by_length",
    )
    budget = time_budget_callback(cfg.max_minutes)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config() if cfg.lora else None,
        callbacks=[budget, threads_callback()],
    )
    return quiet_stdout(trainer), budget, len(train_pairs)
