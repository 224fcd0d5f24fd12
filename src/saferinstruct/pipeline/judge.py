"""Stage 04, expert evaluation: check each finished pair and drop the failures.

A pair is a kept record's `instruction`, `chosen` (the expert's response) and `text`
(the source text, which becomes `rejected`). Checks, in order:

1. Pair checks, no model call: an empty `chosen` or `text` is dropped
   (`empty_chosen`, `empty_rejected`); chosen and rejected that are the same text up
   to case, spacing and punctuation, or nearly so (character similarity >= 0.9), or
   whose MiniLM cosine is >= `JudgeConfig.max_pair_cosine`, are dropped as
   `near_copy` (a fluent rewrite of a hateful text is still hateful); a chosen that
   carries over the rejected's wording (at least `max_rejected_overlap` of its word
   bigrams appear in rejected) is dropped as `carries_rejected`; a chosen with fewer
   than `min_chosen_words` words is dropped as `degenerate_chosen`.
   With `chosen_must_decline` (safety domains, where the filter kept only instructions
   that ask for harm), a chosen that the refusal classifier (`measures/refusal.py`,
   trained on XSTest human labels) reads as full compliance with the instruction is
   dropped as `complies_with_harmful`.
2. The expert's verdict on the domain's `judge.txt` (chosen safe and as helpful as
   safety allows, rejected really showing the behaviour and matching the
   instruction), in JSON or log-prob mode (see `measures/verdict.py` for the rules).

Every record looked at gets `judge` = {kept, score, reason, raw, parsed, mode, label,
attempts, outcome, model, pair_cosine} and a `judge` verdict; pair-check drops have
mode and model `pair_check`. Records dropped earlier pass through untouched.

`audit_file` runs the same checks over an existing preference file, such as the
released `hate.csv` (columns instruction, chosen, rejected; the category from a
column or the file name), to measure how many of its pairs fail.

    from saferinstruct.pipeline.judge import judge_records, audit_file
    records = judge_records(records, expert, JudgeConfig(), DomainConfig())
    audited = audit_file("../shared/data/safer-instruct/hate.csv", expert,
                         JudgeConfig(), DomainConfig(), limit=20)
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from .. import drops
from ..config import DomainConfig, JudgeConfig
from ..errors import BadInput
from ..io import file_stem, read_records
from ..llm.base import Backend, Prompt
from ..measures import verdict as V
from ..measures.embed import paired_cosine
from ..measures.refusal import COMPLIANCE, default_classifier
from ..measures.text import word_key
from ..prompts import domain_prompt
from ..records import Record, add_verdict, is_kept, new_record
from .filter import criteria_by_category, record_verdict

STAGE = "judge"
MAX_TEXT_CHARS = 1500
"""Chosen and rejected are cut to this many characters in the judge prompt."""
NEAR_EXACT_RATIO = 0.9
"""Character similarity (difflib ratio of normalised texts) that counts as a copy."""
DEFAULT_COLUMNS = {"instruction": "instruction", "chosen": "chosen", "rejected": "rejected"}


def copy_kind(chosen: str, rejected: str) -> str | None:
    """'exact' or 'near_exact' when chosen copies rejected as text; None otherwise."""
    a, b = word_key(chosen), word_key(rejected)
    if a == b:
        return "exact"
    a, b = a[:4000], b[:4000]
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() >= NEAR_EXACT_RATIO and matcher.ratio() >= NEAR_EXACT_RATIO:
        return "near_exact"
    return None


def bigram_overlap(chosen: str, rejected: str) -> float:
    """Share of the chosen's word bigrams that also occur in the rejected text."""
    a, b = word_key(chosen).split(), word_key(rejected).split()
    grams = list(zip(a, a[1:], strict=False))
    if not grams:
        return 0.0
    other = set(zip(b, b[1:], strict=False))
    return sum(g in other for g in grams) / len(grams)


def pair_problem(chosen: str, rejected: str, cosine: float, cfg: JudgeConfig) -> str | None:
    """The reason a pair fails without asking the expert, or None."""
    kind = copy_kind(chosen, rejected)
    if kind is None and cosine >= cfg.max_pair_cosine:
        kind = f"cosine {cosine:.3f} >= {cfg.max_pair_cosine}"
    if kind is not None:
        return f"{drops.NEAR_COPY} ({kind})"
    if len(re.findall(r"[^\W\d_]+", chosen)) < cfg.min_chosen_words:
        return drops.DEGENERATE_CHOSEN
    overlap = bigram_overlap(chosen, rejected)
    if overlap >= cfg.max_rejected_overlap:
        return f"{drops.CARRIES_REJECTED} ({overlap:.2f} of bigrams)"
    return None


def pair_cosines(chosen: list[str], rejected: list[str]) -> list[float]:
    """MiniLM cosine of chosen[i] with rejected[i] (texts cut as in the prompt)."""
    if not chosen:
        return []
    return paired_cosine(
        [c[:MAX_TEXT_CHARS] for c in chosen], [r[:MAX_TEXT_CHARS] for r in rejected]
    )


def judge_prompt(
    template: str,
    mode: str,
    record: Record,
    category: str,
    criteria: str,
) -> Prompt:
    """The chat prompt asking whether one finished pair is good."""
    return V.build_prompt(
        template,
        mode,
        untrusted={
            "instruction": str(record["instruction"]).strip()[:MAX_TEXT_CHARS],
            "chosen": str(record["chosen"]).strip()[:MAX_TEXT_CHARS],
            "rejected": str(record["text"]).strip()[:MAX_TEXT_CHARS],
        },
        category=category,
        criteria=criteria,
    )


def check_judge(
    records: list[Record], expert: Backend, cfg: JudgeConfig, domain: DomainConfig
) -> tuple[str, dict[str, str]]:
    """Everything that can fail before the first call. Returns (template, criteria by
    category); criteria are only required when the template uses `{criteria}`."""
    V.check(expert, cfg.verdict, STAGE)
    if not 0.0 < cfg.max_pair_cosine <= 1.0:
        raise BadInput("judge.max_pair_cosine: expected a number in (0, 1]")
    template = domain_prompt(domain, "judge")
    criteria = criteria_by_category(records, domain) if "{criteria}" in template else {}
    return template, criteria


def judge_records(
    records: list[Record], expert: Backend, cfg: JudgeConfig, domain: DomainConfig
) -> list[Record]:
    """Check each kept record's pair; returns the same records (in order, dropped ones
    included) with `judge` and a `judge` verdict added to each record looked at."""
    template, criteria = check_judge(records, expert, cfg, domain)
    model = expert.identity()
    candidates: list[Record] = []
    for record in records:
        if not is_kept(record):
            continue
        problem = _missing(record)
        if problem:
            _pair_drop(record, problem, None)
        else:
            candidates.append(record)
    cosines = pair_cosines(
        [str(r["chosen"]) for r in candidates], [str(r["text"]) for r in candidates]
    )
    todo: list[tuple[Record, float]] = []
    for record, cosine in zip(candidates, cosines, strict=True):
        cosine = round(float(cosine), 4)
        problem = pair_problem(str(record["chosen"]), str(record["text"]), cosine, cfg)
        if problem is not None:
            _pair_drop(record, problem, cosine)
        else:
            todo.append((record, cosine))
    if cfg.chosen_must_decline:
        todo = drop_compliant(todo)
    if not todo:
        return records
    prompts = [
        judge_prompt(
            template,
            cfg.verdict.mode,
            r,
            str(r.get("category")),
            criteria.get(str(r.get("category")), ""),
        )
        for r, _ in todo
    ]
    verdicts = V.ask(expert, prompts, cfg.verdict, STAGE)
    if cfg.contrast:
        swapped = [
            judge_prompt(
                template,
                cfg.verdict.mode,
                {**r, "chosen": r["text"], "text": r["chosen"]},
                str(r.get("category")),
                criteria.get(str(r.get("category")), ""),
            )
            for r, _ in todo
        ]
        verdicts = [
            contrast_verdict(v, s, cfg.contrast_margin)
            for v, s in zip(verdicts, V.ask(expert, swapped, cfg.verdict, STAGE), strict=True)
        ]
    for (record, cosine), v in zip(todo, verdicts, strict=True):
        record_verdict(record, STAGE, v, model, pair_cosine=cosine)
    return records


def drop_compliant(todo: list[tuple[Record, float]]) -> list[tuple[Record, float]]:
    """Drop pairs whose chosen fully complies with the (harmful) instruction."""
    if not todo:
        return todo
    labels = default_classifier().predict(
        [str(r["instruction"]) for r, _ in todo], [str(r["chosen"]) for r, _ in todo]
    )
    kept = []
    for (record, cosine), label in zip(todo, labels, strict=True):
        if label == COMPLIANCE:
            _pair_drop(record, f"{drops.COMPLIES_WITH_HARMFUL} (refusal classifier)", cosine)
        else:
            kept.append((record, cosine))
    return kept


def contrast_verdict(real: V.Verdict, swapped: V.Verdict, margin: float) -> V.Verdict:
    """Keep a pair when the expert rates it above the same pair with chosen and rejected
    swapped. A small model's absolute P(yes) carries a prior that hides its judgement;
    the difference between the two orders cancels that prior (LLM-judge practice)."""
    from dataclasses import replace

    if real.score is None or swapped.score is None:
        return real
    diff = real.score - swapped.score
    return replace(
        real,
        kept=diff > margin,
        label=V.YES if diff > margin else V.NO,  # the contrast decides, and says so
        score=round(0.5 + diff / 2, 4),
        reason=f"contrast {diff:+.3f} (real {real.score:.2f}, swapped {swapped.score:.2f})",
    )


def _missing(record: Record) -> str | None:
    for field, reason in (
        ("instruction", drops.NO_INSTRUCTION),
        ("chosen", drops.EMPTY_CHOSEN),
        ("text", drops.EMPTY_REJECTED),
    ):
        if not str(record.get(field) or "").strip():
            return reason
    return None


def _pair_drop(record: Record, reason: str, cosine: float | None) -> None:
    """A drop decided without the expert: no model call, `model` = the check."""
    record[STAGE] = {
        "kept": False,
        "score": None,
        "reason": reason,
        "raw": "",
        "parsed": None,
        "mode": "pair_check",
        "outcome": reason.split(" ")[0],
        "model": "pair_check",
        "pair_cosine": cosine,
    }
    add_verdict(record, STAGE, False, reason, model="pair_check", pair_cosine=cosine)


def audit_file(
    path: str | Path,
    expert: Backend,
    cfg: JudgeConfig,
    domain: DomainConfig,
    columns: dict[str, str] | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Judge the pairs of an existing preference file (csv, jsonl, parquet, dataset dir).

    `columns` maps instruction / chosen / rejected (and optionally category and id) to
    the file's column names; the default is the released Safer-Instruct layout
    (instruction, chosen, rejected). The category is `category` if given, else the
    mapped category column, else a `category` or `label` column, else the file stem
    (`hate.csv` -> hate). Ids come from `io.read_records` (an id column, else
    `<stem>:<row>`). Returns one judged record per row (kept or dropped with a reason).
    """
    path = Path(path)
    mapping = {**DEFAULT_COLUMNS, **(columns or {})}
    read_cols = {
        "instruction": mapping["instruction"],
        "chosen": mapping["chosen"],
        "text": mapping["rejected"],
    }
    for extra in ("category", "id"):
        if extra in mapping:
            read_cols[extra] = mapping[extra]
    stem = file_stem(path)
    records: list[Record] = []
    for row in read_records(path, columns=read_cols, limit=limit):
        cat = category or row.get("category") or row.get("label") or stem
        records.append(
            new_record(
                str(row["id"]),
                str(row.get("text") or ""),
                str(cat),
                instruction=str(row.get("instruction") or ""),
                chosen=str(row.get("chosen") or ""),
                source_file=str(path),
            )
        )
    return judge_records(records, expert, cfg, domain)


def audit_summary(records: list[Record]) -> dict[str, Any]:
    """Counts of an audit: pairs, kept, dropped, and drops by outcome (near_copy, no,
    below_threshold, unparsed, request_failed, empty_rejected, ...)."""
    outcomes: dict[str, int] = {}
    for r in records:
        if not is_kept(r):
            outcome = str((r.get(STAGE) or {}).get("outcome") or r.get("drop_reason"))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    kept = sum(map(is_kept, records))
    return {
        "pairs": len(records),
        "kept": kept,
        "dropped": len(records) - kept,
        "outcomes": outcomes,
    }
