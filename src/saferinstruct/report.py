"""The data report: `DIR/report.html`, `DIR/report.md` and the numbers in `DIR/report.json`.

Built from a run directory alone: the stage files (`DIR/stages/NN-<stage>.jsonl`), the
dataset (`DIR/dataset/{train,test}.jsonl`) and, when present, `DIR/config.yaml` (for the
template and near-duplicate thresholds). It shows the funnel per category as a plot,
the filter and judge score histograms, duplicate and template shares, the diversity of
instructions (distinct-2, mean pairwise MiniLM distance), the drop reasons, and a few
examples cut to 160 characters behind a content warning (a collapsed <details> block).
The HTML is self-contained (plots embedded as base64 PNG); the Markdown references
`DIR/report_files/*.png`. `report.json` holds numbers only, never text.

    from saferinstruct.report import write_data_report
    html_path, md_path = write_data_report("runs/quick")
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInput
from .io import read_jsonl
from .pipeline.assemble import dropped_at, funnel, reason_key
from .pipeline.respond import normalise, template_share

CLIP = 160
EXAMPLES_PER_CATEGORY = 3
MAX_DIVERSITY_TEXTS = 2000
SCORE_STAGES = ("filter", "judge")
DUPLICATE_KINDS = ("duplicate source text", "duplicate instruction", "near-duplicate instruction")
WARNING = (
    "Content warning: this data is built from real harmful text (for example hate speech "
    "and self-harm). The examples section quotes short, truncated excerpts; it is "
    "collapsed by default."
)


# ---------------------------------------------------------------- small measures


def clip(text: Any, limit: int = CLIP) -> str:
    """Whitespace collapsed and cut to at most `limit` characters (ending in '…')."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over `texts` (0.0 when there are none)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = re.findall(r"\w+", t.lower())
        grams.extend(zip(*(words[i:] for i in range(n)), strict=False))
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_pairwise_distance(texts: list[str]) -> float | None:
    """Mean 1 - cosine of MiniLM embeddings over all pairs (a sample of 2000 at most)."""
    if len(texts) < 2:
        return None
    from .evaluate.embed import embed

    if len(texts) > MAX_DIVERSITY_TEXTS:
        texts = random.Random(0).sample(texts, MAX_DIVERSITY_TEXTS)
    vecs = embed(texts)
    sims = vecs @ vecs.T
    n = len(texts)
    mean_sim = (float(sims.sum()) - float(sims.trace())) / (n * (n - 1))
    return 1.0 - mean_sim


def histogram(values: list[float], bins: int = 10) -> dict[str, list]:
    edges = [i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        counts[min(int(max(v, 0.0) * bins), bins - 1)] += 1
    return {"edges": edges, "counts": counts}


# ---------------------------------------------------------------- reading the run


def _stage_files(run_dir: Path) -> list[Path]:
    files = sorted((run_dir / "stages").glob("[0-9][0-9]-*.jsonl*"))
    if not files:
        raise BadInput(f"{run_dir}: no stage files under stages/ (run the pipeline first)")
    return files


def _dataset(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for split in ("train", "test"):
        path = run_dir / "dataset" / f"{split}.jsonl"
        if path.exists():
            rows.extend({**r, "split": split} for r in read_jsonl(path))
    return rows


def _thresholds(run_dir: Path) -> dict[str, float]:
    out = {"template": 0.9, "near_duplicate": 0.95}
    path = run_dir / "config.yaml"
    if path.exists():
        doc = yaml.safe_load(path.read_text()) or {}
        out["template"] = (doc.get("respond") or {}).get("template_similarity", 0.9)
        out["near_duplicate"] = (doc.get("assemble") or {}).get("near_duplicate_threshold", 0.95)
    return out


def _message(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return value[-1]["content"] if isinstance(value, list) and value else str(value or "")


def _by_category(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.get("category") or "default", []).append(r)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- figures of the report


def score_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per verdict stage (filter, judge): scores of kept and dropped verdicts."""
    out: dict[str, Any] = {}
    for stage in SCORE_STAGES:
        kept, dropped = [], []
        for r in records:
            for v in r.get("verdicts") or []:
                score = v.get("score")
                if v.get("stage") == stage and isinstance(score, int | float):
                    (kept if v.get("kept") else dropped).append(float(score))
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
        c: template_share([_message(r, "chosen") for r in rows], threshold)
        for c, rows in groups.items()
    }
    if len(groups) > 1:
        out["all"] = template_share([_message(r, "chosen") for r in pairs], threshold)
    return out


def duplicate_stats(records: list[dict[str, Any]], fun: dict[str, Any]) -> dict[str, Any]:
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
            "mean_pairwise_distance": mean_pairwise_distance(texts),
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


def collect(run_dir: Path) -> dict[str, Any]:
    """Every number of the report (report.json) plus the clipped examples."""
    files = _stage_files(run_dir)
    fun = funnel(files)
    records = list(read_jsonl(files[-1]))
    pairs = _dataset(run_dir)
    thresholds = _thresholds(run_dir)
    return {
        "run_dir": str(run_dir),
        "counts": {
            "sources": fun["overall"]["in"],
            "final": fun["overall"]["kept"],
            "train": sum(r["split"] == "train" for r in pairs),
            "test": sum(r["split"] == "test" for r in pairs),
        },
        "thresholds": thresholds,
        "funnel": fun,
        "scores": score_stats(records),
        "templates": template_stats(pairs, thresholds["template"]),
        "duplicates": duplicate_stats(records, fun),
        "diversity": diversity_stats(pairs),
        "drop_reasons": {s["stage"]: s["top_drop_reasons"] for s in fun["stages"]},
        "_examples": examples(pairs),
    }


# ---------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


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
    return _png(fig)


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
    return _png(fig)


# ---------------------------------------------------------------- tables


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


Table = tuple[str, list[str], list[list[str]]]


def _funnel_table(fun: dict[str, Any]) -> Table:
    rows = [
        [s["stage"], cat, _fmt(r["in"]), _fmt(r["kept"]), _fmt(r["dropped"])]
        for s in fun["stages"]
        for cat, r in [("all", s), *s["by_category"].items()]
    ]
    return "Funnel", ["stage", "category", "in", "kept", "dropped"], rows


def _reasons_table(reasons: dict[str, list[dict[str, Any]]]) -> Table:
    rows = [[stage, r["reason"], _fmt(r["count"])] for stage, rs in reasons.items() for r in rs]
    return "Drop reasons", ["stage", "reason", "count"], rows


def _template_table(templates: dict[str, Any], threshold: float) -> Table:
    keys = ["n", "top_response_share", "exact_duplicate_share", "near_template_share"]
    header = ["category", "n", "most common share", "exact-duplicate share"]
    header += [f"near-template share (cos >= {threshold})", "distinct share"]
    rows = [[c, *(_fmt(t[k]) for k in [*keys, "distinct_share"])] for c, t in templates.items()]
    return "Template answers (chosen responses in the dataset)", header, rows


def _duplicate_table(duplicates: dict[str, Any]) -> Table:
    rows = [
        [c, _fmt(d["in"]), *(_fmt(d[k]) for k in DUPLICATE_KINDS)] for c, d in duplicates.items()
    ]
    title = "Duplicates removed at assembly (share of its input)"
    return title, ["category", "in", *DUPLICATE_KINDS], rows


def _diversity_table(diversity: dict[str, Any]) -> Table:
    keys = ["n", "distinct_2", "mean_pairwise_distance"]
    rows = [[c, *(_fmt(d[k]) for k in keys)] for c, d in diversity.items()]
    header = ["category", "n", "distinct-2", "mean pairwise distance (1 - cos)"]
    return "Diversity of instructions", header, rows


def _score_table(scores: dict[str, Any]) -> Table:
    rows = [[stage, _fmt(s["n"]), _fmt(s["mean"])] for stage, s in scores.items()]
    return "Scores", ["stage", "verdicts", "mean score"], rows


def tables(data: dict[str, Any]) -> list[Table]:
    """(title, header, rows) for every table of the report, shared by HTML and Markdown."""
    return [
        _funnel_table(data["funnel"]),
        _reasons_table(data["drop_reasons"]),
        _template_table(data["templates"], data["thresholds"]["template"]),
        _duplicate_table(data["duplicates"]),
        _diversity_table(data["diversity"]),
        _score_table(data["scores"]),
    ]


# ---------------------------------------------------------------- HTML


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;font-size:14px}th{background:#f3f3f3}.warn{background:#fff3cd;"
    "border:1px solid #e0c36c;padding:.6em 1em}details{margin:1em 0}"
    ".ex{border-left:3px solid #ccc;padding-left:.6em;margin:.6em 0;font-size:14px}"
)


def _html_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        or f"<tr><td colspan={len(header)}>none</td></tr>"
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _html_examples(ex: dict[str, Any]) -> str:
    parts = [f"<details><summary><b>{html.escape(WARNING)}</b> Click to show.</summary>"]
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


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{b64}" style="max-width:100%">'


def render_html(data: dict[str, Any], pngs: dict[str, bytes]) -> str:
    c = data["counts"]
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>Safer-Instruct data report</title><style>{_CSS}</style></head><body>",
        "<h1>Safer-Instruct data report</h1>",
        f"<p class=warn>{html.escape(WARNING)}</p>",
        f"<p>{c['sources']} source records in, {c['final']} pairs out "
        f"({c['train']} train, {c['test']} test).</p>",
        _img(pngs["funnel"], "funnel"),
    ]
    if "scores" in pngs:
        parts.append("<h2>Score distributions</h2>" + _img(pngs["scores"], "scores"))
    parts.extend(_html_table(*t) for t in tables(data))
    parts.append("<h2>Examples</h2>" + _html_examples(data["_examples"]))
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return html.escape(text).replace("|", "\\|")


def _md_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines if rows else lines[:1] + ["", "none"])


def _md_examples(ex: dict[str, Any]) -> str:
    lines = ["<details>", f"<summary>{html.escape(WARNING)} Click to show.</summary>", ""]
    for cat, e in ex.items():
        lines += [
            f"### {html.escape(cat)}",
            "",
            f"Most common chosen response ({e['top_chosen_count']}x): "
            f"*{_md_cell(e['top_chosen'])}*",
            "",
        ]
        for p in e["pairs"]:
            lines += [
                f"- **{_md_cell(p['id'])}**",
                f"  - instruction: {_md_cell(p['instruction'])}",
                f"  - chosen: {_md_cell(p['chosen'])}",
                f"  - rejected: {_md_cell(p['rejected'])}",
            ]
        lines.append("")
    return "\n".join(lines + ["</details>"])


def render_md(data: dict[str, Any], images: dict[str, str]) -> str:
    c = data["counts"]
    parts = [
        "# Safer-Instruct data report",
        f"> **{WARNING}**",
        f"{c['sources']} source records in, {c['final']} pairs out "
        f"({c['train']} train, {c['test']} test).",
        f"![funnel]({images['funnel']})",
    ]
    if "scores" in images:
        parts.append(f"## Score distributions\n\n![scores]({images['scores']})")
    parts.extend(_md_table(*t) for t in tables(data))
    parts.append("## Examples\n\n" + _md_examples(data["_examples"]))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- entry point


def _write(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)


def write_data_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html, report.md, report.json and report_files/*.png; returns html, md."""
    run_dir = Path(run_dir)
    data = collect(run_dir)
    pngs = {"funnel": funnel_png(data["funnel"])}
    scores = scores_png(data["scores"])
    if scores is not None:
        pngs["scores"] = scores
    files = run_dir / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, png in pngs.items():
        _write(files / f"{name}.png", png)
        images[name] = f"report_files/{name}.png"
    numbers = {k: v for k, v in data.items() if not k.startswith("_")}
    _write(run_dir / "report.json", json.dumps(numbers, indent=2))
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    _write(html_path, render_html(data, pngs))
    _write(md_path, render_md(data, images))
    return html_path, md_path
