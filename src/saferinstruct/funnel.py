"""The funnel: records in, kept and dropped at every stage, overall and per category.

Computed once, by `recipes.data.assemble_records`, from the stage files, and written to
`DIR/funnel.json`; the data report reads that file.

    counts = funnel(RunDir("runs/quick").stage_files())
    counts["overall"]        # {"in": 16, "kept": 4, "dropped": 12}
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from .io import read_jsonl
from .records import Record, dropped_at, is_kept, reason_key

TOP_REASONS = 10


def stage_name(path: Path) -> str:
    m = re.match(r"^\d+-(.+?)\.jsonl(?:\.gz)?$", Path(path).name)
    return m.group(1) if m else Path(path).stem


def new_counts() -> dict[str, int]:
    return {"in": 0, "kept": 0, "dropped": 0}


def reached(record: Record, stage: str) -> bool:
    """Whether `record` (as `stage` wrote it) reached that stage: kept before it."""
    return is_kept(record) or dropped_at(record) == stage


def tally(row: dict[str, int], record: Record, stage: str) -> None:
    """Count one record of `stage`'s file into `row`: `in` (it reached the stage), `kept`
    and `dropped` (at this stage). A record dropped earlier is not counted: it is one of
    the stage file's `records` (every input, kept or not), never of its `in`. The one
    counting rule of the runner's stage summaries and the funnel."""
    if reached(record, stage):
        row["in"] += 1
        row["kept" if is_kept(record) else "dropped"] += 1


def stage_counts(path: Path) -> dict[str, Any]:
    """in / kept / dropped (at this stage) for one stage file, overall and per category;
    `records` is every record in the file."""
    name = stage_name(path)
    total, reasons = new_counts(), Counter()
    by_cat: dict[str, dict[str, int]] = {}
    n_records = cut = 0
    for r in read_jsonl(path):
        n_records += 1
        cut += "text_cut_from" in r
        if not reached(r, name):
            continue
        tally(total, r, name)
        tally(by_cat.setdefault(r.get("category") or "default", new_counts()), r, name)
        if not is_kept(r):
            reasons[reason_key(r.get("drop_reason"))] += 1
    return {
        "stage": name,
        "file": str(path),
        "records": n_records,
        **total,
        **({"texts_cut": cut} if cut and name == "sources" else {}),
        "by_category": dict(sorted(by_cat.items())),
        "top_drop_reasons": [
            {"reason": k, "count": c} for k, c in reasons.most_common(TOP_REASONS)
        ],
    }


def funnel(stage_files: list[Path]) -> dict[str, Any]:
    """Counts for every stage file (in pipeline order as given), plus overall in -> out."""
    stages = [stage_counts(Path(p)) for p in stage_files]
    if not stages:
        return {"stages": [], "overall": new_counts(), "by_category": {}}
    first, last = stages[0], stages[-1]
    cats = sorted(set(first["by_category"]) | set(last["by_category"]))
    by_category = {
        c: {
            "in": first["by_category"].get(c, {}).get("in", 0),
            "kept": last["by_category"].get(c, {}).get("kept", 0),
        }
        for c in cats
    }
    overall = {"in": first["in"], "kept": last["kept"], "dropped": first["in"] - last["kept"]}
    return {"stages": stages, "overall": overall, "by_category": by_category}
