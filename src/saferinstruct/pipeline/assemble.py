"""Stage 05, assembly: dedup and a train/test split by source text.

`assemble` takes the last stage's records (kept and dropped). Among the kept ones it
drops, with the reason: pairs missing a part, a `chosen` equal to its source text,
exact duplicate source texts, exact duplicate instructions, and near-duplicate
instructions (MiniLM cosine >= `near_duplicate_threshold` with an earlier kept one);
the first occurrence wins, so input order decides. The split hashes the normalised
source text with the seed, so one text never lands in both splits (with two or more
texts and 0 < test_fraction < 1, both splits get at least one). It returns every
record, the dataset rows of each split in TRL's conversational preference format and
the counts; `dataset_card` writes the card's text. Like every stage it does no file IO:
the recipe (`api.assemble`) writes the stage file, the dataset and the card.

    from saferinstruct.pipeline.assemble import assemble, dataset_card
    done = assemble(records, AssembleConfig())
    done.splits["train"]          # preference rows
    card = dataset_card(done.summary, {"models": {"expert": "..."}})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from ..config import AssembleConfig
from ..measures.embed import embed
from ..measures.splits import seeded_fraction
from ..measures.text import normalise
from ..records import Record, add_verdict, dropped_at, is_kept, preference_row, reason_key
from ..rundir import SPLITS, split_name

STAGE = "assemble"
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
    """A stable number in [0, 1) for a source text: its normalised form, hashed with seed."""
    return seeded_fraction(normalise(text), seed)


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


def pair_row(r: Record) -> dict[str, Any]:
    """One line of train/test.jsonl: TRL's conversational preference format."""
    return preference_row(
        r["instruction"].strip(), r["chosen"].strip(), r["text"],
        id=r["id"], category=r.get("category"),
    )  # fmt: skip


@dataclass
class Assembled:
    """What assembly produced: every record (in input order), the dataset rows of each
    split, and the counts (`summary`)."""

    records: list[Record]
    splits: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any]


def assemble(records: Iterable[Record], cfg: AssembleConfig) -> Assembled:
    """Dedup and split; returns the records, the split rows and the counts."""
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
    rows = {s: [pair_row(r) for r in kept if r["split"] == s] for s in SPLITS}
    return Assembled(records, rows, _summary(records, n_in, kept))


def _summary(records: list[Record], n_in: int, kept: list[Record]) -> dict:
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
                "data_files": [{"split": s, "path": split_name(s)} for s in SPLITS if summary[s]],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n"


def _counts_table(summary: dict[str, Any]) -> str:
    lines = ["| category | train | test |", "|---|---:|---:|"]
    for cat, row in summary["by_category"].items():
        lines.append(f"| {cat} | {row['train']} | {row['test']} |")
    lines.append(f"| **all** | {summary['train']} | {summary['test']} |")
    empty = [s for s in SPLITS if not summary[s]]
    if empty:
        lines += [
            "",
            f"No pairs in {' and '.join(empty)}: its file is not written (an empty "
            "JSON-lines file is not a loadable dataset); the funnel says why.",
        ]
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
    stage_file = info.get("stage_file", "the assemble stage file")
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
dropped record is listed with its reason in `{stage_file}`.

## Sources
{_listing(info.get("sources"))}

## Models used
{_listing(info.get("models"))}

## Intended use
{info.get("intended_use", INTENDED_USE)}

## Terms of the source texts
{terms}
"""
