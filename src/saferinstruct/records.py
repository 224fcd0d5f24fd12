"""The record that flows through the stages: a plain JSON-able dict.

Fields every record has: `id` (stable), `category`, `text` (the source text, later the
`rejected` side), `status` ('kept' or 'dropped'), `drop_reason` (None while kept) and
`verdicts`: one entry per stage that looked at it (stage, kept, reason, model, and the
model's raw output where there is one). Stages add their own fields (`instruction`,
`candidates`, `chosen`, ...). Dropped records stay in every later stage output, so
each input id ends in exactly one place: the dataset, or a drop with its reason.

`dropped_at` and `reason_key` read a record's drop for the funnel and reports;
`preference_row` is the one line of the dataset contract (TRL's conversational
preference format) that assemble writes and training reads.
"""

from __future__ import annotations

import re
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


def dropped_at(record: Record) -> str | None:
    """The stage that dropped a record (its first negative verdict), None when kept."""
    if is_kept(record):
        return None
    for v in record.get("verdicts") or []:
        if not v.get("kept", True):
            return v.get("stage")
    reason = record.get("drop_reason") or ""
    return reason.split(":", 1)[0].strip() or None


def reason_key(reason: str | None) -> str:
    """A drop reason grouped for counting: the outcome only, without the stage prefix,
    '(details)', an expert's free-text explanation after ': ', or a duplicate's ' of <id>'.

    'filter: no (0.25): the text is ...' -> 'no'; 'assemble: duplicate instruction of
    hate-3' -> 'duplicate instruction'. Cut to 80 characters.
    """
    text = reason or ""
    if ": " in text:
        text = text.split(": ", 1)[1]
    text = re.sub(r"\s*\([^()]*\)", "", text).split(": ", 1)[0].strip()
    return re.sub(r"^((?:near-)?duplicate .+?) of \S+$", r"\1", text)[:80] or "unknown"


def preference_row(prompt: str | list[dict[str, str]], chosen: str, rejected: str,
                   **extra: Any) -> Record:  # fmt: skip
    """One pair in TRL's conversational preference format: `prompt` a list of messages
    (a string becomes one user message), `chosen` and `rejected` one assistant message
    each; `extra` fields (id, category) come first."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return {
        **extra,
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
