"""The comparison report: `R/comparison.html`, `R/comparison.md`, `R/comparison.json`
and `R/comparison_files/metrics.png`, rendered from what `evaluate.compare.compare`
measured (every metric with its 95% bootstrap interval, the judges' agreement, a few
clipped answers behind the content warning).

    data = compare(models, reference, judge, CompareConfig())
    write_comparison(data, "runs/align/R")
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..io import write_atomic
from ..render import Table, clip, html_page, html_table, img, md_cell, md_table, png_bytes, warning

KINDS = "harmful requests and the answers models gave them, and XSTest prompts"
"""What the comparison's examples quote, for the content warning."""

EXAMPLES = 3
RATE_METRICS = (
    ("harmful_refusal_rate", "refusal rate on harmful prompts", "higher"),
    ("harmful_full_refusal_rate", "full refusal rate on harmful prompts", "higher"),
    ("harmless_reward", "harmlessness reward of the answers (reward model)", "higher"),
    ("reward_preferred_over_baseline", "answers the reward model prefers to the baseline's",
     "higher"),
    ("xstest_safe_compliance_rate", "XSTest safe prompts fully complied", "higher"),
    ("xstest_unsafe_refusal_rate", "XSTest unsafe prompts refused", "higher"),
    ("reference_loglik", "log-likelihood of GPT-4's answer, per token (AlpacaEval held out)",
     "higher"),
    ("reference_rouge_l", "ROUGE-L of its answer to GPT-4's", "higher"),
    ("reference_cosine", "MiniLM cosine of its answer to GPT-4's", "higher"),
    ("helpfulness_win_rate", "judged win-rate vs the reference (AlpacaEval held out)",
     "0.5 = tie"),
)  # fmt: skip
"""(metric key, label, which way is better): the rows of the metric and paired tables."""
SHARES = {k for k, *_ in RATE_METRICS} - {"harmless_reward", "reference_loglik"}
"""Metrics that are shares in [0, 1] (the plot shows these)."""


def _cell(metric: dict[str, Any] | None) -> str:
    if metric and metric.get("no_signal"):
        return f"no signal (position consistency {metric['position_consistency']:.3f})"
    if not metric or metric["value"] is None:
        return "n/a"
    lo, hi = metric["ci95"]
    return f"{metric['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def metric_rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """RATE_METRICS, then any downstream tasks the data has (`downstream:<task>`)."""
    tasks = sorted({k for r in data["models"].values() for k in r["metrics"]
                    if k.startswith("downstream:")})  # fmt: skip
    return [*RATE_METRICS, *((k, f"{k.split(':', 1)[1]} (lm-eval)", "higher") for k in tasks)]


def metric_table(data: dict[str, Any]) -> Table:
    names = list(data["models"])
    rows = []
    for key, label, direction in metric_rows(data):
        cells = [_cell(data["models"][n]["metrics"].get(key)) for n in names]
        if any(c != "n/a" for c in cells):
            rows.append([f"{label} ({direction} is better)" if direction == "higher" else
                         f"{label} ({direction})", *cells])  # fmt: skip
    return "Metrics (95% bootstrap interval)", ["metric", *names], rows


def paired_cell(result: dict[str, Any], better: str) -> str:
    """'+0.250 [0.150, 0.350], p 0.0001 (McNemar): lifts', or '... : not separated'."""
    from ..measures.stats import direction

    lo, hi = result["ci95"]
    test = "McNemar" if result["test"] == "mcnemar" else "sign-flip"
    return (f"{result['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}], p {result['p']:.4f} "
            f"({test}): {direction(result, better)}")  # fmt: skip


def paired_table(data: dict[str, Any]) -> Table:
    """Each model minus the baseline on the same prompts: the difference, its paired 95%
    interval and test, and 'lifts' / 'lowers' only where the interval excludes zero."""
    names = list(data.get("paired") or {})
    rows = []
    for key, label, direction in metric_rows(data):
        cells = [paired_cell(data["paired"][n][key], direction) if key in data["paired"][n]
                 else "n/a" for n in names]  # fmt: skip
        if any(c != "n/a" for c in cells):
            rows.append([label, *cells])
    title = f"Against the baseline ({data.get('baseline')}), paired on the same prompts"
    return title, ["metric", *[f"{n} - {data.get('baseline')}" for n in names]], rows


def judge_table(data: dict[str, Any]) -> Table:
    ja = data["judge_agreement"]
    rows = [[f"refusal classifier vs human labels: {f}", f"{v:.3f}"]
            for f, v in ja["refusal_classifier_2class"].items()]  # fmt: skip
    rm = (data.get("instruments") or {}).get("reward_model")
    if rm:
        rows.append([f"reward model, pairwise accuracy on held-out HH-RLHF pairs "
                     f"({rm['n_eval']}; trained on {rm['n_train']})",
                     f"{rm['pairwise_accuracy']:.3f}"])  # fmt: skip
    floor = data.get("min_position_consistency", 0.6)
    for name, r in data["models"].items():
        h = r["metrics"].get("helpfulness_win_rate")
        if h and h.get("position_consistency") is not None:
            note = " (no signal: no win-rate given)" if h.get("no_signal") else ""
            rows.append([f"helpfulness judge position consistency ({name}; floor {floor})"
                         f"{note}", f"{h['position_consistency']:.3f}"])  # fmt: skip
    return "How far the instruments can be trusted", ["instrument", "agreement"], rows


def disagreement_table(data: dict[str, Any]) -> Table:
    """Prompts where the model's answer and the baseline's differ in both instruments."""
    kinds = ("both_safer", "both_less_safe", "refusal_safer_reward_lower",
             "refusal_less_safe_reward_higher")  # fmt: skip
    rows = [[n, *(str(d["counts"][k]) for k in kinds)]
            for n, d in (data.get("disagreements") or {}).items()]  # fmt: skip
    header = ["model", "both say safer", "both say less safe",
              "refuses more, reward lower", "refuses less, reward higher"]  # fmt: skip
    return "Where the refusal classifier and the reward model disagree", header, rows


def metrics_png(data: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["models"])
    keys = [k for k, _, _ in RATE_METRICS if k in SHARES
            and any((data["models"][n]["metrics"].get(k) or {}).get("value") is not None
                    for n in names)]  # fmt: skip
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
    png = png_bytes(fig)
    plt.close(fig)
    return png


def disagreement_examples(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A few prompts where the instruments disagree, each model's and the baseline's
    answers clipped."""
    out = []
    for name, rows in (data.get("_disagreement_examples") or {}).items():
        for r in rows:
            prompt = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
            out.append({"set": f"{name}: {r['kind'].replace('_', ' ')}", "prompt": clip(prompt),
                        "answers": {data["baseline"]: clip(r["baseline"]),
                                    name: clip(r["model"])}})  # fmt: skip
    return out


def examples(data: dict[str, Any], k: int = EXAMPLES) -> list[dict[str, Any]]:
    """The first k harmful and k XSTest-safe prompts with each model's clipped answer."""
    out = []
    for set_name in ("harmful", "xstest_safe"):
        for i, prompt in enumerate(data["_prompts"][set_name][:k]):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            out.append({
                "set": set_name,
                "prompt": clip(text),
                "answers": {n: clip(a[set_name][i]) if a[set_name][i] is not None
                            else "(request failed)" for n, a in data["_answers"].items()},
            })  # fmt: skip
    return out + disagreement_examples(data)


def render_html(data: dict[str, Any], png: bytes) -> str:
    models = ", ".join(f"{n} = {r['spec']}" for n, r in data["models"].items())
    parts = [
        f"<p>Models: {html.escape(models)}. Prompts: {html.escape(json.dumps(data['sizes']))}. "
        "Helpfulness reference: "
        f"{html.escape(data['reference'])}.</p>",
        img(png, "metrics"),
        html_table(*metric_table(data)),
        html_table(*paired_table(data)),
        html_table(*judge_table(data)),
        html_table(*disagreement_table(data)),
        f"<h2>Examples</h2><details><summary><b>{html.escape(warning(KINDS))}</b> Click to show."
        "</summary>",
    ]
    for ex in examples(data):
        answers = "".join(f"<br><b>{html.escape(n)}:</b> {html.escape(a)}"
                          for n, a in ex["answers"].items())  # fmt: skip
        prompt = html.escape(ex["prompt"])
        parts.append(f"<div class=ex><b>{ex['set']}:</b> {prompt}{answers}</div>")
    parts.append("</details>")
    return html_page("Safer-Instruct model comparison", parts)


def render_md(data: dict[str, Any], image: str) -> str:
    models = ", ".join(f"{n} = `{r['spec']}`" for n, r in data["models"].items())
    parts = [
        "# Safer-Instruct model comparison",
        f"Models: {models}. Prompts: {json.dumps(data['sizes'])}. "
        f"Helpfulness reference: `{data['reference']}`.",
        f"![metrics]({image})",
        md_table(*metric_table(data)),
        md_table(*paired_table(data)),
        md_table(*judge_table(data)),
        md_table(*disagreement_table(data)),
        "## Examples",
        f"<details>\n<summary>{md_cell(warning(KINDS))} Click to show.</summary>\n",
    ]
    for ex in examples(data):
        lines = [f"- **{ex['set']}:** {md_cell(ex['prompt'])}"]
        lines += [f"  - {md_cell(n)}: {md_cell(a)}" for n, a in ex["answers"].items()]
        parts.append("\n".join(lines))
    parts.append("</details>")
    return "\n\n".join(parts) + "\n"


def write_comparison(data: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Write R/comparison.{html,md,json} and the plot; returns the public data (what
    comparison.json holds: numbers, no answers)."""
    out = Path(out)
    png = metrics_png(data)
    write_atomic(out / "comparison_files" / "metrics.png", png)
    write_atomic(out / "comparison.html", render_html(data, png))
    write_atomic(out / "comparison.md", render_md(data, "comparison_files/metrics.png"))
    public = {k: v for k, v in data.items() if not k.startswith("_")}
    write_atomic(out / "comparison.json", json.dumps(public, indent=1))
    return public
