"""The data recipes: settings resolved, model roles built once, the stages run over a
run directory (`RunDir`), the dataset assembled. `run` is the whole pipeline; `stage`
runs one stage command on a run directory; `merge` joins shards; `run_processes` runs
shards in local processes at once and joins them.

    cfg = load_config("configs/quickstart.yaml")
    summary = run(cfg, "runs/quick")
    stage("judge", cfg, "runs/quick")          # the judge stage again, from its input file
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .. import __version__, memory, outcome
from ..config import (
    AssembleConfig,
    ModelConfig,
    RunConfig,
    run_identity,
    to_dict,
)
from ..errors import BadInput, LostRecords, RunFailed, TooFewPairs
from ..io import read_jsonl
from ..llm.cache import CachedBackend
from ..llm.factory import Backends, Roles, resolve_roles
from ..paths import default_call_cache
from ..pipeline.induce import check_backends
from ..pipeline.induce import induce as induce_stage
from ..pipeline.sources import load_sources
from ..records import Record, is_kept
from ..rundir import SPLITS, RunDir, package_versions, stage_number
from ..runner import Flow, StageResult, Step, run_stage, stream
from .training import reverse_train

log = logging.getLogger("saferinstruct")


_PACKAGES = ["torch", "transformers", "trl", "peft", "openai", "datasets", "llguidance"]


def versions() -> dict[str, str]:
    """Versions the resolved config records: ours, Python's, and `_PACKAGES`'."""
    return {"safer-instruct": __version__, "python": platform.python_version(),
            **package_versions(_PACKAGES)}  # fmt: skip


def write_resolved_config(cfg: RunConfig, run: RunDir, models: dict[str, str]) -> Path:
    """`DIR/config.yaml`: the resolved config, package versions, model identities, cache."""
    doc = {
        **to_dict(cfg),
        "_resolved": {
            "cache": cfg.cache or str(default_call_cache()),
            "versions": versions(),
            "models": models,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    return run.write(run.config, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def quickstart_config() -> Path:
    """configs/quickstart.yaml of this checkout, said on stderr (a run with no --config)."""
    from ..paths import project_root

    root = project_root()
    path = root / "configs" / "quickstart.yaml" if root is not None else None
    if path is None or not path.exists():
        raise BadInput("no --config given and no configs/quickstart.yaml beside this install: "
                       "give --config FILE (`safer-instruct init DIR` writes one)")  # fmt: skip
    log.info("no --config: using the quickstart settings, %s", path)
    return path


def use_input(cfg: RunConfig, path: Path, text_column: str | None = None,
              category_column: str | None = None,
              id_column: str | None = None) -> None:  # fmt: skip
    """Point `cfg` at the user's own texts. Columns not named are `text`, and `category`
    and `id` where the file has them (else one category, `default`, and row numbers)."""
    from ..io import columns_of

    if not Path(path).exists():
        raise BadInput(f"--input: file not found: {path}")
    have = columns_of(path)
    src = cfg.source
    src.path = str(Path(path).resolve())
    src.text_column = text_column or "text"
    src.category_column = category_column or ("category" if "category" in have else None)
    src.id_column = id_column or ("id" if "id" in have else None)
    src.where = None


def init(folder: str | Path, categories: list[str], domain: str = "safety") -> list[Path]:
    """Write a run config and commented prompt files for your own categories (the ones
    that do not exist yet); returns the files written."""
    from ..scaffold import scaffold

    return scaffold(Path(folder), categories, domain)


def ensure_reverse_model(cfg: RunConfig) -> dict[str, Any]:
    """Fill `cfg.reverse_model` for reverse mode: the configured one, cached, or trained."""
    from ..train.reverse import trained_model

    reverse_text_limit(cfg)
    if cfg.induce.mode != "reverse" or cfg.reverse_model is not None:
        return {"stage": "reverse-train", "skipped": "reverse model configured or not needed"}
    start = time.time()
    cached = trained_model(cfg.reverse_train)
    path = cached or reverse_train(cfg)
    finished = cached is not None or trained_model(cfg.reverse_train) is not None
    if not finished:
        log.warning("reverse-train: the model was cut short by reverse_train.max_minutes=%s; "
                    "this run induces with it, and the next run resumes its training",
                    cfg.reverse_train.max_minutes)  # fmt: skip
    cfg.reverse_model = ModelConfig(model=str(path), batch_size=cfg.expert.batch_size)
    return {
        "stage": "reverse-train",
        "model": str(path),
        "reused": cached is not None,
        "finished": finished,
        "seconds": round(time.time() - start, 2),
    }


def read_sources(cfg: RunConfig, limit: int | None = None) -> list[Record]:
    """Stage 00: the source texts of `cfg.source` as records."""
    return list(load_sources(cfg.source, limit))


STAGE_COMMAND_IGNORES = ("limit", "config.source")
"""What a stage command on a run directory does not compare: it reads stage files, not
sources, and knows no --limit."""


def stage(name: str, cfg: RunConfig, run_dir: str | Path,
          input: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """One stage on its own, as the `filter`, `respond`, `judge` and `assemble` commands
    run it: it holds the directory's lock, refuses a config other than the directory's
    (its stage files would mix two configs), marks the directory running (its later
    files are now out of date) and, for assemble, complete again; returns the counts."""
    run_ = RunDir(run_dir)
    identity, remedy = run_identity(cfg), f"give {name} the config in {run_.config}"
    with run_.lock():
        unfinished = run_.incomplete()
        path = stage_file(name, run_.root, input)
        run_.begin(identity, ignore=STAGE_COMMAND_IGNORES, remedy=remedy)  # refuses first
        if unfinished:
            log.warning("%s: the last run here did not finish; %s reads the files as they are",
                        run_.root, name)  # fmt: skip
        if name == "assemble":
            result = assemble_records(lambda: read_jsonl(path), cfg, run_.root)["assemble"]
            run_.finish()
            return result
        step = {"filter": run_filter, "respond": run_respond, "judge": run_judge}[name]
        return step(list(read_jsonl(path)), cfg, run_.root).summary()


def stage_file(stage: str, run_dir: str | Path, input: Path | None = None) -> Path:
    """The file a stage command reads: `input`, else the run directory's previous stage
    file."""
    if input is None:
        input = RunDir(run_dir).previous_stage(stage)
        if not input.exists():
            raise BadInput(f"{stage}: no --input and no previous stage file {input}")
    if not input.exists():
        raise BadInput(f"--input: file not found: {input}")
    return input


def induce(records: list[Record], cfg: RunConfig, run_dir: str | Path,
           pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 01: the instruction each text answers (the reverse model, or the expert in
    prompted mode)."""
    if cfg.induce.mode == "reverse" and cfg.reverse_model is None:
        raise BadInput(
            "induce.mode=reverse needs reverse_model in the config (a reverse-tuned model); "
            "use induce.mode=prompted for the zero-shot baseline"
        )
    identity = run_identity(cfg)  # as `run` takes it: before the settings it derives
    reverse_text_limit(cfg)
    roles = resolve_roles(cfg, pool or Backends(cfg.cache))
    check_backends(cfg.induce, roles.induce, roles.forward)
    run_ = RunDir(run_dir)
    with run_.lock():
        run_.begin(identity, ignore=("limit",),
                   remedy="give induce the settings it was made with, or write to a new --out")
        return run_stage(induce_step(cfg, roles), records, run_, total=len(records))


def reverse_text_limit(cfg: RunConfig) -> None:
    """In reverse mode, texts are cut where reverse training cut its responses
    (`reverse_train.max_response_chars`) unless `induce.max_text_chars` says otherwise."""
    if cfg.induce.mode == "reverse" and cfg.induce.max_text_chars is None:
        cfg.induce.max_text_chars = cfg.reverse_train.max_response_chars


def induce_step(cfg: RunConfig, roles: Roles) -> Step:
    """Stage 01 as a runner step."""
    return Step(
        "induce",
        lambda chunk: induce_stage(chunk, roles.induce, cfg.induce, roles.forward),
        [b for b in (roles.induce, roles.forward) if b is not None],
    )


def expert_step(name: str, cfg: RunConfig, expert: CachedBackend) -> Step:
    """Stage 02, 03 or 04 (filter, respond, judge) as a runner step."""
    from ..pipeline.filter import filter_records
    from ..pipeline.judge import judge_records
    from ..pipeline.respond import respond as respond_records

    stage, section = {
        "filter": (filter_records, cfg.filter),
        "respond": (respond_records, cfg.respond),
        "judge": (judge_records, cfg.judge),
    }[name]
    return Step(name, lambda chunk: stage(chunk, expert, section, cfg.domain), [expert])


def _expert_stage(name: str, records: list[Record], cfg: RunConfig, run_dir: str | Path,
                  pool: Backends | None) -> StageResult:  # fmt: skip
    """Run one expert stage over `records`."""
    expert = (pool or Backends(cfg.cache)).get(cfg.expert)
    step = expert_step(name, cfg, expert)
    return run_stage(step, records, RunDir(run_dir), total=len(records))


def run_filter(records: list[Record], cfg: RunConfig, run_dir: str | Path,
               pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 02: the expert keeps instructions that would elicit the category's behaviour."""
    from ..pipeline.filter import check_filter

    pool = pool or Backends(cfg.cache)
    check_filter(records, pool.get(cfg.expert), cfg.filter, cfg.domain)
    return _expert_stage("filter", records, cfg, run_dir, pool)


def run_respond(records: list[Record], cfg: RunConfig, run_dir: str | Path,
                pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 03: the expert writes the preferred response (`chosen`)."""
    from ..pipeline.respond import check_respond

    check_respond(cfg.respond)
    return _expert_stage("respond", records, cfg, run_dir, pool)


def run_judge(records: list[Record], cfg: RunConfig, run_dir: str | Path,
              pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 04: the expert checks every finished pair; failures are dropped with reasons."""
    from ..pipeline.judge import check_judge

    pool = pool or Backends(cfg.cache)
    check_judge(records, pool.get(cfg.expert), cfg.judge, cfg.domain)
    return _expert_stage("judge", records, cfg, run_dir, pool)


def audit(
    path: str | Path,
    cfg: RunConfig,
    run_dir: str | Path,
    columns: dict[str, str] | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Judge an existing preference file; writes the judge stage file into `run_dir`
    (opened with the file's digest and the config as its identity), returns counts."""
    from ..llm.fingerprint import file_hash
    from ..pipeline.judge import audit_file, audit_summary

    if not Path(path).exists():
        raise BadInput(f"--audit: file not found: {path}")
    run = RunDir(run_dir)
    expert = Backends(cfg.cache).get(cfg.expert)
    identity = {**run_identity(cfg), "audit": {"file_sha256": file_hash(Path(path)),
                "columns": columns, "category": category, "limit": limit}}  # fmt: skip
    remedy = "use the config and file it was made with"
    with run.lock():
        run.refuses(identity, remedy=remedy)  # before any model call
        records = audit_file(path, expert, cfg.judge, cfg.domain, columns, category, limit)
        run.begin(identity, remedy=remedy)
        run.write_jsonl(run.stage("judge"), records)
        run.finish()
    out = run.stage("judge")
    return {**audit_summary(records), "file": str(out), "model_calls": expert.stats.misses}


def judge_audit(run_dir: str | Path) -> dict[str, Any]:
    """The run's judge audited on the labels made in `review` (`measures.audit`): its
    precision, recall and agreement with intervals, or `audited: false` with no labels.
    No model call. A finished run's data report is written again, with the audit."""
    from ..measures.audit import audit_run
    from ..report.data import write_data_report

    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise BadInput(f"{run_dir}: no such run directory")
    figures = audit_run(run)
    if run.complete() and run.funnel.exists():
        with run.lock():
            write_data_report(run)
        figures["report"] = str(run.report_html)
    return figures


def assemble_records(read: Callable[[], Iterable[Record]], cfg: RunConfig,
                     run_dir: str | Path, models: dict[str, str] | None = None,
                     calls: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Stage 05: dedup and split over the records `read()` gives (called twice: two
    streaming passes); writes the stage file, the dataset and its card, the funnel
    (computed here, once; with `calls`, each stage's model calls, cache hits, failures,
    HTTP attempts and tokens beside its counts) and the data report. Returns the counts,
    the funnel and the problem the run should report (`outcome.check`), if any."""
    from ..funnel import funnel
    from ..report.data import write_data_report

    run = RunDir(run_dir)
    info: dict[str, Any] = {
        "models": models or {},
        "sources": [cfg.source.path],
        "domain": cfg.domain.name,
        "versions": versions(),
    }
    if cfg.domain.name != "safety":
        info["terms"] = "See the licence or terms of the source texts named above."
        info["intended_use"] = f"Preference-tuning research in the {cfg.domain.name} domain."
    summary = write_dataset(run, read, cfg.assemble, info)
    fun = funnel(run.stage_files())
    if calls:
        fun["calls"] = calls
    run.write_json(run.funnel, fun)
    write_data_report(run)
    problem = outcome.check(cfg.success, read_jsonl(run.stage("assemble")), fun, cfg)
    return {"assemble": summary, "funnel": fun, "problem": problem}


def write_dataset(run: RunDir, read: Callable[[], Iterable[Record]], cfg: AssembleConfig,
                  info: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Assemble in two passes over `read()` (`pipeline.assemble`: decide, then settle) and
    write the assemble stage file, the dataset splits and the card (`info` feeds it);
    returns the counts with the files written."""
    from ..pipeline.assemble import dataset_card, decide, settle, split_rows, tally

    decisions = decide(read(), cfg)
    stage_file = run.stage("assemble")
    run.write_jsonl(stage_file, (settle(r, decisions) for r in read()))
    summary = tally(read_jsonl(stage_file), decisions.n_in)
    for split in SPLITS:  # an empty split is not written (datasets cannot load it)
        if summary[split]:
            run.write_jsonl(run.split(split), split_rows(read_jsonl(stage_file), split))
        else:
            run.split(split).unlink(missing_ok=True)
    card_info = {"stage_file": os.path.relpath(stage_file, run.dataset), **info}
    run.write(run.card, dataset_card(summary, card_info))
    files = {"stage": stage_file, **{s: run.split(s) for s in SPLITS}, "card": run.card}
    return {**summary, "files": {k: str(v) for k, v in files.items()}}


def merge(shard_dirs: list[Path], cfg: RunConfig, run_dir: str | Path,
          force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Stage 05 over shard runs (`run --shard I/N`): their stage files merged into
    `run_dir` in source order (each record's `source_index`), then the same dedup and
    split as one unsharded run: its dataset is byte for byte that run's."""
    return _merge(shard_dirs, cfg, run_dir, force)["assemble"]


def _merge(shard_dirs: list[Path], cfg: RunConfig, run_dir: str | Path,
           force: bool = False) -> dict[str, Any]:  # fmt: skip
    """`merge`, returning assemble's whole answer (its summary and its problem)."""
    shards = [RunDir(d) for d in shard_dirs]
    for shard in shards:
        shard.require_complete("--merge")
        if not shard.stage("judge").exists():
            raise BadInput(f"--merge: {shard.root} has no judge stage file (run it first)")
    run_ = RunDir(run_dir)
    with run_.lock():
        run_.begin({**run_identity(cfg, None), "merged": True}, force)
        write_resolved_config(cfg, run_, {"merged_from": ", ".join(str(d.root) for d in shards)})
        for stage in ("sources", "induce", "filter", "respond", "judge"):
            files = [d.stage(stage) for d in shards if d.stage(stage).exists()]
            run_.write_jsonl(run_.stage(stage), merged(files, stage))
        judged = run_.stage("judge")
        result = assemble_records(lambda: read_jsonl(judged), cfg, run_.root)
        run_.finish()
    return result


def run_processes(cfg: RunConfig, run_dir: str | Path, processes: int,
                  limit: int | None = None, force: bool = False) -> dict[str, Any]:  # fmt: skip
    """`run --processes N`: the run as N shards (`run --shard I/N`) in N local processes
    at once, in DIR/shards/I-of-N, then merged into DIR (`merge`: the dataset is byte for
    byte one process's). Each process takes the CLI's threads (one on a 2-core machine):
    two one-thread decode loops keep two cores busy where two threads in one loop do not
    (docs/benchmarks.md, "Two processes of one thread": 1.49x alone, and beside a busy
    neighbour still 1.12x one thread). The reverse model is trained (or found) once,
    before the shards start; each shard resumes on its own. A shard stopped by bad input
    raises `BadInput` (its own line is above); records lost to failed requests raise
    `LostRecords` after the merge, too few pairs `TooFewPairs`, as one run would."""
    import copy
    import subprocess

    run_ = RunDir(Path(run_dir).resolve())
    root = run_.root
    ensure_reverse_model(copy.deepcopy(cfg))
    config = run_.write(run_.shards_config,
                        yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    shards = [run_.shard(i, processes) for i in range(1, processes + 1)]
    log.info("run: %d processes, one shard each, in %s", processes, run_.shards_dir)
    running = [subprocess.Popen(shard_command(config, shard, i, processes, limit, force),
                                stdout=subprocess.PIPE, text=True)
               for i, shard in enumerate(shards, 1)]  # fmt: skip
    outcomes = [(p.communicate()[0], p.returncode) for p in running]
    codes = [code for _, code in outcomes]
    for i, code in enumerate(codes, 1):
        if code == BadInput.exit_code:
            raise BadInput(f"run --processes: shard {i}/{processes} stopped on bad input "
                           "(its line is above); fix it and run again")  # fmt: skip
        if code not in (0, LostRecords.exit_code, TooFewPairs.exit_code):
            raise RunFailed(f"run --processes: shard {i}/{processes} failed (exit {code}, "
                            f"its error is above); run again to resume it")  # fmt: skip
    merged = _merge(shards, cfg, root, force)
    summary = {"run_dir": str(root), "processes": processes, "dataset":
               {k: merged["assemble"].get(k) for k in SPLITS},
               "shards": [last_json(out) for out, _ in outcomes]}  # fmt: skip
    log.info("done: %d pairs (%d train, %d test) in %s, from %d shards",
             sum(summary["dataset"].values()), summary["dataset"]["train"],
             summary["dataset"]["test"], run_.dataset, processes)  # fmt: skip
    problem = merged["problem"]
    if problem is None and LostRecords.exit_code in codes:
        problem = LostRecords("run --processes: records were lost to failed requests in "
                              "a shard (see its summary); run again to ask only for those")
    if problem is not None:
        problem.summary = summary  # type: ignore[attr-defined]
        raise problem
    return summary


def last_json(stdout: str) -> dict[str, Any]:
    """A child run's summary: the last line of its stdout (empty when it printed none)."""
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}


def shard_command(config: Path, out: Path, i: int, n: int, limit: int | None,
                  force: bool) -> list[str]:  # fmt: skip
    """The `safer-instruct run` of shard I of N, as a child process."""
    import sys

    command = [sys.executable, "-m", "saferinstruct", "run", "--config", str(config),
               "--out", str(out), "--shard", f"{i}/{n}"]  # fmt: skip
    if limit is not None:
        command += ["--limit", str(limit)]
    return command + (["--force"] if force else [])


def merged(files: list[Path], stage: str) -> Iterator[Record]:
    """The records of shard stage files (each in source order) in source order, streamed;
    BadInput when two shards hold the same record."""
    seen: set[str] = set()
    parts = [read_jsonl(f) for f in files]
    for record in heapq.merge(*parts, key=lambda r: r.get("source_index", 0)):
        if record["id"] in seen:
            raise BadInput(f"--merge: the shards share records (ids in two shards at {stage})")
        seen.add(record["id"])
        yield record


def check_run(cfg: RunConfig, sources: list[Record], pool: Backends) -> None:
    """Every check that can fail before the first model call, for the whole run."""
    from ..pipeline.filter import check_filter
    from ..pipeline.judge import check_judge
    from ..pipeline.respond import check_respond

    roles = resolve_roles(cfg, pool)
    check_filter(sources, roles.expert, cfg.filter, cfg.domain)
    check_respond(cfg.respond)
    check_judge(sources, roles.expert, cfg.judge, cfg.domain)
    if cfg.induce.mode == "prompted" or cfg.reverse_model is not None:
        check_backends(cfg.induce, roles.induce, roles.forward)


def run(cfg: RunConfig, run_dir: str | Path, limit: int | None = None,
        force: bool = False, flow: Flow | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole data pipeline; returns the summary (the funnel is in DIR/funnel.json).

    reverse-train (skipped when a reverse model is configured or cached), then 00 sources
    -> 01 induce -> 02 filter -> 03 respond -> 04 judge streamed (every stage at once, a
    record going on as soon as it is done; `flow` can make it serial), then 05 assemble.
    Each model role is built once and shared by the stages. Resumable: every model call
    is cached, so a restarted run recomputes finished work from the cache without
    loading a model. One process writes a run directory at a time; a directory made
    with another config is refused unless `force` (which clears its old outputs). Raises
    `RunFailed` (after writing every file) when records were lost to failed requests or
    too few pairs came out.
    """
    run_ = RunDir(run_dir)
    n_sources, outline = source_outline(cfg, limit)
    pool = Backends(cfg.cache)
    check_run(cfg, outline, pool)
    identity = run_identity(cfg, limit)  # before the run fills in the reverse model
    with run_.lock():
        run_.begin(identity, force)
        sources = load_sources(cfg.source, limit)
        summary, problem = _run_locked(cfg, run_, sources, n_sources, pool, flow)
        compared = estimate_beside_actual(run_, identity, summary)
        if compared is not None:
            summary["estimate"] = compared
        run_.finish()
    if problem is not None:
        problem.summary = summary  # type: ignore[attr-defined]
        raise problem
    return summary


def source_outline(cfg: RunConfig, limit: int | None) -> tuple[int, list[Record]]:
    """One streaming pass over the sources: how many, and the first usable record of each
    category (all the checks before the first model call need)."""
    n, first = 0, {}
    for record in load_sources(cfg.source, limit):
        n += 1
        if is_kept(record):
            first.setdefault(str(record.get("category")), record)
    return n, list(first.values())


def estimate(cfg: RunConfig, run_dir: str | Path, n: int,
             limit: int | None = None) -> dict[str, Any]:  # fmt: skip
    """`run --estimate N`: N sources sampled by a hash of their id run through every stage
    in DIR/estimate (a run directory of its own; every call cached, so the real run into
    DIR pays none twice); returns the projection for the whole input (`estimate.py`),
    also written to DIR/estimate/estimate.json. Too few pairs in the sample is no error;
    records lost to failed requests raise `LostRecords` (exit 3) after the files are
    written, the projection as its summary (a rerun asks only for what failed)."""
    from ..estimate import project
    from ..measures.splits import hash_fraction

    run_ = RunDir(run_dir)
    n_sources, outline = source_outline(cfg, limit)
    pool = Backends(cfg.cache)
    check_run(cfg, outline, pool)
    sample = heapq.nsmallest(n, load_sources(cfg.source, limit),
                             key=lambda r: hash_fraction(str(r["id"])))  # fmt: skip
    sample.sort(key=lambda r: r.get("source_index", 0))
    est = RunDir(run_.estimate_dir)
    with est.lock():
        est.begin({**run_identity(cfg, limit), "estimate": n}, force=True)  # all in the cache
        summary, problem = _run_locked(cfg, est, iter(sample), len(sample), pool, None)
        projection = project(summary, n_sources, role_prices(cfg))
        est.write_json(run_.estimate_file, projection)
        est.finish()
    result = {"estimate": str(run_.estimate_file), **projection}
    if isinstance(problem, LostRecords):  # a projection short of lost records: exit 3
        problem.summary = result  # type: ignore[attr-defined]
        raise problem
    return result


def role_prices(cfg: RunConfig) -> dict[str, tuple[float | None, float | None]]:
    """Each model stage's prices per million tokens in and out, from its role's config."""
    expert = (cfg.expert.price_in_per_mtok, cfg.expert.price_out_per_mtok)
    prompted = cfg.induce.mode == "prompted" or cfg.reverse_model is None
    inducer = cfg.expert if prompted else cfg.reverse_model
    assert inducer is not None
    induce = (inducer.price_in_per_mtok, inducer.price_out_per_mtok)
    return {"induce": induce, "filter": expert, "respond": expert, "judge": expert}


def estimate_beside_actual(run_: RunDir, identity: dict[str, Any],
                           summary: dict[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """After a real run: its estimate (made with the same settings) beside what happened,
    added to the funnel; None when there is no such estimate."""
    from ..estimate import side_by_side

    est = RunDir(run_.estimate_dir)
    made_with = {k: v for k, v in (est.read_state().get("identity") or {}).items()
                 if k != "estimate"}  # fmt: skip
    if not run_.estimate_file.exists() or made_with != identity:
        return None
    compared = side_by_side(json.loads(run_.estimate_file.read_text()), summary)
    if run_.funnel.exists():
        run_.write_json(run_.funnel, {**run_.read_funnel(), "estimate": compared})
    return compared


def _run_locked(cfg: RunConfig, run_: RunDir, sources: Iterable[Record], n_sources: int,
                pool: Backends, flow: Flow | None) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """The stages over `sources` in a locked run directory; returns (summary, problem)."""
    started = time.time()
    reverse_info = ensure_reverse_model(cfg)
    roles = resolve_roles(cfg, pool)
    models = {"induce": roles.induce.identity(), "expert": roles.expert.identity()}
    write_resolved_config(cfg, run_, models)
    experts = [expert_step(name, cfg, roles.expert) for name in ("filter", "respond", "judge")]
    steps = [Step("sources", None), induce_step(cfg, roles), *experts]
    log.info("run: stages 00-04 (sources, induce, filter, respond, judge) streaming over "
             "%d texts", n_sources)  # fmt: skip
    results = stream(sources, steps, run_, total=n_sources, flow=flow)
    results = results[1:]  # sources: no model calls
    memory.release()  # the streamed stages' freed buffers, before assemble's vectors
    last = stage_number("assemble")
    log.info("run: stage %02d/%02d assemble", last, last)
    judged = run_.stage("judge")
    calls = {r.name: r.calls for r in results}
    assembled = assemble_records(lambda: read_jsonl(judged), cfg, run_.root, models, calls)
    summary = {
        "run_dir": str(run_.root),
        "sources": n_sources,
        "stages": [reverse_info] + [r.summary() for r in results],
        "dataset": {k: assembled["assemble"].get(k) for k in SPLITS},
        "seconds": round(time.time() - started, 1),
        **call_totals(results),
    }
    log.info("done: %d pairs (%d train, %d test) in %s", sum(summary["dataset"].values()),
             summary["dataset"]["train"], summary["dataset"]["test"], run_.dataset)  # fmt: skip
    log.info("report: %s", run_.report_html)
    return summary, assembled["problem"]


def call_totals(results: list[StageResult]) -> dict[str, int]:
    """Model calls, cache hits, failed calls and (endpoints) HTTP attempts, retries and
    tokens, summed over the stages."""
    keys = dict.fromkeys(k for r in results for k in r.calls)
    return {k: sum(r.calls.get(k, 0) for r in results) for k in keys}
