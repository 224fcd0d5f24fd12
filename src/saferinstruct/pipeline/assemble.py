"""Stage 05, assembly: dedup and a train/test split by source text.

Two passes over the last stage's records (kept and dropped), so nothing holds them all.
`decide` (pass one) drops among the kept ones, with the reason: pairs missing a part, a
`chosen` equal to its source text, exact duplicate source texts, exact duplicate
instructions, and near-duplicate instructions (MiniLM cosine >=
`near_duplicate_threshold` with an earlier kept one); the first occurrence wins, so
input order decides. The split hashes the normalised source text with the seed, so one
text never lands in both splits (with two or more texts and 0 < test_fraction < 1, both
splits get at least one). `settle` (pass two) writes the verdict on each record, and
where its rejected side comes from (`AssembleConfig.rejected`: the source text, or the
expert's own complying answer that respond kept); `split_rows` gives the dataset rows in
TRL's conversational preference format, `tally` the counts; `dataset_card` writes the
card's text. Like every stage it does no file IO: the recipe
(`recipes.data.assemble_records`) streams the judge stage file through it and writes the
stage file, the dataset and the card. `assemble` does both passes over a list in memory.

    from saferinstruct.pipeline.assemble import assemble, dataset_card
    done = assemble(records, AssembleConfig())
    done.splits["train"]          # preference rows
    card = dataset_card(done.summary, {"models": {"expert": "..."}})
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import drops
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

BLOCK = 256
"""Instructions embedded and compared at a time (the near-duplicate search)."""


def _drop(record: Record, reason: str, **info: Any) -> None:
    add_verdict(record, STAGE, False, reason, **info)


def pair_problem(r: Record) -> str | None:
    """Why a kept record cannot form a pair (or its chosen copies the text), or None."""
    if not (r.get("text") or "").strip():
        return drops.EMPTY_SOURCE_TEXT
    if not (r.get("instruction") or "").strip():
        return drops.NO_INSTRUCTION
    if not (r.get("chosen") or "").strip():
        return drops.NO_CHOSEN_RESPONSE
    if normalise(r["chosen"]) == normalise(r["text"]):
        return drops.CHOSEN_EQUALS_REJECTED
    return None


def _digest(text: str) -> bytes:
    """A short stand-in for a normalised text (dedup keeps digests, not texts)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).digest()[:16]


def split_score(text: str, seed: int) -> float:
    """A stable number in [0, 1) for a source text: its normalised form, hashed with seed."""
    return seeded_fraction(normalise(text), seed)


def assign_splits(scores: dict[str, float], test_fraction: float) -> dict[str, str]:
    """Key (a record id) -> 'train' or 'test' by its split score; both non-empty when
    possible (the lowest score goes to test, the highest to train)."""
    out = {k: ("test" if s < test_fraction else "train") for k, s in scores.items()}
    if len(out) >= 2 and 0 < test_fraction < 1:
        if "test" not in out.values():
            out[min(scores, key=scores.__getitem__)] = "test"
        if "train" not in out.values():
            out[max(scores, key=scores.__getitem__)] = "train"
    return out


class NearDuplicates:
    """Instructions with MiniLM cosine >= threshold to an earlier kept one, found a block
    at a time; keeps the vectors of the kept instructions only (not their texts), in
    slabs of `SLAB` rows (no copy as they grow), stored as float16: half the memory of
    float32 (73 MB for 100,000 kept instructions); cosines move by 1.2e-4 at most
    (all pairs of 714 AlpacaEval instructions, measured). Every vector is
    rounded to float16 before any comparison, so a pair scores the same within a block
    and across blocks: the result does not depend on `BLOCK` or `SLAB`."""

    SLAB = 8192

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.slabs: list[Any] = []
        self.n = 0
        self.ids: list[str] = []

    def _best_before(self, vecs: Any) -> tuple[Any, Any]:
        """Per row of `vecs`: the highest cosine with a kept vector and its index (the
        first one on a tie), or -inf and -1."""
        import numpy as np

        best = np.full(len(vecs), -np.inf, dtype=np.float32)
        where = np.full(len(vecs), -1)
        for k, slab in enumerate(self.slabs):
            rows = min(self.SLAB, self.n - k * self.SLAB)
            sims = vecs @ slab[:rows].astype(np.float32).T
            j = sims.argmax(axis=1)
            top = sims[np.arange(len(vecs)), j]
            better = top > best
            best[better], where[better] = top[better], j[better] + k * self.SLAB
        return best, where

    def block(self, items: list[tuple[str, str]]) -> dict[str, tuple[str, float]]:
        """(id, instruction) in input order -> the dropped ones: id -> (twin id, cosine)."""
        import numpy as np

        if not items:
            return {}
        vecs = embed([instruction for _, instruction in items]).astype(np.float16)
        vecs = vecs.astype(np.float32)  # the stored precision, compared in float32
        before, where = self._best_before(vecs)
        within = vecs @ vecs.T
        kept: list[int] = []
        drops: dict[str, tuple[str, float]] = {}
        for i, (rid, _) in enumerate(items):
            best, twin = float(before[i]), self.ids[where[i]] if where[i] >= 0 else ""
            if kept:
                sims = within[i, kept]
                k = int(np.argmax(sims))
                if sims[k] > best:
                    best, twin = float(sims[k]), items[kept[k]][0]
            if best >= self.threshold - 1e-6:
                drops[rid] = (twin, round(best, 4))
            else:
                kept.append(i)
        for i in kept:
            self._keep(vecs[i], items[i][0])
        return drops

    def _keep(self, vec: Any, rid: str) -> None:
        import numpy as np

        if self.n == len(self.slabs) * self.SLAB:
            self.slabs.append(np.zeros((self.SLAB, vec.shape[0]), dtype=np.float16))
        self.slabs[-1][self.n % self.SLAB] = vec
        self.n += 1
        self.ids.append(rid)


@dataclass
class Decisions:
    """What assembly does to each kept record: drop it (reason and details) or put it in
    a split. `n_in`: the kept records it looked at."""

    drops: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    n_in: int = 0
    rejected: str = "source"
    """`AssembleConfig.rejected`: where the kept pairs' rejected side comes from."""


def decide(records: Iterable[Record], cfg: AssembleConfig) -> Decisions:
    """One pass in input order (the first occurrence wins): pairs missing a part, exact
    duplicate source texts, exact duplicate instructions, near-duplicate instructions;
    then the split of every survivor. Holds digests, split scores and the kept
    instructions' vectors, never the records."""
    out = Decisions(rejected=cfg.rejected)
    first_text: dict[bytes, str] = {}
    first_instruction: dict[bytes, str] = {}
    near = NearDuplicates(cfg.near_duplicate_threshold)
    scores: dict[str, float] = {}
    waiting: list[tuple[str, str]] = []

    def flush() -> None:
        for rid, (twin, cosine) in near.block(waiting).items():
            out.drops[rid] = (f"{drops.NEAR_DUPLICATE_INSTRUCTION} of {twin}",
                              {"duplicate_of": twin, "cosine": cosine})  # fmt: skip
            del scores[rid]
        waiting.clear()

    for r in records:
        if not is_kept(r):
            continue
        out.n_in += 1
        rid = r["id"]
        problem = pair_problem(r)
        if problem is not None:
            out.drops[rid] = (problem, {})
            continue
        checks = ((first_text, _digest(r["text"]), drops.DUPLICATE_SOURCE_TEXT),
                  (first_instruction, _digest(r["instruction"]), drops.DUPLICATE_INSTRUCTION))
        twin = next(((outcome, seen[key]) for seen, key, outcome in checks if key in seen), None)
        if twin is not None:  # registered only when kept: never a duplicate of a dropped one
            out.drops[rid] = (f"{twin[0]} of {twin[1]}", {"duplicate_of": twin[1]})
            continue
        for seen, key, _ in checks:
            seen[key] = rid
        scores[rid] = split_score(r["text"], cfg.seed)
        waiting.append((rid, r["instruction"]))
        if len(waiting) == BLOCK:
            flush()
    flush()
    out.splits = assign_splits(scores, cfg.test_fraction)
    return out


def settle(record: Record, decisions: Decisions) -> Record:
    """A record with its assemble verdict: dropped with the reason, or kept in its split."""
    if not is_kept(record):
        return record
    rid = record["id"]
    if rid in decisions.drops:
        reason, info = decisions.drops[rid]
        _drop(record, reason, **info)
    else:
        record["split"] = decisions.splits[rid]
        record["rejected_from"] = rejected_side(record, decisions.rejected)
        add_verdict(record, STAGE, True, split=record["split"],
                    rejected_from=record["rejected_from"])  # fmt: skip
    return record


def rejected_side(record: Record, wanted: str) -> str:
    """'expert' when asked for and respond kept the expert's complying answer, else
    'source'."""
    return "expert" if wanted == "expert" and (record.get("complied") or "").strip() else "source"


def pair_row(r: Record) -> dict[str, Any]:
    """One line of train/test.jsonl: TRL's conversational preference format, the rejected
    side from where `settle` said (`rejected_from`)."""
    rejected = r["complied"].strip() if r.get("rejected_from") == "expert" else r["text"]
    return preference_row(
        r["instruction"].strip(), r["chosen"].strip(), rejected,
        id=r["id"], category=r.get("category"),
    )  # fmt: skip


def split_rows(settled: Iterable[Record], split: str) -> Iterator[dict[str, Any]]:
    """The dataset rows of one split, from settled records."""
    return (pair_row(r) for r in settled if is_kept(r) and r.get("split") == split)


@dataclass
class Assembled:
    """What assembly produced, in memory: every record (in input order), the dataset rows
    of each split, and the counts (`summary`)."""

    records: list[Record]
    splits: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any]


def assemble(records: Iterable[Record], cfg: AssembleConfig) -> Assembled:
    """Dedup and split in memory (`decide`, then `settle`); the recipe streams the same
    two passes over the judge stage file instead."""
    records = list(records)
    decisions = decide(records, cfg)
    records = [settle(r, decisions) for r in records]
    rows = {s: list(split_rows(records, s)) for s in SPLITS}
    return Assembled(records, rows, tally(records, decisions.n_in))


def tally(settled: Iterable[Record], n_in: int) -> dict[str, Any]:
    """The counts of settled records (one pass)."""
    by_category: dict[str, dict[str, int]] = {}
    reasons: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    sides: Counter[str] = Counter()
    for r in settled:
        if dropped_at(r) == STAGE:
            reasons[reason_key(r["drop_reason"])] += 1
        elif is_kept(r):
            row = by_category.setdefault(r.get("category") or "default", {"train": 0, "test": 0})
            row[r["split"]] += 1
            splits[r["split"]] += 1
            sides[r.get("rejected_from", "source")] += 1
    return {
        "stage": STAGE,
        "in": n_in,
        "kept": splits["train"] + splits["test"],
        "dropped": sum(reasons.values()),
        "train": splits["train"],
        "test": splits["test"],
        "by_category": dict(sorted(by_category.items())),
        "drop_reasons": dict(reasons),
        "rejected_from": dict(sorted(sides.items())),
    }


# ---------------------------------------------------------------- dataset card


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def card_header(summary: dict[str, Any], info: dict[str, Any]) -> str:
    """The card's YAML header, as the Hugging Face Hub reads it (huggingface_hub's
    `DatasetCardData`): licence, language, tags, size and the split files."""
    from huggingface_hub import DatasetCardData

    safety = info.get("domain", "safety") == "safety"
    tags = ["preference", "dpo", "synthetic", "safer-instruct"]
    tags += ["safety", "alignment", "not-for-all-audiences"] if safety else []
    data = DatasetCardData(
        license=info.get("license", "other"),
        license_name=info.get("license_name", "academic-research-only"),
        license_link=info.get("license_link", "https://github.com/uscnlp-lime/safer-instruct"),
        language=["en"],
        pretty_name=info.get("pretty_name", "Safer-Instruct generated preference data"),
        tags=tags,
        task_categories=["text-generation"],
        size_categories=[_size_category(summary["kept"])],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": split_name(s)} for s in SPLITS
                                 if summary[s]]}],
    )  # fmt: skip
    return "---\n" + data.to_yaml() + "\n---\n"


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


def _rejected_line(summary: dict[str, Any]) -> str:
    sides = summary.get("rejected_from") or {}
    if not sides.get("expert"):
        return "the **original source text**."
    return (f"the **expert's own answer that the refusal classifier read as complying** in "
            f"{sides['expert']} pairs, and the **original source text** in "
            f"{sides.get('source', 0)} (no complying answer was drawn for them).")


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
- `rejected` is {_rejected_line(summary)} It is the dispreferred example
  only: it is never a training target. Do not fine-tune on it with SFT or any
  objective that raises its likelihood.

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
