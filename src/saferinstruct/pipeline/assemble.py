"""Stage 6, assembly: dedup, a train/test split by source text, and the dataset files.

`assemble` takes the last stage's records (kept and dropped). Among the kept ones it
drops, with the reason: pairs missing a part, a `chosen` equal to its source text,
exact duplicate source texts, exact duplicate instructions, and near-duplicate
instructions (MiniLM cosine >= `near_duplicate_threshold` with an earlier kept one);
the first occurrence wins, so input order decides. The split hashes the normalised
source text with the seed, so one text never lands in both splits (with two or more
texts and 0 < test_fraction < 1, both splits get at least one). It writes
`DIR/stages/05-assemble.jsonl` (every record), `DIR/dataset/{train,test}.jsonl` in
TRL's conversational preference format and the dataset card `DIR/dataset/README.md`.
`funnel` counts in / kept / dropped for every stage file, overall and per category.

    from saferinstruct.pipeline.assemble import assemble, funnel
    summary = assemble(records, AssembleConfig(), run_dir, {"models": {"expert": "..."}})
    counts = funnel(sorted((run_dir / "stages").glob("*.jsonl")))
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from ..config import AssembleConfig
from ..io import read_jsonl, write_jsonl_atomic
from ..records import Record, add_verdict, is_kept
from ..runner import stage_path
from .respond import normalise

STAGE = "assemble"
TOP_REASONS = 10
INTENDED_USE = (
    "Safety alignment research only: training and evaluating models to refuse or redirect "
    "harmful requests, and studying automated preference data. Not for training models to "
    "produce the `rejected` content, and not for any use outside research."
)
DEFAULT_TERMS = (
    "The source texts come from the preference data released with Safer-Instruct "
    "(Shi, Chen, Zhao, NAACL 2024, arXiv:2311.08685); the authors release them for "
    "academic research only. This dataset inherits those terms."
)


# ---------------------------------------------------------------- dedup and split


def _drop(record: Record, reason: str, **info: Any) -> None:
    add_verdict(record, STAGE, False, reason, **info)


def check_pairs(kept: list[Record]) -> None:
    """Drop kept records that cannot form a pair (or whose chosen copies the text)."""
    for r in kept:
        if not (r.get("text") or "").strip():
            _drop(r, "empty source text")
        elif not (r.get("instruction") or "").strip():
            _drop(r, "no instruction")
        elif not (r.get("chosen") or "").strip():
            _drop(r, "no chosen response")
        elif normalise(r["chosen"]) == normalise(r["text"]):
            _drop(r, "chosen equals rejected")


def drop_exact(kept: list[Record], key: Callable[[Record], str], what: str) -> None:
    """Drop every kept record whose key an earlier kept record already has."""
    first: dict[str, str] = {}
    for r in kept:
        if not is_kept(r):
            continue
        k = key(r)
        if k in first:
            _drop(r, f"duplicate {what} of {first[k]}", duplicate_of=first[k])
        else:
            first[k] = r["id"]


def drop_near(kept: list[Record], threshold: float) -> None:
    """Drop instructions with MiniLM cosine >= threshold to an earlier kept instruction."""
    import numpy as np

    from ..evaluate.embed import embed

    live = [r for r in kept if is_kept(r)]
    if len(live) < 2:
        return
    vecs = embed([r["instruction"] for r in live])
    chosen_rows: list[int] = []
    for i, r in enumerate(live):
        if chosen_rows:
            sims = vecs[chosen_rows] @ vecs[i]
            j = int(np.argmax(sims))
            if sims[j] >= threshold - 1e-6:
                twin = live[chosen_rows[j]]["id"]
                _drop(
                    r,
                    f"near-duplicate instruction of {twin}",
                    duplicate_of=twin,
                    cosine=round(float(sims[j]), 4),
                )
                continue
        chosen_rows.append(i)


def split_score(text: str, seed: int) -> float:
    """A stable number in [0, 1) for a source text: sha256 of seed + normalised text."""
    digest = hashlib.sha256(f"{seed}\x00{normalise(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(texts: Iterable[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Normalised source text -> 'train' or 'test'; both non-empty when possible."""
    scores = {normalise(t): split_score(t, seed) for t in texts}
    out = {k: ("test" if s < test_fraction else "train") for k, s in scores.items()}
    if len(out) >= 2 and 0 < test_fraction < 1:
        if "test" not in out.values():
            out[min(scores, key=scores.__getitem__)] = "test"
        if "train" not in out.values():
            out[max(scores, key=scores.__getitem__)] = "train"
    return out


# ---------------------------------------------------------------- files


def pair_row(r: Record) -> dict[str, Any]:
    """One line of train/test.jsonl: TRL's conversational preference format."""
    return {
        "id": r["id"],
        "category": r.get("category"),
        "prompt": [{"role": "user", "content": r["instruction"].strip()}],
        "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": r["text"]}],
    }


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def assemble(
    records: Iterable[Record], cfg: AssembleConfig, run_dir: Path, config_info: dict[str, Any]
) -> dict[str, Any]:
    """Dedup, split and write the stage file, the dataset and its card; returns counts.

    `config_info` feeds the card; every key is optional: `models` (role -> identity),
    `sources` (paths or descriptions), `domain` ('safety' adds content tags),
    `pretty_name`, `license`, `license_name`, `license_link`, `terms`, `intended_use`.
    """
    run_dir = Path(run_dir)
    records = list(records)
    kept = [r for r in records if is_kept(r)]
    n_in = len(kept)
    check_pairs(kept)
    drop_exact(kept, lambda r: normalise(r["text"]), "source text")
    drop_exact(kept, lambda r: normalise(r["instruction"]), "instruction")
    drop_near(kept, cfg.near_duplicate_threshold)
    kept = [r for r in kept if is_kept(r)]
    splits = assign_splits((r["text"] for r in kept), cfg.test_fraction, cfg.seed)
    for r in kept:
        r["split"] = splits[normalise(r["text"])]
        add_verdict(r, STAGE, True, split=r["split"])
    write_jsonl_atomic(stage_path(run_dir, STAGE), records)
    data_dir = run_dir / "dataset"
    for split in ("train", "test"):
        rows = [pair_row(r) for r in kept if r["split"] == split]
        write_jsonl_atomic(data_dir / f"{split}.jsonl", rows)
    summary = _summary(records, n_in, kept, run_dir)
    _write_text(data_dir / "README.md", dataset_card(summary, config_info))
    return summary


def _summary(records: list[Record], n_in: int, kept: list[Record], run_dir: Path) -> dict:
    dropped_here = [r for r in records if dropped_at(r) == STAGE]
    by_category: dict[str, dict[str, int]] = {}
    for r in kept:
        row = by_category.setdefault(r.get("category") or "default", {"train": 0, "test": 0})
        row[r["split"]] += 1
    return {
        "stage": STAGE,
        "in": n_in,
        "kept": len(kept),
        "dropped": len(dropped_here),
        "train": sum(r["split"] == "train" for r in kept),
        "test": sum(r["split"] == "test" for r in kept),
        "by_category": dict(sorted(by_category.items())),
        "drop_reasons": dict(Counter(reason_key(r["drop_reason"]) for r in dropped_here)),
        "files": {
            "stage": str(stage_path(run_dir, STAGE)),
            "train": str(run_dir / "dataset" / "train.jsonl"),
            "test": str(run_dir / "dataset" / "test.jsonl"),
            "card": str(run_dir / "dataset" / "README.md"),
        },
    }


# ---------------------------------------------------------------- dataset card


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def card_header(summary: dict[str, Any], info: dict[str, Any]) -> str:
    safety = info.get("domain", "safety") == "safety"
    tags = ["preference", "dpo", "synthetic", "safer-instruct"]
    tags += ["safety", "alignment", "not-for-all-audiences"] if safety else []
    header = {
        "license": info.get("license", "other"),
        "license_name": info.get("license_name", "academic-research-only"),
        "license_link": info.get("license_link", "https://github.com/uscnlp-lime/safer-instruct"),
        "language": ["en"],
        "pretty_name": info.get("pretty_name", "Safer-Instruct generated preference data"),
        "tags": tags,
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(summary["kept"])],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": "train.jsonl"},
                    {"split": "test", "path": "test.jsonl"},
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n"


def _counts_table(summary: dict[str, Any]) -> str:
    lines = ["| category | train | test |", "|---|---:|---:|"]
    for cat, row in summary["by_category"].items():
        lines.append(f"| {cat} | {row['train']} | {row['test']} |")
    lines.append(f"| **all** | {summary['train']} | {summary['test']} |")
    return "\n".join(lines)


def _listing(value: Any) -> str:
    if isinstance(value, dict):
        return "\n".join(f"- {k}: `{v}`" for k, v in value.items()) or "- (not recorded)"
    if isinstance(value, list | tuple):
        return "\n".join(f"- {v}" for v in value) or "- (not recorded)"
    return f"- {value}" if value else "- (not recorded)"


def dataset_card(summary: dict[str, Any], info: dict[str, Any]) -> str:
    """The HF-style README.md of the dataset folder."""
    terms = info.get("terms", DEFAULT_TERMS)
    return f"""{card_header(summary, info)}
# {info.get("pretty_name", "Safer-Instruct generated preference data")}

> **Content warning.** The `rejected` side of every pair is a real text of the kind
> this data is about (for safety: hateful, self-harm or otherwise harmful content),
> and the prompts ask for such content. Read with care.

Preference pairs built with no human annotators by the Safer-Instruct pipeline
(reversed instruction tuning, instruction induction, expert filtering, expert
responses, expert evaluation; Shi, Chen, Zhao, NAACL 2024, arXiv:2311.08685).

## Format
`train.jsonl` and `test.jsonl`, one pair a line, in TRL's conversational preference
format: `prompt` (a list with one user message: the induced instruction), `chosen`
and `rejected` (one assistant message each), plus `id` (the source text's id) and
`category`. Load with `datasets.load_dataset("json", data_files=...)`; TRL's
`DPOTrainer` takes it unchanged.

- `chosen` is the expert model's response, written under the domain's guideline.
- `rejected` is the **original source text**. It is the dispreferred example only:
  it is never a training target. Do not fine-tune on it with SFT or any objective
  that raises its likelihood.

## Counts
{_counts_table(summary)}

The split is by source text (a stable hash of the normalised text), so one source
text never appears in both splits. Exact duplicate source texts, exact duplicate
instructions and near-duplicate instructions (MiniLM cosine) were removed; every
dropped record is listed with its reason in `../stages/05-assemble.jsonl`.

## Sources
{_listing(info.get("sources"))}

## Models used
{_listing(info.get("models"))}

## Intended use
{info.get("intended_use", INTENDED_USE)}

## Terms of the source texts
{terms}
"""


# ---------------------------------------------------------------- funnel


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


def stage_name(path: Path) -> str:
    m = re.match(r"^\d+-(.+?)\.jsonl(?:\.gz)?$", Path(path).name)
    return m.group(1) if m else Path(path).stem


def _new_counts() -> dict[str, int]:
    return {"in": 0, "kept": 0, "dropped": 0}


def stage_counts(path: Path) -> dict[str, Any]:
    """in / kept / dropped (at this stage) for one stage file, overall and per category."""
    name = stage_name(path)
    total, reasons = _new_counts(), Counter()
    by_cat: dict[str, dict[str, int]] = {}
    n_records = 0
    for r in read_jsonl(path):
        n_records += 1
        here = dropped_at(r) == name
        if not (is_kept(r) or here):
            continue
        cat = by_cat.setdefault(r.get("category") or "default", _new_counts())
        for row in (total, cat):
            row["in"] += 1
            row["kept" if is_kept(r) else "dropped"] += 1
        if here:
            reasons[reason_key(r.get("drop_reason"))] += 1
    return {
        "stage": name,
        "file": str(path),
        "records": n_records,
        **total,
        "by_category": dict(sorted(by_cat.items())),
        "top_drop_reasons": [
            {"reason": k, "count": c} for k, c in reasons.most_common(TOP_REASONS)
        ],
    }


def funnel(stage_files: list[Path]) -> dict[str, Any]:
    """Counts for every stage file (in pipeline order as given), plus overall in -> out."""
    stages = [stage_counts(Path(p)) for p in stage_files]
    if not stages:
        return {"stages": [], "overall": _new_counts(), "by_category": {}}
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
