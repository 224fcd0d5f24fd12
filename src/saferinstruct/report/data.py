"""The data report: `DIR/report.html`, `DIR/report.md` and the numbers in `DIR/report.json`.

Built from a run directory alone (`RunDir`): the funnel `assemble` wrote, the last stage
file, the dataset and, when present, the resolved config (for the template and
near-duplicate thresholds; its defaults otherwise). It shows the funnel per category as a
plot, the filter and judge score histograms, duplicate and template shares, the diversity
of instructions (distinct-2, mean pairwise MiniLM distance), the drop reasons, and a few
examples cut to 160 characters behind a content warning that names the run's categories
(a collapsed <details> block). The HTML is self-contained (plots embedded as base64 PNG);
the Markdown references `DIR/report_files/*.png`. `report.json` holds numbers only.

    from saferinstruct.report.data import write_data_report
    html_path, md_path = write_data_report(RunDir("runs/quick"))
"""

from __future__ import annotations

import html
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import RunConfig, load_run_config
from ..errors import BadInput
from ..io import count_records, read_jsonl
from ..measures.audit import audit_run
from ..measures.embed import embed
from ..measures.similarity import mean_pairwise_distance, template_share
from ..measures.splits import hash_fraction
from ..measures.text import distinct_n, normalise
from ..records import dropped_at, reason_key
from ..render import (
    Table,
    clip,
    fmt,
    html_page,
    html_table,
    img,
    md_cell,
    md_table,
    png_bytes,
    warning,
)
from ..rundir import SPLITS, RunDir

EXAMPLES_PER_CATEGORY = 3
MAX_DIVERSITY_TEXTS = 2000
MAX_REPORT_PAIRS = 5000
"""Above this many pairs, the text measures (template shares, diversity, examples) use a
stable sample: the report reads the stage file and the dataset as streams."""
SCORE_STAGES = ("filter", "judge")
DUPLICATE_KINDS = ("duplicate source text", "duplicate instruction", "near-duplicate instruction")


# ---------------------------------------------------------------- small measures


def diversity_distance(texts: list[str]) -> float | None:
    """Mean pairwise MiniLM distance of `texts` (a sample of 2000 at most)."""
    if len(texts) < 2:
        return None
    if len(texts) > MAX_DIVERSITY_TEXTS:
        texts = random.Random(0).sample(texts, MAX_DIVERSITY_TEXTS)
    return mean_pairwise_distance(embed(texts))


def chosen_template_share(texts: list[str], threshold: float) -> dict[str, Any]:
    """`template_share` of chosen responses, embedded here (no vectors for fewer than 2)."""
    return template_share(texts, embed(texts) if len(texts) > 1 else None, threshold)


def histogram(values: list[float], bins: int = 10) -> dict[str, list]:
    edges = [i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        counts[min(int(max(v, 0.0) * bins), bins - 1)] += 1
    return {"edges": edges, "counts": counts}


# ---------------------------------------------------------------- reading the run


def _dataset(run: RunDir) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The dataset's rows for the text measures (all, or a stable sample of about
    `MAX_REPORT_PAIRS` by a hash of the id, for a big dataset) and the rows per split."""
    paths = {split: run.split(split) for split in SPLITS if run.split(split).exists()}
    total = sum(count_records(p) for p in paths.values())
    share = min(1.0, MAX_REPORT_PAIRS / total) if total else 1.0
    rows, counts = [], dict.fromkeys(SPLITS, 0)
    for split, path in paths.items():
        for r in read_jsonl(path):
            counts[split] += 1
            if share >= 1.0 or hash_fraction(str(r.get("id"))) < share:
                rows.append({**r, "split": split})
    return rows, counts


def _thresholds(run: RunDir) -> dict[str, float]:
    """From the run's resolved config, else the config defaults."""
    cfg = load_run_config(run.config) if run.config.exists() else RunConfig()
    return {
        "template": cfg.respond.template_similarity,
        "near_duplicate": cfg.assemble.near_duplicate_threshold,
    }


def _message(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return value[-1]["content"] if isinstance(value, list) and value else str(value or "")


def _by_category(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.get("category") or "default", []).append(r)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- figures of the report


def score_stats(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per verdict stage (filter, judge): scores of kept and dropped verdicts (one pass)."""
    seen: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in SCORE_STAGES}
    for r in records:
        for v in r.get("verdicts") or []:
            score = v.get("score")
            if v.get("stage") in seen and isinstance(score, int | float):
                seen[v["stage"]][0 if v.get("kept") else 1].append(float(score))
    out: dict[str, Any] = {}
    for stage, (kept, dropped) in seen.items():
        if kept or dropped:
            everything = kept + dropped
            out[stage] = {
                "n": len(everything),
                "mean": sum(everything) / len(everything),
                "kept": histogram(kept),
                "dropped": histogram(dropped),
            }
    return out


def template_stats(pairs: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    groups = _by_category(pairs)
    out = {
        c: chosen_template_share([_message(r, "chosen") for r in rows], threshold)
        for c, rows in groups.items()
    }
    if len(groups) > 1:
        out["all"] = chosen_template_share([_message(r, "chosen") for r in pairs], threshold)
    return out


def duplicate_stats(records: Iterable[dict[str, Any]], fun: dict[str, Any]) -> dict[str, Any]:
    """Per category: shares of the records entering assemble dropped as duplicates."""
    stage = next((s for s in fun["stages"] if s["stage"] == "assemble"), None)
    if stage is None:
        return {}
    counts: dict[str, Counter] = {}
    for r in records:
        if dropped_at(r) == "assemble":
            cat = r.get("category") or "default"
            counts.setdefault(cat, Counter())[reason_key(r.get("drop_reason"))] += 1
    rows = {**stage["by_category"], "all": {"in": stage["in"]}}
    out = {}
    for cat, row in rows.items():
        c = sum(counts.values(), Counter()) if cat == "all" else counts.get(cat, Counter())
        n = row["in"]
        out[cat] = {"in": n, **{k: (c[k] / n if n else 0.0) for k in DUPLICATE_KINDS}}
    return out


def diversity_stats(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    groups = _by_category(pairs)
    if len(groups) > 1:
        groups["all"] = pairs
    out = {}
    for cat, rows in groups.items():
        texts = [_message(r, "prompt") for r in rows]
        out[cat] = {
            "n": len(texts),
            "distinct_2": distinct_n(texts, 2),
            "mean_pairwise_distance": diversity_distance(texts),
        }
    return out


def examples(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per category: a few pairs and the most common chosen response, all clipped."""
    out = {}
    for cat, rows in _by_category(pairs).items():
        rows = sorted(rows, key=lambda r: (r["split"] != "train", str(r.get("id"))))
        top = Counter(normalise(_message(r, "chosen")) for r in rows).most_common(1)
        out[cat] = {
            "pairs": [
                {
                    "id": str(r.get("id")),
                    "instruction": clip(_message(r, "prompt")),
                    "chosen": clip(_message(r, "chosen")),
                    "rejected": clip(_message(r, "rejected")),
                }
                for r in rows[:EXAMPLES_PER_CATEGORY]
            ],
            "top_chosen": clip(top[0][0]) if top else "",
            "top_chosen_count": top[0][1] if top else 0,
        }
    return out


def judge_audit(run: RunDir) -> dict[str, Any]:
    """The judge audited on the person's labels (`measures.audit`); not audited when the
    run has no labels or no judge stage."""
    if not run.stage("judge").exists():
        return {"audited": False, "labels": 0, "labels_file": str(run.labels)}
    return audit_run(run)


def collect(run: RunDir) -> dict[str, Any]:
    """Every number of the report (report.json) plus the clipped examples."""
    files = run.stage_files()
    if not files:
        raise BadInput(f"{run.root}: no stage files (run the pipeline first)")
    fun = run.read_funnel()
    pairs, splits = _dataset(run)
    thresholds = _thresholds(run)
    return {
        "run_dir": str(run.root),
        "counts": {
            "sources": fun["overall"]["in"],
            "final": fun["overall"]["kept"],
            **splits,
            "text_measures_over": len(pairs),
        },
        "thresholds": thresholds,
        "funnel": fun,
        "scores": score_stats(read_jsonl(files[-1])),
        "templates": template_stats(pairs, thresholds["template"]),
        "duplicates": duplicate_stats(read_jsonl(files[-1]), fun),
        "diversity": diversity_stats(pairs),
        "drop_reasons": {s["stage"]: s["top_drop_reasons"] for s in fun["stages"]},
        "judge_audit": judge_audit(run),
        "_examples": examples(pairs),
    }


# ---------------------------------------------------------------- plots


def funnel_png(fun: dict[str, Any]) -> bytes:
    """Grouped bars: records kept after each stage, one bar per category."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stages = fun["stages"]
    cats = sorted({c for s in stages for c in s["by_category"]}) or ["default"]
    fig = Figure(figsize=(max(6.0, 1.4 * len(stages)), 3.8))
    ax = fig.add_subplot()
    width = 0.8 / len(cats)
    for j, cat in enumerate(cats):
        xs = [i + (j - (len(cats) - 1) / 2) * width for i in range(len(stages))]
        ys = [s["by_category"].get(cat, {}).get("kept", 0) for s in stages]
        bars = ax.bar(xs, ys, width, label=cat)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(stages)), [s["stage"] for s in stages])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("records kept after the stage")
    ax.set_title("Funnel per category")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def scores_png(scores: dict[str, Any]) -> bytes | None:
    """One histogram per verdict stage, kept and dropped stacked."""
    if not scores:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.2 * len(scores), 3.2))
    for i, (stage, s) in enumerate(scores.items()):
        ax = fig.add_subplot(1, len(scores), i + 1)
        edges = s["kept"]["edges"]
        mids = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
        w = edges[1] - edges[0]
        ax.bar(mids, s["kept"]["counts"], w * 0.95, label="kept")
        ax.bar(mids, s["dropped"]["counts"], w * 0.95, bottom=s["kept"]["counts"], label="dropped")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{stage} score")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("verdicts")
        ax.legend(fontsize=8)
    return png_bytes(fig)


# ---------------------------------------------------------------- tables


def _funnel_table(fun: dict[str, Any]) -> Table:
    rows = [
        [s["stage"], cat, fmt(r["in"]), fmt(r["kept"]), fmt(r["dropped"])]
        for s in fun["stages"]
        for cat, r in [("all", s), *s["by_category"].items()]
    ]
    return "Funnel", ["stage", "category", "in", "kept", "dropped"], rows


def _reasons_table(reasons: dict[str, list[dict[str, Any]]]) -> Table:
    rows = [[stage, r["reason"], fmt(r["count"])] for stage, rs in reasons.items() for r in rs]
    return "Drop reasons", ["stage", "reason", "count"], rows


def _template_table(templates: dict[str, Any], threshold: float) -> Table:
    keys = ["n", "top_response_share", "exact_duplicate_share", "near_template_share"]
    header = ["category", "n", "most common share", "exact-duplicate share"]
    header += [f"near-template share (cos >= {threshold})", "distinct share"]
    rows = [[c, *(fmt(t[k]) for k in [*keys, "distinct_share"])] for c, t in templates.items()]
    return "Template answers (chosen responses in the dataset)", header, rows


def _duplicate_table(duplicates: dict[str, Any]) -> Table:
    rows = [
        [c, fmt(d["in"]), *(fmt(d[k]) for k in DUPLICATE_KINDS)] for c, d in duplicates.items()
    ]
    title = "Duplicates removed at assembly (share of its input)"
    return title, ["category", "in", *DUPLICATE_KINDS], rows


def _diversity_table(diversity: dict[str, Any]) -> Table:
    keys = ["n", "distinct_2", "mean_pairwise_distance"]
    rows = [[c, *(fmt(d[k]) for k in keys)] for c, d in diversity.items()]
    header = ["category", "n", "distinct-2", "mean pairwise distance (1 - cos)"]
    return "Diversity of instructions", header, rows


def _score_table(scores: dict[str, Any]) -> Table:
    rows = [[stage, fmt(s["n"]), fmt(s["mean"])] for stage, s in scores.items()]
    return "Scores", ["stage", "verdicts", "mean score"], rows


AUDIT_HINT = ("label pairs with `safer-instruct review RUN_DIR`, then run "
              "`safer-instruct eval judge-audit RUN_DIR`")


def audit_text(audit: dict[str, Any]) -> str:
    """The sentence over the judge audit: what it rests on, or that there is none."""
    if not audit.get("audited"):
        return f"Not audited: no labels on judged pairs ({AUDIT_HINT})."
    lab, run = audit["labelled"], audit["run"]
    text = (f"{audit['labels']} labelled pairs ({lab['bad']} bad; {lab['judge_dropped']} "
            f"the judge dropped, {lab['judge_kept']} it kept, of {run['judge_dropped']} and "
            f"{run['judge_kept']} in the run). A dropped pair is flagged; precision = flagged "
            "pairs labelled bad, recall = bad pairs flagged (each stratum weighted by its size "
            "in the run).")  # fmt: skip
    if audit.get("stale"):
        text += f" {audit['stale']} labels were made on pairs that changed since: not counted."
    return text


def _audit_table(audit: dict[str, Any]) -> Table:
    rows = [[key, fmt(audit[key]["value"]),
             "" if not audit[key]["ci95"] else f"[{fmt(audit[key]['ci95'][0])}, "
                                               f"{fmt(audit[key]['ci95'][1])}]",
             fmt(audit[key]["n"])] for key in ("precision", "recall", "agreement")]  # fmt: skip
    return "Judge audit on your labels", ["figure", "value", "95% interval", "labels"], rows


def tables(data: dict[str, Any]) -> list[Table]:
    """(title, header, rows) for every table of the report, shared by HTML and Markdown."""
    return [
        _funnel_table(data["funnel"]),
        _reasons_table(data["drop_reasons"]),
        _template_table(data["templates"], data["thresholds"]["template"]),
        _duplicate_table(data["duplicates"]),
        _diversity_table(data["diversity"]),
        _score_table(data["scores"]),
        *([_audit_table(data["judge_audit"])] if data["judge_audit"].get("audited") else []),
    ]


# ---------------------------------------------------------------- HTML


def kinds(data: dict[str, Any]) -> str:
    """The run's categories, for the content warning."""
    return ", ".join(sorted(data["funnel"].get("by_category") or {})) or "harmful text"


def _html_examples(ex: dict[str, Any], warn: str) -> str:
    parts = [f"<details><summary><b>{html.escape(warn)}</b> Click to show.</summary>"]
    for cat, e in ex.items():
        parts.append(f"<h3>{html.escape(cat)}</h3>")
        parts.append(
            f"<p>Most common chosen response ({e['top_chosen_count']}x): "
            f"<i>{html.escape(e['top_chosen'])}</i></p>"
        )
        for p in e["pairs"]:
            parts.append(
                f"<div class=ex><b>{html.escape(p['id'])}</b><br>"
                f"<b>instruction:</b> {html.escape(p['instruction'])}<br>"
                f"<b>chosen:</b> {html.escape(p['chosen'])}<br>"
                f"<b>rejected:</b> {html.escape(p['rejected'])}</div>"
            )
    parts.append("</details>")
    return "".join(parts)


def sampled(counts: dict[str, Any]) -> str:
    """The sentence saying the text measures use a sample, when they do."""
    n, total = counts.get("text_measures_over"), counts["train"] + counts["test"]
    if n is None or n >= total:
        return ""
    return (f" Template shares, diversity and examples are over a stable sample of {n} of "
            f"the {total} pairs (by a hash of the id).")  # fmt: skip


def render_html(data: dict[str, Any], pngs: dict[str, bytes]) -> str:
    c = data["counts"]
    parts = [
        f"<p class=warn>{html.escape(warning(kinds(data)))}</p>",
        f"<p>{c['sources']} source records in, {c['final']} pairs out "
        f"({c['train']} train, {c['test']} test).{html.escape(sampled(c))}</p>",
        img(pngs["funnel"], "funnel"),
    ]
    if "scores" in pngs:
        parts.append("<h2>Score distributions</h2>" + img(pngs["scores"], "scores"))
    parts.extend(html_table(*t) for t in tables(data))
    parts.append(f"<p class=audit>{html.escape(audit_text(data['judge_audit']))}</p>")
    parts.append("<h2>Examples</h2>" + _html_examples(data["_examples"], warning(kinds(data))))
    return html_page("Safer-Instruct data report", parts)


# ---------------------------------------------------------------- Markdown


def _md_examples(ex: dict[str, Any], warn: str) -> str:
    lines = ["<details>", f"<summary>{md_cell(warn)} Click to show.</summary>", ""]
    for cat, e in ex.items():
        lines += [
            f"### {md_cell(cat)}",
            "",
            f"Most common chosen response ({e['top_chosen_count']}x): "
            f"*{md_cell(e['top_chosen'])}*",
            "",
        ]
        for p in e["pairs"]:
            lines += [
                f"- **{md_cell(p['id'])}**",
                f"  - instruction: {md_cell(p['instruction'])}",
                f"  - chosen: {md_cell(p['chosen'])}",
                f"  - rejected: {md_cell(p['rejected'])}",
            ]
        lines.append("")
    return "\n".join(lines + ["</details>"])


def render_md(data: dict[str, Any], images: dict[str, str]) -> str:
    c = data["counts"]
    parts = [
        "# Safer-Instruct data report",
        f"> **{warning(kinds(data))}**",
        f"{c['sources']} source records in, {c['final']} pairs out "
        f"({c['train']} train, {c['test']} test).{sampled(c)}",
        f"![funnel]({images['funnel']})",
    ]
    if "scores" in images:
        parts.append(f"## Score distributions\n\n![scores]({images['scores']})")
    parts.extend(md_table(*t) for t in tables(data))
    parts.append(audit_text(data["judge_audit"]))
    parts.append("## Examples\n\n" + _md_examples(data["_examples"], warning(kinds(data))))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- entry point


def write_data_report(run: RunDir) -> tuple[Path, Path]:
    """Write report.html, report.md, report.json and report_files/*.png; returns html, md."""
    data = collect(run)
    pngs = {"funnel": funnel_png(data["funnel"])}
    scores = scores_png(data["scores"])
    if scores is not None:
        pngs["scores"] = scores
    images = {}
    for name, png in pngs.items():
        path = run.write(run.report_image(name), png)
        images[name] = run.relative(path)
    numbers = {k: v for k, v in data.items() if not k.startswith("_")}
    run.write_json(run.report_json, numbers)
    run.write(run.report_html, render_html(data, pngs))
    run.write(run.report_md, render_md(data, images))
    return run.report_html, run.report_md
