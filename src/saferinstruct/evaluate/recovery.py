"""Instruction recovery: induce the instruction from a response and score it against
the true one. ROUGE-L F1, MiniLM cosine, exact match and copy rate; overall and per
`generator` when the pairs have one.

    safer-instruct eval recovery --pairs data/alpacaeval/pairs.jsonl.gz --model DIR \
        --mode reverse --split validation --limit 192

Modes: `reverse` (a reverse-tuned model with the paper's template), `prompted` (an
instruction-following model asked zero-shot), `first-sentence` (no model: the first
sentence of the response, the heuristic to beat). The model modes run the induce stage
(`api.eval_recovery` hands it the rows of `held_out_rows` as `as_records`); this module
picks the rows, checks the settings and scores what comes back (`summary`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import InduceConfig
from ..errors import BadInput
from ..io import read_records, write_atomic
from ..measures.embed import paired_cosine
from ..measures.splits import split_of
from ..measures.text import first_sentence, is_copy, rouge_l, word_key
from ..records import Record, new_record

MODES = ("reverse", "prompted", "first-sentence")


def held_out_rows(pairs_path: str | Path, instruction_column: str = "instruction",
                  output_column: str = "output", split: str = "all",
                  validation_fraction: float = 0.1,
                  limit: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The (id, generator, output, reference) rows to score: those of `split` ('all', or
    the reverse-train 'train'/'validation' split by id), shuffled with seed 0, then cut."""
    columns = {"instruction": instruction_column, "output": output_column}
    rows = [
        r
        for r in read_records(pairs_path, columns=columns)
        if split == "all" or split_of(str(r["id"]), validation_fraction) == split
    ]
    random.Random(0).shuffle(rows)
    rows = rows[:limit] if limit else rows
    return [
        {"id": r["id"], "generator": r.get("generator"), "output": str(r["output"] or ""),
         "reference": str(r["instruction"] or "")}
        for r in rows
    ]  # fmt: skip


def induce_settings(mode: str, max_new_tokens: int = 64, max_text_chars: int | None = None,
                    num_candidates: int = 1, select: str = "first",
                    temperature: float = 0.0) -> InduceConfig:  # fmt: skip
    """The induce stage's settings for a recovery run (BadInput for impossible ones)."""
    if mode not in MODES:
        raise BadInput(f"--mode: expected reverse, prompted or first-sentence, got {mode!r}")
    if num_candidates > 1 and temperature <= 0:
        raise BadInput("--candidates > 1 needs --temperature > 0 (greedy repeats itself)")
    cfg = InduceConfig(mode=mode, max_text_chars=max_text_chars,
                       num_candidates=num_candidates, select=select)  # fmt: skip
    cfg.generation.max_new_tokens = max_new_tokens
    cfg.generation.temperature = temperature
    return cfg


def as_records(rows: list[dict[str, Any]]) -> list[Record]:
    """The rows as records for the induce stage (the output is the text)."""
    return [
        new_record(f"{r['id']}:{r['generator'] if r['generator'] is not None else i}",
                   r["output"], "recovery")
        for i, r in enumerate(rows)
    ]  # fmt: skip


def baseline(rows: list[dict[str, Any]]) -> list[str]:
    """The first-sentence heuristic's prediction for each row."""
    return [first_sentence(r["output"]) for r in rows]


def with_predictions(rows: list[dict[str, Any]], preds: list[str]) -> list[dict[str, Any]]:
    """Rows with their `prediction`, for scoring elsewhere (benchmarks/gpu.py)."""
    return [{**r, "prediction": p} for r, p in zip(rows, preds, strict=True)]


def summary(rows: list[dict[str, Any]], preds: list[str], mode: str, pairs_name: str,
            out_dir: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Scores overall and per generator; with `out_dir`, a few examples beside them."""
    outputs = [r["output"] for r in rows]
    refs = [r["reference"] for r in rows]
    groups = [r["generator"] for r in rows]
    result = summarize(score_rows(preds, refs, outputs), groups)
    result["mode"] = mode
    if out_dir is not None:
        names = [str(g) if g is not None else pairs_name for g in groups]
        path = Path(out_dir) / "recovery_examples.md"
        write_atomic(path, examples_markdown(outputs, preds, refs, names))
        result["examples"] = str(path)
    return result


def score_rows(preds: list[str], refs: list[str], outputs: list[str]) -> list[dict[str, float]]:
    """Per-pair metrics. An empty prediction scores 0 on every similarity."""
    rouge = rouge_l(preds, refs)
    cos = paired_cosine([p or " " for p in preds], refs)
    rows = []
    for p, r, o, rl, c in zip(preds, refs, outputs, rouge, cos, strict=True):
        rows.append(
            {
                "rouge_l": rl,
                "cosine": c if p else 0.0,
                "exact": float(bool(p) and word_key(p) == word_key(r)),
                "copy": float(is_copy(p, o)),
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
    from ..render import clip

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
