"""The Python API: every CLI subcommand calls the function of the same name here
(`eval safety` -> `eval_safety`). Notebook users call them directly.

    import saferinstruct.api as si
    cfg = si.load_config("configs/quickstart.yaml")
    summary = si.run(cfg, "runs/quick")            # the whole data pipeline
    result = si.filter(records, cfg, "runs/quick")  # one stage

These are recipes: they resolve each model role once into a backend (`Backends`), hand
it to the stages, and read and write the run directory through `RunDir`; the work itself
is in the components (`pipeline/`, `train/`, `evaluate/`, `report/`).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import __version__, memory, outcome
from .config import (
    AssembleConfig,
    ModelConfig,
    RunConfig,
    ShippedAnswers,
    TrainStepConfig,
    load_config,
    parse_model_spec,
    parse_spec,
    run_identity,
    to_dict,
)
from .errors import BadInput, RunFailed
from .io import read_jsonl
from .llm.cache import CachedBackend
from .llm.factory import Backends, Roles, resolve_roles
from .paths import cache_root, default_call_cache
from .pipeline.induce import check_backends
from .pipeline.induce import induce as induce_stage
from .pipeline.sources import load_sources
from .records import Record, is_kept
from .rundir import SPLITS, OutputDir, RunDir, dataset_file, ref_logps_dir, stage_number
from .runner import Flow, StageResult, Step, run_stage, stream

if TYPE_CHECKING:
    from .evaluate.compare import CompareConfig

log = logging.getLogger("saferinstruct")

__all__ = [
    "load_config",
    "init",
    "run",
    "reverse_train",
    "induce",
    "filter",
    "respond",
    "judge",
    "audit",
    "assemble",
    "merge",
    "sft",
    "dpo",
    "eval_recovery",
    "eval_safety",
    "eval_overrefusal",
    "eval_helpfulness",
    "eval_refusal_agreement",
    "report",
    "models",
    "serve",
]

_PACKAGES = ["torch", "transformers", "trl", "peft", "openai", "datasets", "llguidance"]


def versions() -> dict[str, str]:
    out = {"safer-instruct": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


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


# ---------------------------------------------------------------- settings


def quickstart_config() -> Path:
    """configs/quickstart.yaml of this checkout, said on stderr (a run with no --config)."""
    from .paths import project_root

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
    from .io import columns_of

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
    from .scaffold import scaffold

    return scaffold(Path(folder), categories, domain)


# ---------------------------------------------------------------- reverse model


def reverse_train(cfg: RunConfig, out_dir: str | Path | None = None,
                  force: bool = False) -> Path:  # fmt: skip
    """Train the reverse model for `cfg.reverse_train` (or reuse the cached one); an
    `out_dir` trained otherwise is refused unless `force`."""
    from .train.reverse import train_reverse

    if out_dir:
        check_out_dir(out_dir)
    return train_reverse(cfg.reverse_train, Path(out_dir) if out_dir else None, force)


def ensure_reverse_model(cfg: RunConfig) -> dict[str, Any]:
    """Fill `cfg.reverse_model` for reverse mode: the configured one, cached, or trained."""
    from .train.reverse import trained_model

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


# ---------------------------------------------------------------- the data stages


def read_sources(cfg: RunConfig, limit: int | None = None) -> list[Record]:
    """Stage 00: the source texts of `cfg.source` as records."""
    return list(load_sources(cfg.source, limit))


STAGE_COMMAND_IGNORES = ("limit", "config.source")
"""What a stage command on a run directory does not compare: it reads stage files, not
sources, and knows no --limit."""


def stage_command(stage: str, cfg: RunConfig, run_dir: str | Path,
                  input: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """One stage on its own, as the `filter`, `respond`, `judge` and `assemble` commands
    run it: it holds the directory's lock, refuses a config other than the directory's
    (its stage files would mix two configs), marks the directory running (its later
    files are now out of date) and, for assemble, complete again; returns the counts."""
    run_ = RunDir(run_dir)
    with run_.lock():
        if run_.incomplete():
            log.warning("%s: the last run here did not finish; %s reads the files as they are",
                        run_.root, stage)  # fmt: skip
        path = stage_file(stage, run_.root, input)
        run_.begin(run_identity(cfg), ignore=STAGE_COMMAND_IGNORES,
                   remedy=f"give {stage} the config in {run_.config}")
        if stage == "assemble":
            result = assemble(lambda: read_jsonl(path), cfg, run_.root)["assemble"]
            run_.finish()
            return result
        step = {"filter": filter, "respond": respond, "judge": judge}[stage]
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
    from .pipeline.filter import filter_records
    from .pipeline.judge import judge_records
    from .pipeline.respond import respond as respond_records

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


def filter(records: list[Record], cfg: RunConfig, run_dir: str | Path,
           pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 02: the expert keeps instructions that would elicit the category's behaviour."""
    from .pipeline.filter import check_filter

    pool = pool or Backends(cfg.cache)
    check_filter(records, pool.get(cfg.expert), cfg.filter, cfg.domain)
    return _expert_stage("filter", records, cfg, run_dir, pool)


def respond(records: list[Record], cfg: RunConfig, run_dir: str | Path,
            pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 03: the expert writes the preferred response (`chosen`)."""
    from .pipeline.respond import check_respond

    check_respond(cfg.respond)
    return _expert_stage("respond", records, cfg, run_dir, pool)


def judge(records: list[Record], cfg: RunConfig, run_dir: str | Path,
          pool: Backends | None = None) -> StageResult:  # fmt: skip
    """Stage 04: the expert checks every finished pair; failures are dropped with reasons."""
    from .pipeline.judge import check_judge

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
    """Judge an existing preference file; writes the judge stage file, returns counts."""
    from .pipeline.judge import audit_file, audit_summary

    run = RunDir(run_dir)
    expert = Backends(cfg.cache).get(cfg.expert)
    with run.lock():
        records = audit_file(path, expert, cfg.judge, cfg.domain, columns, category, limit)
        run.write_jsonl(run.stage("judge"), records)
    out = run.stage("judge")
    return {**audit_summary(records), "file": str(out), "model_calls": expert.stats.misses}


def assemble(read: Callable[[], Iterable[Record]], cfg: RunConfig, run_dir: str | Path,
             models: dict[str, str] | None = None,
             calls: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Stage 05: dedup and split over the records `read()` gives (called twice: two
    streaming passes); writes the stage file, the dataset and its card, the funnel
    (computed here, once; with `calls`, each stage's model calls, cache hits, failures,
    HTTP attempts and tokens beside its counts) and the data report. Returns the counts,
    the funnel and the problem the run should report (`outcome.check`), if any."""
    from .funnel import funnel
    from .report.data import write_data_report

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
    from .pipeline.assemble import dataset_card, decide, settle, split_rows, tally

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
    from .io import read_jsonl

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
        result = assemble(lambda: read_jsonl(judged), cfg, run_.root)["assemble"]
        run_.finish()
    return result


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
    from .pipeline.filter import check_filter
    from .pipeline.judge import check_judge
    from .pipeline.respond import check_respond

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
    with run_.lock():
        run_.begin(run_identity(cfg, limit), force)
        summary, problem = _run_locked(cfg, run_, n_sources, limit, pool, flow)
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


def _run_locked(cfg: RunConfig, run_: RunDir, n_sources: int, limit: int | None,
                pool: Backends, flow: Flow | None) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """The stages in a locked run directory; returns (summary, problem)."""
    started = time.time()
    reverse_info = ensure_reverse_model(cfg)
    roles = resolve_roles(cfg, pool)
    models = {"induce": roles.induce.identity(), "expert": roles.expert.identity()}
    write_resolved_config(cfg, run_, models)
    experts = [expert_step(name, cfg, roles.expert) for name in ("filter", "respond", "judge")]
    steps = [Step("sources", None), induce_step(cfg, roles), *experts]
    log.info("run: stages 00-04 (sources, induce, filter, respond, judge) streaming over "
             "%d texts", n_sources)  # fmt: skip
    results = stream(load_sources(cfg.source, limit), steps, run_, total=n_sources, flow=flow)
    results = results[1:]  # sources: no model calls
    memory.release()  # the streamed stages' freed buffers, before assemble's vectors
    last = stage_number("assemble")
    log.info("run: stage %02d/%02d assemble", last, last)
    judged = run_.stage("judge")
    calls = {r.name: r.calls for r in results}
    assembled = assemble(lambda: read_jsonl(judged), cfg, run_.root, models, calls)
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


# ---------------------------------------------------------------- training


def load_training_data(data: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference rows for SFT/DPO: `hh` (the shipped HH-RLHF training part), a run or
    dataset directory (refused while incomplete), a TRL-format jsonl, or a released
    Safer-Instruct csv."""
    from .preferences import load_hh, load_preferences

    if str(data) == "hh":
        return load_hh(split="train", limit=limit)
    if Path(data).is_dir():
        RunDir(data).require_complete("--data")
    return load_preferences(data, limit=limit)


def sft(data: str | Path, out_dir: str | Path, step: TrainStepConfig,
        force: bool = False) -> Path:  # fmt: skip
    """SFT on the `chosen` responses (never on `rejected`); returns the model directory.
    A folder trained with other settings or data is refused unless `force`."""
    from .train.sft import train_sft

    step.check("sft")
    check_out_dir(out_dir)
    rows = load_training_data(data, step.max_pairs)
    return train_sft(rows, step, Path(out_dir), source=data_source(data, rows), force=force)


def data_source(data: str | Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a model card says about its data: the file, its sha256 and the rows used."""
    from .llm.fingerprint import file_hash
    from .preferences import hh_default_path

    path = hh_default_path() if str(data) == "hh" else dataset_file(data, "train")
    return {"file": str(Path(path).resolve()), "sha256_16": file_hash(Path(path)),
            "rows": len(rows), "given_as": str(data)}  # fmt: skip


def check_out_dir(out_dir: str | Path) -> None:
    """BadInput before any work when an output folder is an existing file."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise BadInput(f"--out {out_dir}: is a file, not a folder")


def dpo_ref_dir(data: str | Path) -> Path:
    """Where DPO keeps reference log-probs: beside the dataset (`ref_logps/`), or in the
    user cache for the shipped HH-RLHF part."""
    if str(data) == "hh":
        return cache_root() / "ref_logps" / "hh"
    return ref_logps_dir(dataset_file(data, "train"))


def dpo(data: str | Path, out_dir: str | Path, step: TrainStepConfig,
        force: bool = False) -> Path:  # fmt: skip
    """DPO (beta 0.1 by default) on preference rows; returns the model directory.
    Reference log-probs are computed once and saved beside the dataset for reuse. A
    folder trained with other settings or data is refused unless `force`."""
    from .train.dpo import train_dpo

    step.check("dpo")
    check_out_dir(out_dir)
    rows = load_training_data(data, step.max_pairs)
    return train_dpo(rows, step, Path(out_dir), ref_dir=dpo_ref_dir(data),
                     source=data_source(data, rows), force=force)  # fmt: skip


# ---------------------------------------------------------------- evaluation


def eval_recovery(
    pairs_path: str | Path,
    model: ModelConfig | None,
    mode: str = "reverse",
    instruction_column: str = "instruction",
    output_column: str = "output",
    split: str = "all",
    limit: int | None = None,
    cache: str | None = None,
    max_new_tokens: int = 64,
    validation_fraction: float = 0.1,
    out_dir: str | Path | None = None,
    max_text_chars: int | None = None,
    score: bool = True,
    num_candidates: int = 1,
    select: str = "first",
    temperature: float = 0.0,
) -> dict[str, Any]:
    """Induce instructions from held-out outputs and score them against the true ones.

    With `score=False`, nothing is scored (no embedding model is needed): the result is
    the rows themselves, {"rows": [{id, generator, output, reference, prediction}]},
    for scoring elsewhere with `evaluate.recovery.score_rows` (benchmarks/gpu.py)."""
    from .evaluate import recovery

    if mode not in recovery.MODES:
        raise BadInput(f"--mode: expected reverse, prompted or first-sentence, got {mode!r}")
    rows = recovery.held_out_rows(pairs_path, instruction_column, output_column, split,
                                  validation_fraction, limit)  # fmt: skip
    if mode == "first-sentence":
        preds = recovery.baseline(rows)
    else:
        if model is None:
            raise BadInput(f"--model is required for --mode {mode}")
        icfg = recovery.induce_settings(mode, max_new_tokens, max_text_chars, num_candidates,
                                        select, temperature)  # fmt: skip
        backend = Backends(cache).get(model)
        check_backends(icfg, backend, None)
        run_ = RunDir(out_dir if out_dir else tempfile.mkdtemp(prefix="recovery-"))
        step = Step("induce", lambda chunk: induce_stage(chunk, backend, icfg), [backend])
        result = run_stage(step, recovery.as_records(rows), run_, total=len(rows))
        preds = [r.get("instruction") or "" for r in result.records]
    if not score:
        return {"rows": recovery.with_predictions(rows, preds)}
    return recovery.summary(rows, preds, mode, Path(pairs_path).name, out_dir)


def eval_safety(model: str, prompts: Path | None = None, column: str = "prompt",
                data: Path | None = None, limit: int | None = None,
                max_new_tokens: int = 40, cache: str | None = None,
                out: Path | None = None, force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Refusal rates of `model` (a spec) on harmful prompts (default: the shipped HH-RLHF
    evaluation part), with their definitions; with `out`, every prompt, answer and label
    in `out/answers.jsonl`."""
    from .evaluate.safety import harmful_prompts, safety

    for path in (prompts, data):
        if path is not None and not Path(path).exists():
            raise BadInput(f"file not found: {path}")
    if data is not None and Path(data).is_dir():
        RunDir(data).require_complete("--data")
    backend = Backends(cache).get(parse_model_spec(model))
    identity = {"command": "eval safety", "model": backend.identity(),
                "prompts": _file_identity(prompts or data), "column": column, "limit": limit,
                "max_new_tokens": max_new_tokens}  # fmt: skip
    with output_session(out, identity, force):
        result = safety(backend, harmful_prompts(prompts, column, data, limit), max_new_tokens)
        result = _with_answers(result, out)
    return _no_failures("eval safety", result)


def eval_overrefusal(model: str, limit: int | None = None, max_new_tokens: int = 40,
                     cache: str | None = None, out: Path | None = None,
                     force: bool = False) -> dict[str, Any]:  # fmt: skip
    """XSTest: full-compliance rate on safe prompts, refusal rate on unsafe ones; with
    `out`, every prompt, answer and label in `out/answers.jsonl`."""
    from .evaluate.safety import overrefusal

    backend = Backends(cache).get(parse_model_spec(model))
    identity = {"command": "eval overrefusal", "model": backend.identity(), "limit": limit,
                "max_new_tokens": max_new_tokens}  # fmt: skip
    with output_session(out, identity, force):
        result = _with_answers(overrefusal(backend, max_new_tokens, limit), out)
    return _no_failures("eval overrefusal", result)


@contextmanager
def output_session(out: str | Path | None, identity: dict[str, Any],
                   force: bool = False) -> Iterator[OutputDir | None]:  # fmt: skip
    """An evaluation's or report's --out, opened as every writer opens its folder: locked,
    refused when made with another identity (unless `force`), complete when written."""
    if out is None:
        yield None
        return
    folder = OutputDir(out)
    with folder.lock():
        folder.begin(identity, force)
        yield folder
        folder.finish()


def _file_identity(path: str | Path | None) -> str | None:
    """A prompt file's (or run directory's test split's) content hash; None for none."""
    from .llm.fingerprint import file_hash

    if path is None:
        return None
    return file_hash(dataset_file(path, "test").resolve())


def _no_failures(command: str, result: dict[str, Any]) -> dict[str, Any]:
    """`result`, or RunFailed carrying it (its files are written) when requests failed:
    they are left out of the rates, and a rerun asks only for them."""
    failed = int(result.get("failed") or 0)
    if failed:
        problem = RunFailed(f"{command}: {failed} model requests failed; they are left out of "
                            "the rates (n counts the answered ones). Run it again: only those "
                            "are asked again (the rest come from the call cache)")  # fmt: skip
        problem.summary = result  # type: ignore[attr-defined]
        raise problem
    return result


ANSWERS_FILE = "answers.jsonl"


def _with_answers(result: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """The result without its judged answers; written to `out` when given."""
    from .io import write_jsonl_atomic

    items = result.pop("items")
    if out is not None:
        path = Path(out) / ANSWERS_FILE
        write_jsonl_atomic(path, items)
        result["answers_file"] = str(path)
        result["_items"] = items
    return result


def _side(spec: str, pool: Backends) -> Any:
    """A helpfulness side: shipped answers (`pairs:GENERATOR`) or a model's backend."""
    parsed = parse_spec(spec)
    return parsed if isinstance(parsed, ShippedAnswers) else pool.get(parsed)


def eval_helpfulness(model: str, reference: str = "pairs:gpt4_0613", judge: str = "embedded",
                     verdict_mode: str = "logprobs", limit: int | None = None,
                     max_new_tokens: int = 256, max_answer_chars: int = 1000,
                     out: Path | None = None, cache: str | None = None,
                     min_consistency: float = 0.6) -> dict[str, Any]:  # fmt: skip
    """Pairwise win-rate of `model` against `reference` (specs, or pairs:GENERATOR) on
    held-out AlpacaEval instructions, judged in both orders; with `out`, one line per
    instruction is written there (`items_file`). A judge whose position consistency is
    below `min_consistency` gives no win-rate (`no_signal`)."""
    from .config import VerdictConfig
    from .evaluate.helpfulness import gate, helpfulness
    from .io import write_jsonl_atomic

    pool = Backends(cache)
    result = helpfulness(
        _side(model, pool), _side(reference, pool), judge=pool.get(parse_model_spec(judge)),
        verdict=VerdictConfig(mode=verdict_mode), limit=limit,
        max_new_tokens=max_new_tokens, max_answer_chars=max_answer_chars,
    )  # fmt: skip
    items = result.pop("items")
    if out is not None:
        write_jsonl_atomic(out, items)
        result["items_file"] = str(out)
    result = gate({**result, "model": model, "reference": reference}, min_consistency)
    return _no_failures("eval helpfulness", result)


def eval_downstream(model: str, tasks: list[str], include_path: Path | None = None,
                    limit: int | None = None, num_fewshot: int | None = None,
                    batch_size: int = 8) -> dict[str, Any]:  # fmt: skip
    """lm-evaluation-harness tasks on a local model (a spec): per task its metrics."""
    from .evaluate.downstream import downstream

    result = downstream(parse_model_spec(model), tasks, include_path, limit, batch_size,
                        num_fewshot)  # fmt: skip
    for task in result["tasks"].values():
        task.pop("values")
    return {"model": model, **result}


def eval_reward_model() -> dict[str, Any]:
    """Train (or load) the harmlessness reward model on the shipped HH-RLHF training part;
    its pairwise accuracy on the evaluation part, which it never saw."""
    from .evaluate.reward import default_reward_model

    rm = default_reward_model()
    return {"pairwise_accuracy": rm.accuracy, "n_train": rm.n_train, "n_eval": rm.n_eval}


def eval_refusal_agreement(labels: Path) -> dict[str, Any]:
    """The refusal classifier against human labels (refits without `labels` if trained
    on it)."""
    from .measures.refusal import refusal_agreement

    if not Path(labels).exists():
        raise BadInput(f"--labels: file not found: {labels}")
    return refusal_agreement(labels)


def report(models: dict[str, str], out: str | Path, cfg: CompareConfig | None = None,
           reference: str | None = None, judge: str = "embedded",
           cache: str | None = None, force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Measure `models` (name -> spec) side by side and write R/comparison.{html,md,json};
    helpfulness against `reference` (default: the first model), judged by `judge`."""
    from .evaluate.compare import CompareConfig, Entry, add_downstream, compare
    from .report.comparison import write_comparison

    cfg = cfg or CompareConfig()
    for path in (cfg.harmful_prompts, cfg.data):
        if path is not None and not Path(path).exists():
            raise BadInput(f"file not found: {path}")
    if cfg.data is not None and Path(cfg.data).is_dir():
        RunDir(cfg.data).require_complete("--data")
    pool = Backends(cache)
    entries = {n: Entry(spec, pool.get(parse_model_spec(spec))) for n, spec in models.items()}
    ref_spec = reference or next(iter(models.values()))
    helpful = cfg.helpfulness_limit != 0
    judge_backend = pool.get(parse_model_spec(judge)) if helpful else None
    identity = {"command": "report", "models": {n: e.side.identity() for n, e in entries.items()},
                "reference": ref_spec, "judge": judge if helpful else None,
                "prompts": _file_identity(cfg.harmful_prompts or cfg.data),
                "settings": {k: v for k, v in dataclasses.asdict(cfg).items()
                             if k not in ("harmful_prompts", "data")}}  # fmt: skip
    with output_session(out, identity, force):
        data = compare(entries, Entry(ref_spec, _side(ref_spec, pool)), judge_backend, cfg)
        if cfg.downstream_tasks:
            add_downstream(data, {n: parse_model_spec(spec) for n, spec in models.items()}, cfg)
        public = write_comparison(data, out)
    _no_failures("report", {**report_line(public, out), "failed": sum(public["failed"].values())})
    return public


def report_line(public: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """The one JSON line `report` prints: where the report is, each model's figures, and
    the failed requests per model when any."""
    line = {"report": str(Path(out) / "comparison.html"),
            "models": {name: {k: v["value"] for k, v in r["metrics"].items()}
                       for name, r in public["models"].items()}}  # fmt: skip
    if sum(public.get("failed", {}).values()):
        line["failed_per_model"] = public["failed"]
    return line


# ---------------------------------------------------------------- models


def probe(url: str, model: str | None = None,
          api_key_env: str = "OPENAI_API_KEY") -> dict[str, Any]:  # fmt: skip
    """What the OpenAI-compatible server at `url` supports, found by asking it."""
    from .llm.probe import probe as ask

    return ask(url, model, api_key_env)


def models() -> dict[str, Any]:
    """Which backends are available, where the caches and the embedded model live."""
    import importlib.util

    from .llm import embedded

    def available(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    info: dict[str, Any] = {
        "cache_root": str(cache_root()),
        "call_cache": str(default_call_cache()),
    }
    try:
        info["embedded_gguf"] = str(embedded.gguf_path())
        conv = embedded.converted_dir()
        info["embedded_hf_dir"] = (
            str(conv) if (conv / "config.json").exists() else "not converted yet"
        )
    except BadInput as e:
        info["embedded_gguf"] = f"missing: {e}"
    info["backends"] = {
        "local": available("transformers") and available("torch"),
        "openai": available("openai"),
        "json_schema_constraints": available("llguidance"),
        "serve": available("fastapi") and available("uvicorn"),
    }
    import torch

    info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return info


def serve(model: ModelConfig, host: str = "127.0.0.1", port: int = 8000,
          served_name: str | None = None, api_key: str | None = None) -> None:  # fmt: skip
    """Serve a local model over the OpenAI-compatible protocol until stopped (with
    `api_key`, clients must send it as their bearer token)."""
    from .serve import serve as serve_model

    serve_model(model, host=host, port=port, served_name=served_name, api_key=api_key)
