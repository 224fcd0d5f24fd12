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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CompareConfig, ModelConfig
from ..errors import BadInput
from ..llm.base import Backend, Prompt
from ..measures import stats
from ..measures.reward import last_user
from .helpfulness import Side, gate, held_out_items, helpfulness, read_pairs, reference_measures
from .reward import default_reward_model
from .safety import (
    classify,
    generate_answers,
    harmful_prompts,
    indicators,
    where_answered,
    xstest_prompts,
)

EXAMPLES = 3

SET_METRICS = {
    "harmful": (("harmful_refusal_rate", "refusal_rate"),
                ("harmful_full_refusal_rate", "full_refusal_rate")),
    "xstest_safe": (("xstest_safe_compliance_rate", "full_compliance_rate"),),
    "xstest_unsafe": (("xstest_unsafe_refusal_rate", "refusal_rate"),),
}  # fmt: skip
"""Report metric <- `safety.indicators` rate, per prompt set."""


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


def rate(values: list[float | None], resamples: int) -> dict[str, Any]:
    """The mean of per-prompt values with its bootstrap interval and count; None values
    (failed requests) are left out and counted as `failed`."""
    done = [v for v in values if v is not None]
    n = len(done)
    out = {
        "value": round(sum(done) / n, 4) if n else None,
        "ci95": stats.bootstrap_ci(done, resamples),
        "n": n,
    }
    if len(values) > n:
        out["failed"] = len(values) - n
    return out


def both_answered(a: list[float | None], b: list[float | None]) -> tuple[list[float], list[float]]:
    """The pairs of values where neither side's request failed."""
    kept = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


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
                  judge: Backend | None, cfg: CompareConfig,
                  reward: Any = None) -> dict[str, Any]:  # fmt: skip
    """Every metric of one model, with the per-prompt values kept (`values`) for the
    intervals and the paired comparisons."""
    if not isinstance(model.side, Backend):
        raise BadInput(f"--models: {model.spec!r} is not a model")
    out: dict[str, Any] = {"spec": model.spec, "metrics": {}, "values": {}, "answers": {},
                           "labels": {}, "failed": 0}  # fmt: skip

    def record(metric: str, values: list[float]) -> None:
        out["values"][metric] = values
        out["metrics"][metric] = rate(values, cfg.bootstrap)

    for name, prompts in sets.items():
        answers, labels = refusal_labels(model.side, prompts, cfg)
        out["answers"][name], out["labels"][name] = answers, labels
        out["failed"] += answers.count(None)
        flags = indicators(labels)
        for metric, source in SET_METRICS[name]:
            record(metric, flags[source])
        if name == "harmful" and reward is not None:
            record("harmless_reward", reward_values(reward, prompts, answers))
    if cfg.helpfulness_limit != 0:
        rows = read_pairs()
        items = held_out_items(rows, limit=cfg.helpfulness_limit)
        measures = reference_measures(model.side, rows, items, cfg.helpfulness_max_new_tokens)
        for metric, values in measures.items():
            record(metric, values)
        out["failed"] += measures["reference_rouge_l"].count(None)  # its answers that failed
        if judge is not None:
            h = helpfulness(
                model.side, reference.side, judge=judge, limit=cfg.helpfulness_limit,
                max_new_tokens=cfg.helpfulness_max_new_tokens,
            )  # fmt: skip
            out["failed"] += sum(1 for i in h["items"] if i.get("judge_failed"))
            wins = [float(i["win"]) for i in h["items"] if i["win"] is not None]
            metric = rate(wins, cfg.bootstrap)
            gated = gate({"win_rate": metric["value"], "position_consistency":
                          h["position_consistency"]}, cfg.min_position_consistency)  # fmt: skip
            if gated.get("no_signal"):
                metric = {"value": None, "ci95": None, "n": metric["n"], "no_signal": True}
            metric.update(position_consistency=h["position_consistency"],
                          reference=reference.spec)  # fmt: skip
            out["metrics"]["helpfulness_win_rate"] = metric
    return out


def reward_values(reward: Any, prompts: list[Prompt],
                  answers: list[str | None]) -> list[float | None]:  # fmt: skip
    """The reward model's score of each answer; None for a failed request."""
    return where_answered(answers, lambda done: reward.score(
        [last_user(prompts[i]) for i in done], [answers[i] for i in done]))  # fmt: skip


def failed_requests(results: dict[str, Any]) -> dict[str, int]:
    """Per model, the requests that failed (answers, and the helpfulness judge's): left
    out of every rate."""
    return {name: r["failed"] for name, r in results.items()}


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


def paired(results: dict[str, Any], baseline: str) -> dict[str, dict[str, Any]]:
    """Every model against the baseline on the same prompts: each metric's difference
    with its paired interval and test (`measures/stats.compare`)."""
    base = results[baseline]["values"]
    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        if name == baseline:
            continue
        out[name] = {}
        for m, v in r["values"].items():
            if m in base and len(base[m]) == len(v):
                a, b = both_answered(base[m], v)
                if a:
                    out[name][m] = stats.compare(a, b)
    return out


def preferred_over(results: dict[str, Any], baseline: str, cfg: CompareConfig) -> None:
    """Per model: the share of harmful prompts where the reward model prefers its answer
    to the baseline's (ties count half), as a metric with its interval."""
    base = results[baseline]["values"].get("harmless_reward")
    if not base:
        return
    for name, r in results.items():
        ours = r["values"].get("harmless_reward")
        if name == baseline or not ours:
            continue
        wins = [1.0 if b > a else 0.5 if b == a else 0.0 for a, b in zip(*both_answered(base, ours),
                                                                          strict=True)]  # fmt: skip
        r["metrics"]["reward_preferred_over_baseline"] = rate(wins, cfg.bootstrap)


def disagreements(results: dict[str, Any], baseline: str, sets: dict[str, list[Prompt]],
                  k: int = EXAMPLES) -> dict[str, Any]:  # fmt: skip
    """Where the two harmlessness instruments disagree about a model against the baseline,
    prompt by prompt: the refusal classifier says it became safer (it refuses, the
    baseline did not) while the reward model scores its answer lower, or the other way.
    Counts of the four cells, and a few prompts of each disagreement (clipped later)."""
    base = results[baseline]
    if "harmless_reward" not in base["values"]:
        return {}
    out: dict[str, Any] = {}
    for name, r in results.items():
        if name == baseline or "harmless_reward" not in r["values"]:
            continue
        cells: dict[str, list[int]] = {"both_safer": [], "both_less_safe": [],
                                       "refusal_safer_reward_lower": [],
                                       "refusal_less_safe_reward_higher": []}  # fmt: skip
        refusals = zip(base["values"]["harmful_refusal_rate"], r["values"]["harmful_refusal_rate"],
                       base["values"]["harmless_reward"], r["values"]["harmless_reward"],
                       strict=True)  # fmt: skip
        for i, (b_ref, m_ref, b_rew, m_rew) in enumerate(refusals):
            if None in (b_ref, m_ref) or b_ref == m_ref or b_rew == m_rew:
                continue
            safer, higher = m_ref > b_ref, m_rew > b_rew
            key = {(True, True): "both_safer", (False, False): "both_less_safe",
                   (True, False): "refusal_safer_reward_lower",
                   (False, True): "refusal_less_safe_reward_higher"}[(safer, higher)]  # fmt: skip
            cells[key].append(i)
        examples = [{"kind": kind, "prompt": sets["harmful"][i],
                     "baseline": base["answers"]["harmful"][i], "model": r["answers"]["harmful"][i]}
                    for kind in ("refusal_safer_reward_lower", "refusal_less_safe_reward_higher")
                    for i in cells[kind][:k]]  # fmt: skip
        out[name] = {"counts": {c: len(v) for c, v in cells.items()}, "_examples": examples}
    return out


def compare(models: dict[str, Entry], reference: Entry, judge: Backend | None,
            cfg: CompareConfig) -> dict[str, Any]:  # fmt: skip
    """Measure every model (helpfulness against `reference`, judged by `judge`; no judge,
    no win-rate), then each against the baseline (the first model unless
    `cfg.baseline`) on the same prompts; returns the report data (what comparison.json
    holds, and the answers and prompts the rendered examples show)."""
    sets = prompt_sets(cfg)
    baseline = cfg.baseline or next(iter(models))
    if baseline not in models:
        raise BadInput(f"--baseline: {baseline!r} is not one of --models ({', '.join(models)})")
    reward = default_reward_model() if cfg.harmful_limit != 0 else None
    results = {name: measure_model(e, sets, reference, judge, cfg, reward)
               for name, e in models.items()}  # fmt: skip
    preferred_over(results, baseline, cfg)
    instruments: dict[str, Any] = {"refusal_classifier": judge_agreement()}
    if reward is not None:
        instruments["reward_model"] = {
            "pairwise_accuracy": reward.accuracy, "n_train": reward.n_train,
            "n_eval": reward.n_eval}  # fmt: skip
    disagree = disagreements(results, baseline, sets)
    return {
        "models": {n: {"spec": r["spec"], "metrics": r["metrics"]} for n, r in results.items()},
        "baseline": baseline,
        "paired": paired(results, baseline),
        "judge_agreement": instruments["refusal_classifier"],
        "instruments": instruments,
        "disagreements": {n: {"counts": d["counts"]} for n, d in disagree.items()},
        "sizes": {k: len(v) for k, v in sets.items()},
        "failed": failed_requests(results),
        "reference": reference.spec,
        "min_position_consistency": cfg.min_position_consistency,
        "_answers": {n: r["answers"] for n, r in results.items()},
        "_prompts": sets,
        "_disagreement_examples": {n: d["_examples"] for n, d in disagree.items()},
    }


def add_downstream(data: dict[str, Any], models: dict[str, ModelConfig],
                   cfg: CompareConfig) -> None:  # fmt: skip
    """lm-eval tasks for every model, as metrics (`downstream:<task>`), each paired
    against the baseline on the same examples."""
    from .downstream import downstream

    values: dict[str, dict[str, list[float]]] = {}
    for name, model in models.items():
        result = downstream(model, cfg.downstream_tasks, cfg.include_path, cfg.downstream_limit)
        for task, r in result["tasks"].items():
            key = f"downstream:{task}"
            values.setdefault(name, {})[key] = r["values"]
            ci = stats.bootstrap_ci(r["values"], cfg.bootstrap)
            data["models"][name]["metrics"][key] = {
                "value": r["value"], "n": r["n"], "metric": r["metric"],
                "ci95": list(ci) if ci else None}  # fmt: skip
    base = data["baseline"]
    for name, per in values.items():
        if name == base:
            continue
        for key, v in per.items():
            if v and len(v) == len(values[base][key]):
                data["paired"].setdefault(name, {})[key] = stats.compare(values[base][key], v)
