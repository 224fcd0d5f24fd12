"""Several processes (`accelerate launch`: DDP, FSDP or DeepSpeed): the dataset every
rank maps, and what each rank saw (a digest per batch) and held (a digest of its
trainable weights), so that anyone can check the ranks split the data and ended
identical (training.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .saving import is_sharded


def world_size() -> int:
    """Processes in this training (from the launcher's environment; 1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


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
