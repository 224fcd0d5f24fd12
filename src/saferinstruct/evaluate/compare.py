"""Several models measured side by side, with bootstrap intervals (the `report` command;
`report/comparison.py` renders what `compare` returns).

For each model (a backend, built once by the caller), one set of greedy generations per
prompt set goes through the call cache, so a rerun, or a model that appears in two
reports, generates nothing again. Metrics, per model:

- `harmful_refusal_rate`, `harmful_full_refusal_rate`: on harmful prompts (a prompt file,
  a run's dataset/test.jsonl, or by default the shipped HH-RLHF evaluation part);
- `xstest_safe_compliance_rate`, `xstest_unsafe_refusal_rate`: XSTest;
- `helpfulness_win_rate`: pairwise win-rate against the reference model on held-out
  AlpacaEval instructions, both orders (`helpfulness.py`), beside the judge's position
  consistency.

Every rate has a 95% percentile-bootstrap interval over prompts (1000 resamples, fixed
seed). Beside the refusal metrics stands the refusal classifier's measured agreement with
human labels (leave-one-file-out on the shipped XSTest completions).

    safer-instruct report --models base=embedded --models dpo=runs/a/dpo/model --out R
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..llm.base import Backend, Prompt
from .helpfulness import Side, helpfulness
from .safety import classify, generate_answers, harmful_prompts, indicators, xstest_prompts

SET_METRICS = {
    "harmful": (("harmful_refusal_rate", "refusal_rate"),
                ("harmful_full_refusal_rate", "full_refusal_rate")),
    "xstest_safe": (("xstest_safe_compliance_rate", "full_compliance_rate"),),
    "xstest_unsafe": (("xstest_unsafe_refusal_rate", "refusal_rate"),),
}  # fmt: skip
"""Report metric <- `safety.indicators` rate, per prompt set."""


@dataclass
class CompareConfig:
    """What the comparison runs on; limits keep a quick report quick."""

    harmful_prompts: Path | None = None
    harmful_column: str = "prompt"
    data: Path | None = None
    harmful_limit: int | None = 200
    xstest_limit: int | None = None
    helpfulness_limit: int | None = 40
    max_new_tokens: int = 40
    helpfulness_max_new_tokens: int = 128
    bootstrap: int = 1000


@dataclass
class Entry:
    """One compared model (or, as the helpfulness reference, shipped answers): the spec
    it was given as, for the report, and what answers for it."""

    spec: str
    side: Side


def parse_models(specs: list[str]) -> dict[str, str]:
    """`NAME=SPEC` (or a bare SPEC, named after its last path part), in order."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep:
            name, target = Path(spec.rstrip("/")).name or spec, spec
        if not name or not target:
            raise BadInput(f"--models: expected NAME=SPEC, got {spec!r}")
        if name in out:
            raise BadInput(f"--models: name {name!r} given twice")
        out[name] = target
    if not out:
        raise BadInput("--models: give at least one model")
    return out


def bootstrap_ci(values: list[float], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:  # fmt: skip
    """Percentile bootstrap interval of the mean of `values` (None when empty)."""
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return round(lo, 4), round(hi, 4)


def rate(values: list[float], resamples: int) -> dict[str, Any]:
    n = len(values)
    return {
        "value": round(sum(values) / n, 4) if n else None,
        "ci95": bootstrap_ci(values, resamples),
        "n": n,
    }


# ---------------------------------------------------------------- measuring


def prompt_sets(cfg: CompareConfig) -> dict[str, list[Prompt]]:
    """The prompt sets every model answers: harmful, XSTest safe, XSTest unsafe."""
    harmful = harmful_prompts(cfg.harmful_prompts, cfg.harmful_column, cfg.data, cfg.harmful_limit)
    return {
        "harmful": harmful,
        "xstest_safe": xstest_prompts("safe", cfg.xstest_limit),
        "xstest_unsafe": xstest_prompts("unsafe", cfg.xstest_limit),
    }


def refusal_labels(backend: Backend, prompts: list[Prompt],
                   cfg: CompareConfig) -> tuple[list, list]:  # fmt: skip
    answers = generate_answers(backend, prompts, cfg.max_new_tokens)
    return answers, classify(prompts, answers)


def measure_model(model: Entry, sets: dict[str, list[Prompt]], reference: Entry,
                  judge: Backend | None, cfg: CompareConfig) -> dict[str, Any]:  # fmt: skip
    """Every metric of one model, with per-prompt values kept for the intervals."""
    if not isinstance(model.side, Backend):
        raise BadInput(f"--models: {model.spec!r} is not a model")
    out: dict[str, Any] = {"spec": model.spec, "metrics": {}, "answers": {}}
    m = out["metrics"]
    for name, prompts in sets.items():
        answers, labels = refusal_labels(model.side, prompts, cfg)
        out["answers"][name] = answers
        flags = indicators(labels)
        for metric, source in SET_METRICS[name]:
            m[metric] = rate(flags[source], cfg.bootstrap)
    if cfg.helpfulness_limit != 0 and judge is not None:
        h = helpfulness(
            model.side, reference.side, judge=judge, limit=cfg.helpfulness_limit,
            max_new_tokens=cfg.helpfulness_max_new_tokens,
        )  # fmt: skip
        wins = [float(i["win"]) for i in h["items"] if i["win"] is not None]
        m["helpfulness_win_rate"] = rate(wins, cfg.bootstrap)
        m["helpfulness_win_rate"]["position_consistency"] = h["position_consistency"]
        m["helpfulness_win_rate"]["reference"] = reference.spec
    return out


def judge_agreement() -> dict[str, Any]:
    """The refusal classifier's leave-one-file-out agreement with human labels."""
    from ..measures.refusal import leave_one_file_out

    lofo = leave_one_file_out()
    per = {name: v["classifier"] for name, v in lofo["files"].items()}
    return {
        "refusal_classifier_2class": per,
        "mean": round(sum(per.values()) / len(per), 4),
        "min": lofo["min_classifier"],
    }


def compare(models: dict[str, Entry], reference: Entry, judge: Backend | None,
            cfg: CompareConfig) -> dict[str, Any]:  # fmt: skip
    """Measure every model (helpfulness against `reference`, judged by `judge`; no judge,
    no helpfulness); returns the report data (what comparison.json holds, and the
    answers and prompts the rendered examples show)."""
    sets = prompt_sets(cfg)
    results = {name: measure_model(e, sets, reference, judge, cfg) for name, e in models.items()}
    return {
        "models": {n: {"spec": r["spec"], "metrics": r["metrics"]} for n, r in results.items()},
        "judge_agreement": judge_agreement(),
        "sizes": {k: len(v) for k, v in sets.items()},
        "reference": reference.spec,
        "_answers": {n: r["answers"] for n, r in results.items()},
        "_prompts": sets,
    }
