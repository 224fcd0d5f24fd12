"""The comparison report: several models on every metric, with bootstrap intervals.

For each model (a spec: `embedded`, a local directory, `openai:NAME@URL`), one set of
greedy generations per prompt set goes through the call cache, so a rerun, or a model
that appears in two reports, generates nothing again. Metrics, per model:

- `harmful_refusal_rate`, `harmful_full_refusal_rate`: on harmful prompts (a prompt file,
  a run's dataset/test.jsonl, or by default the shipped HH-RLHF evaluation part);
- `xstest_safe_compliance_rate`, `xstest_unsafe_refusal_rate`: XSTest;
- `helpfulness_win_rate`: pairwise win-rate against the reference model on held-out
  AlpacaEval instructions, both orders (`helpfulness.py`), beside the judge's position
  consistency.

Every rate has a 95% percentile-bootstrap interval over prompts (1000 resamples, fixed
seed). Beside the refusal metrics stands the refusal classifier's measured agreement with
human labels (leave-one-file-out on the shipped XSTest completions). The report is
`R/comparison.html`, `R/comparison.md`, `R/comparison.json` and `R/comparison_files/*.png`.

    safer-instruct report --models base=embedded --models dpo=runs/a/dpo/model --out R
"""

from __future__ import annotations

import html
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import BadInput
from ..llm.base import Prompt
from ..llm.factory import parse_model_spec
from ..report import _CSS, CLIP, WARNING, _html_table, _img, _md_cell, _md_table, _png, _write, clip

EXAMPLES = 3
RATE_METRICS = (
    ("harmful_refusal_rate", "refusal rate on harmful prompts", "higher is safer"),
    ("harmful_full_refusal_rate", "full refusal rate on harmful prompts", "higher is safer"),
    ("xstest_safe_compliance_rate", "XSTest safe prompts fully complied", "higher is better"),
    ("xstest_unsafe_refusal_rate", "XSTest unsafe prompts refused", "higher is safer"),
    ("helpfulness_win_rate", "win-rate vs the reference (AlpacaEval held out)", "0.5 = tie"),
)

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
    reference: str | None = None
    """Helpfulness reference: a model spec or pairs:GENERATOR; default the first model."""
    judge: ModelConfig = field(default_factory=ModelConfig)
    max_new_tokens: int = 40
    helpfulness_max_new_tokens: int = 128
    cache: str | None = None
    bootstrap: int = 1000


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
    from .safety import harmful_prompts, xstest_prompts

    harmful = harmful_prompts(cfg.harmful_prompts, cfg.harmful_column, cfg.data, cfg.harmful_limit)
    return {
        "harmful": harmful,
        "xstest_safe": xstest_prompts("safe", cfg.xstest_limit),
        "xstest_unsafe": xstest_prompts("unsafe", cfg.xstest_limit),
    }


def refusal_labels(spec: str, prompts: list[Prompt], cfg: CompareConfig) -> tuple[list, list]:
    from .safety import classify, generate_answers

    answers = generate_answers(parse_model_spec(spec), prompts, cfg.max_new_tokens, cfg.cache)
    return answers, classify(prompts, answers)


def measure_model(spec: str, sets: dict[str, list[Prompt]], reference: str,
                  cfg: CompareConfig) -> dict[str, Any]:  # fmt: skip
    """Every metric of one model, with per-prompt values kept for the intervals."""
    from .helpfulness import helpfulness
    from .safety import indicators

    out: dict[str, Any] = {"spec": spec, "metrics": {}, "answers": {}}
    m = out["metrics"]
    for name, prompts in sets.items():
        answers, labels = refusal_labels(spec, prompts, cfg)
        out["answers"][name] = answers
        flags = indicators(labels)
        for metric, source in SET_METRICS[name]:
            m[metric] = rate(flags[source], cfg.bootstrap)
    if cfg.helpfulness_limit != 0:
        h = helpfulness(
            spec, reference, judge=cfg.judge, limit=cfg.helpfulness_limit,
            max_new_tokens=cfg.helpfulness_max_new_tokens, cache=cfg.cache,
        )  # fmt: skip
        wins = [float(i["win"]) for i in h["items"] if i["win"] is not None]
        m["helpfulness_win_rate"] = rate(wins, cfg.bootstrap)
        m["helpfulness_win_rate"]["position_consistency"] = h["position_consistency"]
        m["helpfulness_win_rate"]["reference"] = reference
    return out


def judge_agreement() -> dict[str, Any]:
    """The refusal classifier's leave-one-file-out agreement with human labels."""
    from .refusal import leave_one_file_out

    lofo = leave_one_file_out()
    per = {name: v["classifier"] for name, v in lofo["files"].items()}
    return {
        "refusal_classifier_2class": per,
        "mean": round(sum(per.values()) / len(per), 4),
        "min": lofo["min_classifier"],
    }


def compare(models: dict[str, str], cfg: CompareConfig) -> dict[str, Any]:
    """Measure every model; returns the report data (also what comparison.json holds)."""
    sets = prompt_sets(cfg)
    reference = cfg.reference or next(iter(models.values()))
    results = {name: measure_model(spec, sets, reference, cfg) for name, spec in models.items()}
    return {
        "models": {n: {"spec": r["spec"], "metrics": r["metrics"]} for n, r in results.items()},
        "judge_agreement": judge_agreement(),
        "sizes": {k: len(v) for k, v in sets.items()},
        "reference": reference,
        "_answers": {n: r["answers"] for n, r in results.items()},
        "_prompts": sets,
    }


# ---------------------------------------------------------------- rendering


def _cell(metric: dict[str, Any] | None) -> str:
    if not metric or metric["value"] is None:
        return "n/a"
    lo, hi = metric["ci95"]
    return f"{metric['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def metric_table(data: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    names = list(data["models"])
    rows = []
    for key, label, direction in RATE_METRICS:
        cells = [_cell(data["models"][n]["metrics"].get(key)) for n in names]
        if any(c != "n/a" for c in cells):
            rows.append([f"{label} ({direction})", *cells])
    return "Metrics (95% bootstrap interval)", ["metric", *names], rows


def judge_table(data: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    ja = data["judge_agreement"]
    rows = [[f"refusal classifier vs human labels: {f}", f"{v:.3f}"]
            for f, v in ja["refusal_classifier_2class"].items()]  # fmt: skip
    for name, r in data["models"].items():
        h = r["metrics"].get("helpfulness_win_rate")
        if h and h.get("position_consistency") is not None:
            rows.append([f"helpfulness judge position consistency ({name})",
                         f"{h['position_consistency']:.3f}"])  # fmt: skip
    return "How far the judges can be trusted", ["judge", "agreement"], rows


def metrics_png(data: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["models"])
    keys = [k for k, _, _ in RATE_METRICS
            if any(data["models"][n]["metrics"].get(k) for n in names)]  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 3.8))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals, errs = [], [[], []]
        for k in keys:
            m = data["models"][name]["metrics"].get(k) or {"value": None, "ci95": None}
            v = m["value"] or 0.0
            lo, hi = m["ci95"] or (v, v)
            vals.append(v)
            errs[0].append(max(0.0, v - lo))
            errs[1].append(max(0.0, hi - v))
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, vals, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("_rate", "").replace("_", "\n") for k in keys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def examples(data: dict[str, Any], k: int = EXAMPLES) -> list[dict[str, Any]]:
    """The first k harmful and k XSTest-safe prompts with each model's clipped answer."""
    out = []
    for set_name in ("harmful", "xstest_safe"):
        for i, prompt in enumerate(data["_prompts"][set_name][:k]):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            out.append({
                "set": set_name,
                "prompt": clip(text, CLIP),
                "answers": {n: clip(a[set_name][i], CLIP) for n, a in data["_answers"].items()},
            })  # fmt: skip
    return out


def render_html(data: dict[str, Any], png: bytes) -> str:
    models = ", ".join(f"{n} = {r['spec']}" for n, r in data["models"].items())
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Safer-Instruct model comparison</title><style>{_CSS}</style></head><body>",
        "<h1>Safer-Instruct model comparison</h1>",
        f"<p>Models: {html.escape(models)}. Prompts: {html.escape(json.dumps(data['sizes']))}. "
        "Helpfulness reference: "
        f"{html.escape(data['reference'])}.</p>",
        _img(png, "metrics"),
        _html_table(*metric_table(data)),
        _html_table(*judge_table(data)),
        f"<h2>Examples</h2><details><summary><b>{html.escape(WARNING)}</b> Click to show."
        "</summary>",
    ]
    for ex in examples(data):
        answers = "".join(f"<br><b>{html.escape(n)}:</b> {html.escape(a)}"
                          for n, a in ex["answers"].items())  # fmt: skip
        prompt = html.escape(ex["prompt"])
        parts.append(f"<div class=ex><b>{ex['set']}:</b> {prompt}{answers}</div>")
    parts.append("</details></body></html>")
    return "\n".join(parts)


def render_md(data: dict[str, Any], image: str) -> str:
    models = ", ".join(f"{n} = `{r['spec']}`" for n, r in data["models"].items())
    parts = [
        "# Safer-Instruct model comparison",
        f"Models: {models}. Prompts: {json.dumps(data['sizes'])}. "
        f"Helpfulness reference: `{data['reference']}`.",
        f"![metrics]({image})",
        _md_table(*metric_table(data)),
        _md_table(*judge_table(data)),
        "## Examples",
        f"<details>\n<summary>{html.escape(WARNING)} Click to show.</summary>\n",
    ]
    for ex in examples(data):
        lines = [f"- **{ex['set']}:** {_md_cell(ex['prompt'])}"]
        lines += [f"  - {_md_cell(n)}: {_md_cell(a)}" for n, a in ex["answers"].items()]
        parts.append("\n".join(lines))
    parts.append("</details>")
    return "\n\n".join(parts) + "\n"


def write_comparison(models: dict[str, str], out: str | Path,
                     cfg: CompareConfig | None = None) -> dict[str, Any]:  # fmt: skip
    """Measure and write R/comparison.{html,md,json} and the plot; returns the summary."""
    out = Path(out)
    data = compare(models, cfg or CompareConfig())
    png = metrics_png(data)
    (out / "comparison_files").mkdir(parents=True, exist_ok=True)
    _write(out / "comparison_files" / "metrics.png", png)
    _write(out / "comparison.html", render_html(data, png))
    _write(out / "comparison.md", render_md(data, "comparison_files/metrics.png"))
    public = {k: v for k, v in data.items() if not k.startswith("_")}
    _write(out / "comparison.json", json.dumps(public, indent=1))
    return public
