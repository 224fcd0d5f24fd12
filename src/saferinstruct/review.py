"""`safer-instruct review RUN_DIR`: read a finished run in the browser and label its pairs.

    safer-instruct review runs/quickstart             # then open http://127.0.0.1:8765
    safer-instruct review runs/quickstart --port 9000

In Python: `review("runs/quickstart")` reads the run and serves it until stopped;
`create_app(load_run("runs/quickstart"))` builds the app without serving it.

The page is one HTML document (inline script and style; nothing is fetched from anywhere
but this server). It opens on a content warning: source texts, instructions, responses
and the expert's own words stay hidden until the reader clicks "I understand, show texts"
(ids, categories, statuses, drop reasons and scores are shown either way). Then:

- browse every record of one stage file, by category, kept or dropped, and drop reason
  (grouped with `records.reason_key`), or search (a substring of the id, instruction,
  source text or chosen response);
- open a record to see its way through the stages: what each stage added (the source
  text, the induced instruction and its candidates, the filter verdict, the response
  tries, the judge verdict) and the final pair as the dataset holds it;
- label a pair (a record with a `chosen` response) good or bad, with a reason for bad
  (`labels.REASONS`), by click or key: g good, b bad, 1-5 a reason (bad), j/k next and
  previous; "sample pairs" walks the pairs the judge saw in a seeded random order,
  kept and dropped by the judge taking turns.

A label is appended to `RUN_DIR/labels.jsonl` and fsynced before the page is told it is
saved (`labels.append_label`): a reload, a crash or a killed server loses nothing the
page showed as saved.

JSON endpoints, beside the page at `/`:

- `GET /api/meta`: the run, its stages and categories, the label and reason lists.
- `GET /api/records?stage=&category=&status=&reason=&q=`: one stage's records, filtered,
  as list rows, with the counts to filter by (`facets`).
- `GET /api/record?id=`: one record's way through the stages and its final pair.
- `GET /api/sample?seed=`: every pair the judge saw, kept and dropped alternating.
- `GET /api/labels`: each record's current label (`stale` when its pair has changed).
- `POST /api/labels` `{id, label, reason}`: save one label; 400 for a record without a
  pair or a label or reason not on the lists.

It binds 127.0.0.1 unless told otherwise. It logs its address and nothing per request
(no access log), so record text never reaches a log.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from . import labels as L
from .errors import BadInput
from .io import read_jsonl
from .records import Record, dropped_at, is_kept, reason_key
from .render import clip
from .rundir import SPLITS, STAGES, RunDir

log = logging.getLogger("saferinstruct")

DEFAULT_PORT = 8765
SNIPPET_CHARS = 140
SEARCHED = ("id", "instruction", "text", "chosen")
"""The fields the search box looks in."""
BOOKKEEPING = ("id", "category", "status", "drop_reason", "verdicts")
"""Fields every record carries: shown in a step's header, not as what the stage added."""


# -- the run, read once ---------------------------------------------------------------
@dataclass
class ReviewRun:
    """A finished run in memory: each stage's records by id (in file order, dropped ones
    included) and the dataset's rows by id (with their split)."""

    run: RunDir
    stages: dict[str, dict[str, Record]]
    pairs: dict[str, dict[str, Any]]

    @property
    def last(self) -> dict[str, Record]:
        """The last stage's records: every record, as the run left it."""
        return self.stages[list(self.stages)[-1]]

    def latest(self, rid: str) -> Record | None:
        """A record as the last stage that saw it left it (None: no such id)."""
        for records in reversed(self.stages.values()):
            if rid in records:
                return records[rid]
        return None


def check_finished(run: RunDir) -> None:
    """BadInput, in one line naming the path, unless `run` is a finished run directory."""
    if not run.root.is_dir():
        raise BadInput(f"review: {run.root}: no such run directory")
    if run.incomplete():
        raise BadInput(f"review: {run.root}: its last run did not finish; run it again "
                       "first (finished work comes from the call cache)")  # fmt: skip
    if not run.stage(STAGES[-1]).exists():
        raise BadInput(f"review: {run.root}: not a finished run (no "
                       f"{run.relative(run.stage(STAGES[-1]))})")  # fmt: skip


def load_run(path: str | Path) -> ReviewRun:
    """Read a finished run's stage files and dataset; BadInput when it is not one."""
    run = RunDir(Path(path))
    check_finished(run)
    stages = {name: {str(r["id"]): r for r in read_jsonl(run.stage(name))}
              for name in STAGES if run.stage(name).exists()}  # fmt: skip
    pairs: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        if run.split(split).exists():
            for row in read_jsonl(run.split(split)):
                pairs[str(row.get("id"))] = {**row, "split": split}
    return ReviewRun(run, stages, pairs)


# -- what the page shows --------------------------------------------------------------
def list_row(record: Record, latest: Record) -> dict[str, Any]:
    """One line of the record list: safe facts, and a snippet the page hides until asked."""
    kept = is_kept(record)
    return {
        "id": str(record["id"]),
        "category": record.get("category"),
        "status": "kept" if kept else "dropped",
        "reason": None if kept else reason_key(record.get("drop_reason")),
        "dropped_at": dropped_at(record),
        "pair": bool(latest.get("chosen")),
        "judge_kept": L.judge_kept(latest),
        "snippet": clip(record.get("instruction") or record.get("text"), SNIPPET_CHARS),
    }


@dataclass
class Filters:
    """What the list is narrowed to (empty: no narrowing)."""

    category: str = ""
    status: str = ""
    reason: str = ""
    q: str = ""

    def match(self, record: Record) -> bool:
        kept = is_kept(record)
        if self.category and str(record.get("category")) != self.category:
            return False
        if self.status and self.status != ("kept" if kept else "dropped"):
            return False
        if self.reason and (kept or reason_key(record.get("drop_reason")) != self.reason):
            return False
        return not self.q or searched(record, self.q)


def searched(record: Record, query: str) -> bool:
    """Whether `query` is a substring (any case) of the record's id, instruction, text or
    chosen response."""
    needle = query.casefold()
    return any(needle in str(record.get(k) or "").casefold() for k in SEARCHED)


def facets(records: list[Record]) -> dict[str, dict[str, int]]:
    """The counts the filters offer: by category, by status, by drop reason."""
    return {
        "category": dict(Counter(str(r.get("category")) for r in records).most_common()),
        "status": dict(Counter("kept" if is_kept(r) else "dropped" for r in records)),
        "reason": dict(Counter(reason_key(r.get("drop_reason"))
                               for r in records if not is_kept(r)).most_common()),  # fmt: skip
    }


def stage_verdict(record: Record, stage: str) -> dict[str, Any] | None:
    """The stage's verdict on the record, merged with what the stage stored under its own
    name (filter and judge keep the expert's answer there)."""
    verdicts = [v for v in record.get("verdicts") or [] if v.get("stage") == stage]
    stored = record.get(stage) if isinstance(record.get(stage), dict) else {}
    if not verdicts and not stored:
        return None
    merged = {**(verdicts[-1] if verdicts else {}), **stored}
    merged.pop("stage", None)
    return merged


def step(stage: str, record: Record, before: Record) -> dict[str, Any]:
    """What one stage made of the record: its status after, its verdict, and the fields it
    added or changed (the source text, the instruction, the chosen response, ...)."""
    kept = is_kept(record)
    added = {k: v for k, v in record.items()
             if k not in BOOKKEEPING and k != stage and before.get(k) != v}  # fmt: skip
    return {"stage": stage, "status": "kept" if kept else "dropped",
            "reason": None if kept else reason_key(record.get("drop_reason")),
            "drop_reason": record.get("drop_reason"),
            "verdict": stage_verdict(record, stage), "added": added}  # fmt: skip


def record_view(data: ReviewRun, rid: str) -> dict[str, Any]:
    """One record's way through the stages, and its pair (as the dataset holds it, or as
    the judge saw it when it is not in the dataset)."""
    latest = data.latest(rid)
    if latest is None:
        raise HTTPException(404, f"no record {rid!r}")
    steps, before = [], {}
    for stage, records in data.stages.items():
        if rid in records:
            steps.append(step(stage, records[rid], before))
            before = records[rid]
    return {**list_row(latest, latest), "steps": steps, "final": final_pair(data, latest)}


def final_pair(data: ReviewRun, record: Record) -> dict[str, Any] | None:
    """The pair to label: instruction, chosen, rejected, and where it ended up."""
    if not record.get("chosen"):
        return None
    row = data.pairs.get(str(record["id"]))
    if row is not None:
        return {"instruction": _content(row.get("prompt")), "chosen": _content(row.get("chosen")),
                "rejected": _content(row.get("rejected")), "split": row["split"],
                "in_dataset": True}  # fmt: skip
    return {"instruction": record.get("instruction"), "chosen": record.get("chosen"),
            "rejected": record.get("text"), "split": None, "in_dataset": False}  # fmt: skip


def _content(messages: Any) -> str:
    """The text of a dataset row's message list (TRL's conversational format)."""
    if isinstance(messages, list):
        return "\n\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return str(messages or "")


def sample(data: ReviewRun, seed: int) -> list[dict[str, Any]]:
    """Every pair the judge saw, in a seeded random order, judge-kept and judge-dropped
    taking turns (the longer side's rest at the end)."""
    rng = random.Random(seed)
    sides: dict[bool, list[Record]] = {True: [], False: []}
    for record in data.last.values():
        verdict = L.judge_kept(record)
        if record.get("chosen") and verdict is not None:
            sides[verdict].append(record)
    for side in sides.values():
        rng.shuffle(side)
    kept, dropped = sides[True], sides[False]
    order = [r for pair in zip(kept, dropped, strict=False) for r in pair]
    n = min(len(kept), len(dropped))
    order += kept[n:] + dropped[n:]
    return [list_row(r, r) for r in order]


def current_labels(data: ReviewRun) -> dict[str, dict[str, Any]]:
    """Each record's last label, marked `stale` when its pair changed since."""
    out = {}
    for rid, line in L.read_labels(data.run.labels).items():
        record = data.latest(rid)
        stale = record is None or line.get("pair_sha256") != L.pair_sha256(record)
        out[rid] = {**line, "stale": stale}
    return out


# -- the app --------------------------------------------------------------------------
class LabelBody(BaseModel):
    """A label the page saves: `label` good, bad or null (cleared); a reason for bad."""

    id: str
    label: str | None
    reason: str | None = None


def save_label(data: ReviewRun, body: LabelBody) -> dict[str, Any]:
    """Append the label (fsynced) and answer with the line saved; 400/404 when refused."""
    record = data.latest(body.id)
    if record is None:
        raise HTTPException(404, f"no record {body.id!r}")
    if not record.get("chosen"):
        raise HTTPException(400, f"record {body.id!r} has no pair to label")
    try:
        line = L.append_label(data.run.labels, record, body.label, body.reason)
    except BadInput as exc:
        raise HTTPException(400, str(exc)) from None
    return {**line, "stale": False}


def meta(data: ReviewRun) -> dict[str, Any]:
    last = list(data.last.values())
    return {
        "run": str(data.run.root),
        "stages": list(data.stages),
        "categories": sorted({str(r.get("category")) for r in last}),
        "labels": list(L.LABELS),
        "reasons": list(L.REASONS),
        "counts": {"records": len(last), "pairs": sum(bool(r.get("chosen")) for r in last),
                   "in_dataset": len(data.pairs)},  # fmt: skip
    }


def create_app(data: ReviewRun) -> FastAPI:
    """The review app over a run read by `load_run`; serves nothing by itself."""
    app = FastAPI(title="safer-instruct review", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/meta")
    def get_meta() -> dict[str, Any]:
        return meta(data)

    @app.get("/api/records")
    def get_records(stage: str = "", category: str = "", status: str = "", reason: str = "",
                    q: str = "") -> dict[str, Any]:  # fmt: skip
        name = stage or list(data.stages)[-1]
        if name not in data.stages:
            raise HTTPException(400, f"stage {name!r}: this run has {', '.join(data.stages)}")
        records = list(data.stages[name].values())
        wanted = Filters(category, status, reason, q.strip())
        rows = [list_row(r, data.latest(str(r["id"])) or r) for r in records if wanted.match(r)]
        return {"stage": name, "rows": rows, "facets": facets(records)}

    @app.get("/api/record")
    def get_record(id: str) -> dict[str, Any]:
        return record_view(data, id)

    @app.get("/api/sample")
    def get_sample(seed: int = 0) -> dict[str, Any]:
        return {"seed": seed, "rows": sample(data, seed)}

    @app.get("/api/labels")
    def get_labels() -> dict[str, Any]:
        return current_labels(data)

    @app.post("/api/labels")
    def post_label(body: LabelBody) -> dict[str, Any]:
        return save_label(data, body)

    return app


def review(run_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Read the finished run at `run_dir` (BadInput when it is not one), then serve the
    review page until stopped. No access log: nothing a request carries is logged."""
    import uvicorn

    data = load_run(run_dir)
    log.info("review: %s (%d records, labels in %s) on http://%s:%d", data.run.root,
             len(data.last), data.run.labels, host, port)  # fmt: skip
    uvicorn.run(create_app(data), host=host, port=port, log_level="warning", access_log=False)


# -- the page -------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>safer-instruct review</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #2d3a4a; color: #fff; padding: 6px 12px; display: flex; gap: 14px;
         align-items: center; flex-wrap: wrap; }
header button { font-size: 12px; }
#status.error { color: #ffb4b4; font-weight: bold; }
main { display: flex; height: calc(100vh - 70px); }
#left { width: 44%; border-right: 1px solid #ccc; display: flex; flex-direction: column; }
.filters { padding: 8px; display: flex; flex-wrap: wrap; gap: 6px 10px; background: #f4f5f7; }
.filters input[type=search] { flex: 1 1 100%; padding: 4px; }
#list-wrap { overflow: auto; flex: 1; }
#list { border-collapse: collapse; width: 100%; font-size: 13px; }
#list td { padding: 3px 6px; border-bottom: 1px solid #eee; vertical-align: top; }
#list td:first-child, #list td.label { white-space: nowrap; }
#list tr { cursor: pointer; }
#list tr.current { background: #dde8ff; }
#list-info { padding: 4px 8px; font-size: 12px; color: #555; }
#detail { flex: 1; overflow: auto; padding: 10px 16px; }
.kept { color: #176b2c; } .dropped { color: #a32020; }
.badge { display: inline-block; border-radius: 3px; padding: 0 5px; font-size: 12px;
         background: #eee; }
.badge.good { background: #cdeccf; } .badge.bad { background: #f6cdcd; }
.badge.pending { background: #fff2b3; } .badge.failed { background: #a32020; color: #fff; }
.hidden-text { color: #888; font-style: italic; }
.text { white-space: pre-wrap; background: #fafafa; border: 1px solid #e3e3e3; padding: 4px 6px;
        max-height: 14em; overflow: auto; margin: 2px 0; }
.step { border-left: 3px solid #9ab; padding: 2px 10px; margin: 8px 0; }
.step h4 { margin: 2px 0; }
dl { margin: 2px 0 2px 8px; display: grid; grid-template-columns: max-content 1fr; gap: 1px 10px; }
dt { color: #555; } dd { margin: 0; }
ol { margin: 2px 0; padding-left: 22px; }
.pair { border: 1px solid #bbc; padding: 6px 10px; border-radius: 4px; background: #f9fafc; }
.labelbox { margin: 8px 0; } .labelbox button { margin: 2px; }
.labelbox button.armed { outline: 2px solid #a32020; }
.muted { color: #777; }
footer { font-size: 12px; color: #555; padding: 3px 12px; border-top: 1px solid #ccc; }
#warning { position: fixed; inset: 0; background: rgba(20, 25, 35, .92); display: flex;
           align-items: center; justify-content: center; z-index: 10; }
#warning[hidden] { display: none; }
#warning .box { background: #fff; max-width: 560px; padding: 20px 26px; border-radius: 6px; }
#warning h1 { color: #a32020; margin-top: 0; }
</style></head>
<body>
<div id="warning" role="dialog" aria-labelledby="warning-title">
 <div class="box">
  <h1 id="warning-title">Content warning</h1>
  <p>This run is built from harmful source texts<span id="warning-categories"></span>: its
  source texts (the rejected side), instructions, responses and the expert's own words may
  be offensive or disturbing.</p>
  <p>They stay hidden until you choose to see them. Ids, categories, statuses, drop reasons
  and scores are shown either way.</p>
  <button id="ack">I understand, show texts</button>
  <button id="ack-hidden">Browse with texts hidden</button>
 </div>
</div>
<header>
 <b>safer-instruct review</b> <span id="run"></span> <span id="counts"></span>
 <span id="label-count"></span>
 <button id="toggle-texts">show texts</button>
 <span id="status" role="status"></span>
</header>
<main>
 <section id="left">
  <div class="filters">
   <label>stage <select id="stage"></select></label>
   <label>category <select id="category"></select></label>
   <label>status <select id="status-filter"><option value="">all</option>
     <option value="kept">kept</option><option value="dropped">dropped</option></select></label>
   <label>drop reason <select id="reason"></select></label>
   <input id="search" type="search" placeholder="search id, instruction, text, chosen ( / )">
   <span>
    <button id="mode-browse">browse</button>
    <button id="mode-sample">sample pairs</button>
    <label>seed <input id="seed" type="number" value="0" style="width:5em"></label>
    <label><input id="advance" type="checkbox" checked> next after a label</label>
   </span>
  </div>
  <div id="list-info"></div>
  <div id="list-wrap"><table id="list"><tbody></tbody></table></div>
 </section>
 <section id="detail"><p class="muted">Pick a record (j / k to move).</p></section>
</main>
<footer>keys: j or n next &middot; k or p previous &middot; g good &middot; b bad, then
1-5 its reason (or 1-5 at once) &middot; / search &middot; s sample / browse &middot;
t show / hide texts</footer>
<script>
"use strict";
const MAX_ROWS = 2000;
const SAFE = new Set(["id", "category", "status", "stage", "model", "mode", "outcome", "split",
  "label", "labels", "finish_reason", "candidate_problems", "kept", "in_dataset"]);
const state = {shown: false, meta: null, rows: [], index: -1, mode: "browse", labels: {},
  pending: {}, failed: {}, saved: [], inflight: 0, armed: false, record: null, asked: 0};
window.reviewState = state;
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid !== null && kid !== undefined) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(detail || response.statusText);
  }
  return body;
}

function say(message, error) {
  $("status").textContent = message;
  $("status").className = error ? "error" : "";
}

// -- texts: hidden until the reader asks -------------------------------------------------
function text(value) {
  if (!state.shown) return el("span", {class: "hidden-text"}, "[hidden]");
  return el("div", {class: "text"}, value);
}

function value(v, key) {
  if (v === null || v === undefined) return el("span", {class: "muted"}, "none");
  if (v === "") return el("span", {class: "muted"}, "(empty)");
  if (Array.isArray(v)) return el("ol", {}, v.map((x) => el("li", {}, value(x, key))));
  if (typeof v === "object") {
    const pairs = Object.entries(v).map(([k, x]) => [el("dt", {}, k), el("dd", {}, value(x, k))]);
    return el("dl", {}, pairs);
  }
  if (typeof v === "string" && !SAFE.has(key)) return text(v);
  if (typeof v === "number" && !Number.isInteger(v)) return el("span", {}, v.toFixed(3));
  return el("span", {}, String(v));
}

function showTexts(on) {
  state.shown = on;
  $("warning").hidden = true;
  $("toggle-texts").textContent = on ? "hide texts" : "show texts";
  renderList();
  renderDetail();
}

// -- labels ----------------------------------------------------------------------------
function labelBadge(id) {
  if (state.pending[id]) return el("span", {class: "badge pending"}, "saving…");
  if (state.failed[id]) return el("span", {class: "badge failed"}, "not saved");
  const line = state.labels[id];
  if (!line) return "";
  const words = line.label + (line.reason ? ": " + line.reason : "")
                + (line.stale ? " (stale)" : "");
  return el("span", {class: "badge " + line.label}, words);
}

function currentRow() { return state.rows[state.index]; }

function countLabels() {
  const lines = Object.values(state.labels);
  const good = lines.filter((l) => l.label === "good").length;
  $("label-count").textContent = "labels: " + good + " good, " + (lines.length - good) + " bad";
}

async function save(label, reason) {
  const row = currentRow();
  if (!row || !row.pair) { say("no pair to label here", true); return; }
  const id = row.id;
  state.pending[id] = {label, reason};
  state.inflight += 1;
  state.armed = false;
  updateRow(id);
  if ($("advance").checked && state.index < visibleCount() - 1) select(state.index + 1);
  else renderDetail();
  try {
    const line = await api("/api/labels", {method: "POST",
      headers: {"content-type": "application/json"}, body: JSON.stringify({id, label, reason})});
    state.labels[id] = line;
    delete state.failed[id];
    state.saved.push({id, label: line.label, reason: line.reason});
    countLabels();
    say("saved " + id + ": " + line.label + (line.reason ? " (" + line.reason + ")" : ""));
  } catch (err) {
    state.failed[id] = String(err.message || err);
    say("NOT saved " + id + ": " + state.failed[id], true);
  } finally {
    delete state.pending[id];
    state.inflight -= 1;
    updateRow(id);
    if (state.record && state.record.id === id) renderDetail();
  }
}

function armBad() {
  const row = currentRow();
  if (!row || !row.pair) { say("no pair to label here", true); return; }
  state.armed = true;
  say("bad: pick a reason, 1-" + state.meta.reasons.length);
  renderDetail();
}

function labelBox(rec) {
  const reasons = state.meta.reasons.map((r, i) =>
    el("button", {class: "reason" + (state.armed ? " armed" : ""), "data-reason": r,
                  onclick: () => save("bad", r)}, (i + 1) + " " + r));
  return el("div", {class: "labelbox"},
    el("b", {}, "label: "), el("span", {id: "current-label"}, labelBadge(rec.id) || "none"), " ",
    el("button", {id: "good", onclick: () => save("good", null)}, "g good"),
    el("button", {id: "bad", class: state.armed ? "armed" : "", onclick: armBad}, "b bad"),
    el("div", {}, el("span", {class: "muted"}, "bad because: "), reasons));
}

// -- the list ----------------------------------------------------------------------------
function visibleCount() { return Math.min(state.rows.length, MAX_ROWS); }

function judgeWord(row) {
  if (!row.pair) return "";
  return row.judge_kept === null ? "pair" : row.judge_kept ? "judge kept" : "judge dropped";
}

function rowCells(row) {
  return [el("td", {}, row.id), el("td", {}, row.category),
    el("td", {class: row.status}, row.status + (row.reason ? ": " + row.reason : "")),
    el("td", {}, judgeWord(row)), el("td", {class: "label"}, labelBadge(row.id)),
    el("td", {class: "snippet"}, state.shown ? row.snippet : "")];
}

function renderList() {
  const body = $("list").tBodies[0];
  body.replaceChildren(...state.rows.slice(0, MAX_ROWS).map((row, i) =>
    el("tr", {"data-id": row.id, "data-label": (state.labels[row.id] || {}).label || "",
              class: i === state.index ? "current" : "", onclick: () => select(i)},
       rowCells(row))));
  const more = state.rows.length > MAX_ROWS ? " (showing the first " + MAX_ROWS + ")" : "";
  const what = state.mode === "sample" ? "pairs in sample order, seed " + $("seed").value
                                       : "records";
  $("list-info").textContent = state.rows.length + " " + what + more;
}

function updateRow(id) {
  const tr = document.querySelector('#list tr[data-id="' + CSS.escape(id) + '"]');
  if (!tr) return;
  const row = state.rows.find((r) => r.id === id);
  tr.replaceChildren(...rowCells(row));
  tr.setAttribute("data-label", (state.labels[id] || {}).label || "");
}

function select(i) {
  if (i < 0 || i >= visibleCount()) return;
  state.index = i;
  state.armed = false;
  for (const tr of $("list").tBodies[0].rows) tr.classList.toggle("current", tr.rowIndex === i);
  const tr = $("list").tBodies[0].rows[i];
  if (tr) tr.scrollIntoView({block: "nearest"});
  loadRecord(state.rows[i].id);
}

async function loadRecord(id) {
  const asked = ++state.asked;
  const rec = await api("/api/record?id=" + encodeURIComponent(id));
  if (asked !== state.asked) return;
  state.record = rec;
  renderDetail();
}

// -- one record --------------------------------------------------------------------------
function pairBox(rec) {
  const pair = rec.final;
  const where = pair.in_dataset ? "in the dataset (" + pair.split + ")"
                                : "not in the dataset (dropped: " + (rec.reason || "") + ")";
  return el("div", {class: "pair", id: "pair"},
    el("h3", {}, "The pair ", el("span", {class: "muted"}, where)),
    el("b", {}, "instruction"), text(pair.instruction),
    el("b", {}, "chosen"), text(pair.chosen),
    el("b", {}, "rejected (the source text)"), text(pair.rejected),
    labelBox(rec));
}

function stepBox(s) {
  const head = el("h4", {}, s.stage + " ", el("span", {class: s.status}, s.status),
                  s.reason ? " (" + s.reason + ")" : "");
  const parts = [head];
  if (s.verdict) {
    parts.push(el("div", {class: "verdict"}, el("i", {}, "verdict"), value(s.verdict)));
  }
  if (Object.keys(s.added).length) {
    parts.push(el("div", {class: "added"}, el("i", {}, "added"), value(s.added)));
  }
  return el("section", {class: "step", "data-stage": s.stage}, parts);
}

function renderDetail() {
  const rec = state.record;
  if (!rec) return;
  const words = rec.status + (rec.reason ? ": " + rec.reason : "");
  const none = "No pair to label: dropped before a response was written.";
  $("detail").replaceChildren(
    el("h2", {}, rec.id + " ", el("span", {class: "badge"}, rec.category), " ",
       el("span", {class: rec.status}, words)),
    rec.final ? pairBox(rec) : el("p", {class: "muted"}, none),
    el("h3", {}, "Its way through the stages"),
    el("div", {id: "steps"}, rec.steps.map(stepBox)));
}

// -- filters and modes -------------------------------------------------------------------
function options(select, counts, all) {
  const keep = select.value;
  select.replaceChildren(el("option", {value: ""}, all),
    ...Object.entries(counts).map(([k, n]) => el("option", {value: k}, k + " (" + n + ")")));
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
}

async function loadList() {
  const q = new URLSearchParams({stage: $("stage").value, category: $("category").value,
    status: $("status-filter").value, reason: $("reason").value, q: $("search").value});
  const data = await api("/api/records?" + q);
  options($("category"), data.facets.category, "all");
  options($("reason"), data.facets.reason, "all");
  state.rows = data.rows;
  state.index = -1;
  renderList();
  if (state.rows.length) select(0);
}

async function loadSample() {
  const data = await api("/api/sample?seed=" + encodeURIComponent($("seed").value || "0"));
  state.rows = data.rows;
  state.index = -1;
  renderList();
  const first = state.rows.findIndex((r) => !state.labels[r.id]);
  if (state.rows.length) select(first >= 0 ? first : 0);
}

function setMode(mode) {
  state.mode = mode;
  $("mode-browse").disabled = mode === "browse";
  $("mode-sample").disabled = mode === "sample";
  for (const id of ["stage", "category", "status-filter", "reason", "search"]) {
    $(id).disabled = mode === "sample";
  }
  return mode === "sample" ? loadSample() : loadList();
}

function onKey(e) {
  if (e.target.matches("input, select, textarea")) {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey || !$("warning").hidden) return;
  const k = e.key;
  const n = state.meta.reasons.length;
  if (k === "j" || k === "n" || k === "ArrowDown") select(state.index + 1);
  else if (k === "k" || k === "p" || k === "ArrowUp") select(state.index - 1);
  else if (k === "g") save("good", null);
  else if (k === "b") armBad();
  else if (/^[1-9]$/.test(k) && Number(k) <= n) save("bad", state.meta.reasons[Number(k) - 1]);
  else if (k === "/") $("search").focus();
  else if (k === "s") setMode(state.mode === "sample" ? "browse" : "sample");
  else if (k === "t") showTexts(!state.shown);
  else return;
  e.preventDefault();
}

let searchTimer = null;
async function start() {
  state.meta = await api("/api/meta");
  state.labels = await api("/api/labels");
  $("run").textContent = state.meta.run;
  countLabels();
  const c = state.meta.counts;
  $("counts").textContent = c.records + " records, " + c.pairs + " pairs, "
                            + c.in_dataset + " in the dataset";
  $("warning-categories").textContent = " (" + state.meta.categories.join(", ") + ")";
  $("stage").replaceChildren(...state.meta.stages.map((s) => el("option", {value: s}, s)));
  $("stage").value = state.meta.stages[state.meta.stages.length - 1];
  $("ack").onclick = () => showTexts(true);
  $("ack-hidden").onclick = () => showTexts(false);
  $("toggle-texts").onclick = () => showTexts(!state.shown);
  $("mode-browse").onclick = () => setMode("browse");
  $("mode-sample").onclick = () => setMode("sample");
  $("seed").onchange = () => { if (state.mode === "sample") loadSample(); };
  for (const id of ["stage", "category", "status-filter", "reason"]) $(id).onchange = loadList;
  $("search").oninput = () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(loadList, 200);
  };
  document.addEventListener("keydown", onKey);
  await setMode("browse");
  document.body.setAttribute("data-ready", "1");
  $("ack").focus();
}
start().catch((err) => say("could not load the run: " + err.message, true));
</script>
</body></html>
"""
