"""Instruction recovery: induce the instruction from a response and score it against
the true one. ROUGE-L F1, MiniLM cosine, exact match and copy rate; overall and per
`generator` when the pairs have one.

    safer-instruct eval recovery --pairs data/alpacaeval/pairs.jsonl.gz --model DIR \
        --mode reverse --split validation --limit 192

Modes: `reverse` (a reverse-tuned model with the paper's template), `prompted` (an
instruction-following model asked zero-shot), `first-sentence` (no model: the first
sentence of the response, the heuristic to beat).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ..pipeline.induce import candidate_problem

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def first_sentence(text: str) -> str:
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    return parts[0] if parts else ""


def _norm(s: str) -> str:
    return " ".join(re.findall(r"\w+", s.lower()))


def rouge_l(preds: list[str], refs: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)]


def score_rows(preds: list[str], refs: list[str], outputs: list[str]) -> list[dict[str, float]]:
    """Per-pair metrics. An empty prediction scores 0 on every similarity."""
    from .embed import paired_cosine

    rouge = rouge_l(preds, refs)
    cos = paired_cosine([p or " " for p in preds], refs)
    rows = []
    for p, r, o, rl, c in zip(preds, refs, outputs, rouge, cos, strict=True):
        rows.append(
            {
                "rouge_l": rl,
                "cosine": c if p else 0.0,
                "exact": float(bool(p) and _norm(p) == _norm(r)),
                "copy": float(candidate_problem(p, o, 10**9) == "copied_text"),
                "empty": float(not p),
            }
        )
    return rows


def summarize(rows: list[dict[str, float]], groups: Iterable[str | None] = ()) -> dict[str, Any]:
    """Means overall (`rouge_l`, `cosine`, `exact_match`, `copy_rate`, `n`) and per group."""
    groups = list(groups)

    def mean(rs: list[dict[str, float]], key: str) -> float:
        return round(sum(r[key] for r in rs) / len(rs), 4) if rs else 0.0

    def block(rs: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "rouge_l": mean(rs, "rouge_l"),
            "cosine": mean(rs, "cosine"),
            "exact_match": mean(rs, "exact"),
            "copy_rate": mean(rs, "copy"),
            "empty_rate": mean(rs, "empty"),
            "n": len(rs),
        }

    out = block(rows)
    if groups and any(g is not None for g in groups):
        by: dict[str, list[dict[str, float]]] = defaultdict(list)
        for g, r in zip(groups, rows, strict=True):
            by[str(g)].append(r)
        out["by_generator"] = {g: block(rs) for g, rs in sorted(by.items())}
    return out


def examples_markdown(
    outputs: list[str],
    preds: list[str],
    refs: list[str],
    groups: list[str],
    per_group: int = 3,
) -> str:
    """A few truncated examples per group (category or generator): the text, the
    induced instruction and the reference, behind a content warning."""
    from ..report import clip

    lines = [
        "# Instruction recovery: examples",
        "",
        "> **Content warning.** The texts may be hateful or about self-harm; each is cut",
        "> to 160 characters.",
        "",
    ]
    shown: dict[str, int] = defaultdict(int)
    for out, pred, ref, group in zip(outputs, preds, refs, groups, strict=True):
        if shown[group] >= per_group:
            continue
        if not shown[group]:
            lines += [f"## {group}", "", "| text | induced | reference |", "|---|---|---|"]
        shown[group] += 1
        cells = [clip(x).replace("|", "\\|") for x in (out, pred or "(empty)", ref)]
        lines.append("| " + " | ".join(cells) + " |")
        if shown[group] == per_group:
            lines.append("")
    return "\n".join(lines) + "\n"
