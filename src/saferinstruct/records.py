"""The record that flows through the stages: a plain JSON-able dict.

Fields every record has: `id` (stable), `category`, `text` (the source text, later the
`rejected` side), `status` ('kept' or 'dropped'), `drop_reason` (None while kept) and
`verdicts`: one entry per stage that looked at it (stage, kept, reason, model, and the
model's raw output where there is one). Stages add their own fields (`instruction`,
`candidates`, `chosen`, ...). Dropped records stay in every later stage output, so
each input id ends in exactly one place: the dataset, or a drop with its reason.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def new_record(rid: str, text: str, category: str, **extra: Any) -> Record:
    return {
        "id": rid,
        "category": category,
        "text": text,
        "status": "kept",
        "drop_reason": None,
        "verdicts": [],
        **extra,
    }


def is_kept(record: Record) -> bool:
    return record.get("status", "kept") == "kept"


def add_verdict(record: Record, stage: str, kept: bool, reason: str = "", **info: Any) -> Record:
    """Record a stage's decision; a negative one drops the record with `stage: reason`."""
    record.setdefault("verdicts", []).append(
        {"stage": stage, "kept": kept, "reason": reason, **info}
    )
    if not kept and is_kept(record):
        record["status"] = "dropped"
        record["drop_reason"] = f"{stage}: {reason}" if reason else stage
    return record
