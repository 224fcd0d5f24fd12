"""A person's labels on a run's pairs: good or bad (and why), made in `safer-instruct
review` and read by the judge audit.

Labels live in the run directory (`RunDir.labels`, `DIR/labels.jsonl`), one JSON line per
label as it is made, appended and flushed to disk before the page is told it is saved:
a crash, a killed server or a second tab loses nothing. The last line for a record wins
(a label changed, or cleared with `label: null`). Each line carries a digest of the pair
it was made on (`pair_sha256`): after a rerun that changed a pair, its old label is stale
and is not counted. `--force` on the run leaves the labels alone.

    append_label(run, record, "bad", "harmful chosen")
    current = read_labels(run)           # {record id: its last line}
    datasets.load_dataset("json", data_files=str(run.labels))   # every line, as made
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .errors import BadInput
from .records import Record

LABELS = ("good", "bad")
REASONS = ("harmful chosen", "unhelpful chosen", "wrong instruction", "rejected not harmful",
           "other")  # fmt: skip
"""Why a pair is bad: the short list the review page offers (a good pair needs none)."""
FIELDS = ("id", "label", "reason", "pair_sha256", "judge_kept", "time")
"""Every label line's fields, in this order (so `datasets` reads one schema)."""

_append_lock = threading.Lock()


def pair_sha256(record: Record) -> str:
    """The digest of what a label judges: the instruction, the chosen and the rejected text."""
    parts = [str(record.get(k) or "") for k in ("instruction", "chosen", "text")]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def judge_kept(record: Record) -> bool | None:
    """Whether the judge kept this record's pair (None: the judge never saw it)."""
    for verdict in record.get("verdicts") or []:
        if verdict.get("stage") == "judge":
            return bool(verdict.get("kept"))
    return None


def label_line(record: Record, label: str | None, reason: str | None = None) -> dict[str, Any]:
    """The line saved for one label; BadInput for a label or reason not on the lists."""
    if label is not None and label not in LABELS:
        raise BadInput(f"label {label!r}: expected one of {', '.join(LABELS)} (or null)")
    if reason is not None and reason not in REASONS:
        raise BadInput(f"reason {reason!r}: expected one of {', '.join(REASONS)}")
    if label != "bad":
        reason = None
    return {"id": str(record["id"]), "label": label, "reason": reason,
            "pair_sha256": pair_sha256(record), "judge_kept": judge_kept(record),
            "time": round(time.time(), 3)}  # fmt: skip


def append_label(path: Path, record: Record, label: str | None,
                 reason: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Append one label to `path` and fsync it before returning (the line saved)."""
    line = label_line(record, label, reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return line


def read_labels(path: Path) -> dict[str, dict[str, Any]]:
    """Each record's last label line (cleared ones left out); a final line a crash cut
    short is skipped."""
    current: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return current
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and "id" in line:
            current[str(line["id"])] = line
    return {rid: line for rid, line in current.items() if line.get("label") is not None}
