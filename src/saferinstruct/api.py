"""The Python API: what every CLI subcommand calls. Notebook users call these directly.

import saferinstruct.api as si
cfg = si.load_config("configs/quickstart.yaml")
funnel = si.run(cfg, "runs/quick")
records = si.induce_records(records, cfg)
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .config import ModelConfig, RunConfig, load_config, to_dict
from .io import write_jsonl_atomic
from .llm.cache import CachedBackend
from .llm.factory import make_backend
from .paths import cache_root, default_call_cache
from .pipeline.induce import check_backends, induce
from .pipeline.sources import load_sources
from .records import Record
from .runner import StageResult, run_stage

log = logging.getLogger("saferinstruct")

__all__ = [
    "load_config",
    "run",
    "reverse_train",
    "induce_records",
    "eval_recovery",
    "write_resolved_config",
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


def write_resolved_config(cfg: RunConfig, run_dir: Path, models: dict[str, str]) -> Path:
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
    path = Path(run_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path


def induce_model(cfg: RunConfig) -> CachedBackend:
    """The model that induces: the reverse model, or the expert in prompted mode."""
    if cfg.induce.mode == "prompted" or cfg.reverse_model is None:
        return make_backend(cfg.expert, cfg.cache)
    return make_backend(cfg.reverse_model, cfg.cache)


def induce_records(
    records: Iterable[Record],
    cfg: RunConfig,
    run_dir: Path,
    total: int | None = None,
) -> StageResult:
    """Run the induce stage over `records` and write `DIR/stages/01-induce.jsonl`."""
    if cfg.induce.mode == "reverse" and cfg.reverse_model is None:
        from .errors import BadInput

        raise BadInput(
            "induce.mode=reverse needs reverse_model in the config (a reverse-tuned model); "
            "use induce.mode=prompted for the zero-shot baseline"
        )
    model = induce_model(cfg)
    forward = make_backend(cfg.forward, cfg.cache) if cfg.forward else None
    check_backends(cfg.induce, model, forward)
    backends = [b for b in (model, forward) if b is not None]
    return run_stage(
        "induce",
        records,
        lambda chunk: induce(chunk, model, cfg.induce, forward),
        run_dir,
        total=total,
        backends=backends,
    )


def reverse_train(cfg: RunConfig, out_dir: str | Path | None = None) -> Path:
    """Train the reverse model for `cfg.reverse_train` (or reuse the cached one)."""
    from .train.reverse import train_reverse

    return train_reverse(cfg.reverse_train, Path(out_dir) if out_dir else None)


def ensure_reverse_model(cfg: RunConfig) -> dict[str, Any]:
    """Fill `cfg.reverse_model` for reverse mode: the configured one, cached, or trained."""
    from .config import ModelConfig
    from .train.reverse import trained_model

    if cfg.induce.mode == "reverse" and cfg.induce.max_text_chars is None:
        cfg.induce.max_text_chars = cfg.reverse_train.max_response_chars
    if cfg.induce.mode != "reverse" or cfg.reverse_model is not None:
        return {"stage": "reverse-train", "skipped": "reverse model configured or not needed"}
    start = time.time()
    cached = trained_model(cfg.reverse_train)
    path = cached or reverse_train(cfg)
    cfg.reverse_model = ModelConfig(model=str(path), batch_size=cfg.expert.batch_size)
    return {
        "stage": "reverse-train",
        "model": str(path),
        "reused": cached is not None,
        "seconds": round(time.time() - start, 2),
    }


def _expert_stage(name: str, stage: Any, section: Any, records: list[Record], cfg: RunConfig,
                  run_dir: Path) -> StageResult:  # fmt: skip
    """Run an expert stage `stage(chunk, expert, section, domain)` over `records`."""
    expert = make_backend(cfg.expert, cfg.cache)
    return run_stage(
        name,
        records,
        lambda chunk: stage(chunk, expert, section, cfg.domain),
        run_dir,
        total=len(records),
        backends=[expert],
    )


def filter_stage(records: list[Record], cfg: RunConfig, run_dir: Path) -> StageResult:
    """Stage 3: the expert keeps instructions that would elicit the category's behaviour."""
    from .pipeline.filter import check_filter, filter_records

    check_filter(records, make_backend(cfg.expert, cfg.cache), cfg.filter, cfg.domain)
    return _expert_stage("filter", filter_records, cfg.filter, records, cfg, run_dir)


def respond_stage(records: list[Record], cfg: RunConfig, run_dir: Path) -> StageResult:
    """Stage 4: the expert writes the preferred response (`chosen`)."""
    from .pipeline.respond import respond

    return _expert_stage("respond", respond, cfg.respond, records, cfg, run_dir)


def judge_stage(records: list[Record], cfg: RunConfig, run_dir: Path) -> StageResult:
    """Stage 5: the expert checks every finished pair; failures are dropped with reasons."""
    from .pipeline.judge import check_judge, judge_records

    check_judge(records, make_backend(cfg.expert, cfg.cache), cfg.judge, cfg.domain)
    return _expert_stage("judge", judge_records, cfg.judge, records, cfg, run_dir)


def assemble_stage(
    records: list[Record], cfg: RunConfig, run_dir: Path, models: dict[str, str] | None = None
) -> dict[str, Any]:
    """Stage 6: dedup, split, dataset files and card, funnel.json, report.html/.md."""
    from .pipeline.assemble import assemble, funnel
    from .report import write_data_report

    info: dict[str, Any] = {
        "models": models or {},
        "sources": [cfg.source.path],
        "domain": cfg.domain.name,
        "versions": versions(),
    }
    if cfg.domain.name != "safety":
        info["terms"] = "See the licence or terms of the source texts named above."
        info["intended_use"] = f"Preference-tuning research in the {cfg.domain.name} domain."
    summary = assemble(records, cfg.assemble, run_dir, info)
    stage_files = sorted((run_dir / "stages").glob("[0-9][0-9]-*.jsonl"))
    fun = funnel(stage_files)
    (run_dir / "funnel.json").write_text(json.dumps(fun, indent=2))
    write_data_report(run_dir)
    return {"assemble": summary, "funnel": fun}


def audit(
    path: str | Path,
    cfg: RunConfig,
    run_dir: str | Path,
    columns: dict[str, str] | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Judge an existing preference file; writes DIR/stages/04-judge.jsonl, returns counts."""
    from .pipeline.judge import audit_file, audit_summary

    expert = make_backend(cfg.expert, cfg.cache)
    records = audit_file(path, expert, cfg.judge, cfg.domain, columns, category, limit)
    out = Path(run_dir) / "stages" / "04-judge.jsonl"
    write_jsonl_atomic(out, records)
    return {**audit_summary(records), "file": str(out), "model_calls": expert.stats.misses}


def check_run(cfg: RunConfig, sources: list[Record]) -> None:
    """Every check that can fail before the first model call, for the whole run."""
    from .pipeline.filter import check_filter
    from .pipeline.judge import check_judge

    expert = make_backend(cfg.expert, cfg.cache)
    check_filter(sources, expert, cfg.filter, cfg.domain)
    check_judge(sources, expert, cfg.judge, cfg.domain)
    forward = make_backend(cfg.forward, cfg.cache) if cfg.forward else None
    if cfg.induce.mode == "prompted" or cfg.reverse_model is not None:
        check_backends(cfg.induce, induce_model(cfg), forward)


def run(cfg: RunConfig, run_dir: str | Path, limit: int | None = None) -> dict[str, Any]:
    """The whole data pipeline; returns the funnel summary (also DIR/funnel.json).

    reverse-train (skipped when a reverse model is configured or cached) -> induce ->
    filter -> respond -> judge -> assemble. Resumable: every model call is cached, so a
    restarted run recomputes finished work from the cache without loading a model.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sources = list(load_sources(cfg.source, limit))
    check_run(cfg, sources)
    started = time.time()
    reverse_info = ensure_reverse_model(cfg)
    models = {
        "induce": induce_model(cfg).identity(),
        "expert": make_backend(cfg.expert, cfg.cache).identity(),
    }
    write_resolved_config(cfg, run_dir, models)
    write_jsonl_atomic(run_dir / "stages" / "00-sources.jsonl", sources)
    steps = [
        lambda recs: induce_records(recs, cfg, run_dir, total=len(recs)),
        lambda recs: filter_stage(recs, cfg, run_dir),
        lambda recs: respond_stage(recs, cfg, run_dir),
        lambda recs: judge_stage(recs, cfg, run_dir),
    ]
    records, results = sources, []
    for number, step in enumerate(steps, start=1):
        log.info("run: stage %d/%d", number, len(steps) + 1)
        result = step(records)
        results.append(result)
        records = result.records
    log.info("run: stage %d/%d (assemble)", len(steps) + 1, len(steps) + 1)
    assembled = assemble_stage(records, cfg, run_dir, models)
    summary = {
        "run_dir": str(run_dir),
        "sources": len(sources),
        "stages": [reverse_info] + [r.summary() for r in results],
        "dataset": {k: assembled["assemble"].get(k) for k in ("train", "test")},
        "seconds": round(time.time() - started, 1),
        "model_calls": sum(r.calls.get("model_calls", 0) for r in results),
        "cache_hits": sum(r.calls.get("cache_hits", 0) for r in results),
    }
    return summary


def _by_category(stage_file: Path) -> dict[str, dict[str, int]]:
    from .io import read_jsonl

    out: dict[str, dict[str, int]] = {}
    for r in read_jsonl(stage_file):
        row = out.setdefault(r["category"], {"in": 0, "kept": 0})
        row["in"] += 1
        row["kept"] += r["status"] == "kept"
    return out


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
    import random
    import tempfile

    from .config import InduceConfig
    from .errors import BadInput
    from .evaluate.recovery import first_sentence, score_rows, summarize
    from .io import read_records
    from .records import new_record
    from .train.reverse import split_of

    if mode not in ("reverse", "prompted", "first-sentence"):
        raise BadInput(f"--mode: expected reverse, prompted or first-sentence, got {mode!r}")
    columns = {"instruction": instruction_column, "output": output_column}
    rows = [
        r
        for r in read_records(pairs_path, columns=columns)
        if split == "all" or split_of(str(r["id"]), validation_fraction) == split
    ]
    random.Random(0).shuffle(rows)
    rows = rows[:limit] if limit else rows
    outputs = [str(r["output"] or "") for r in rows]
    refs = [str(r["instruction"] or "") for r in rows]
    if mode == "first-sentence":
        preds = [first_sentence(o) for o in outputs]
    else:
        if model is None:
            raise BadInput(f"--model is required for --mode {mode}")
        backend = make_backend(model, cache)
        icfg = InduceConfig(
            mode=mode, max_text_chars=max_text_chars, num_candidates=num_candidates, select=select
        )
        icfg.generation.max_new_tokens = max_new_tokens
        icfg.generation.temperature = temperature
        check_backends(icfg, backend, None)
        if num_candidates > 1 and temperature <= 0:
            raise BadInput("--candidates > 1 needs --temperature > 0 (greedy repeats itself)")
        records = [
            new_record(f"{r['id']}:{r.get('generator', i)}", o, "recovery")
            for i, (r, o) in enumerate(zip(rows, outputs, strict=True))
        ]
        run_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="recovery-"))
        result = run_stage(
            "induce",
            records,
            lambda chunk: induce(chunk, backend, icfg),
            run_dir,
            total=len(records),
            backends=[backend],
        )
        from .io import read_jsonl

        preds = [r.get("instruction") or "" for r in read_jsonl(result.path)]
    groups = [r.get("generator") for r in rows]
    if not score:
        keys = ("id", "generator", "output", "reference", "prediction")
        values = zip([r["id"] for r in rows], groups, outputs, refs, preds, strict=True)
        return {"rows": [dict(zip(keys, v, strict=True)) for v in values]}
    summary = summarize(score_rows(preds, refs, outputs), groups)
    summary["mode"] = mode
    if out_dir is not None:
        from .evaluate.recovery import examples_markdown

        names = [str(g) if g is not None else Path(pairs_path).name for g in groups]
        path = Path(out_dir) / "recovery_examples.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(examples_markdown(outputs, preds, refs, names))
        summary["examples"] = str(path)
    return summary


def load_training_data(data: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference rows for SFT/DPO: `hh` (the shipped HH-RLHF training part), a run or
    dataset directory, a TRL-format jsonl, or a released Safer-Instruct csv."""
    from .train.data import load_hh, load_preferences

    if str(data) == "hh":
        return load_hh(split="train", limit=limit)
    return load_preferences(data, limit=limit)


def train_settings(step: Any, kind: str) -> dict[str, Any]:
    """Keyword arguments of `sft`/`dpo` from a `TrainStepConfig`."""
    from .errors import BadInput

    if not 0.0 < step.lora_top_fraction <= 1.0:
        raise BadInput(f"{kind}.lora_top_fraction: expected a number in (0, 1], "
                       f"got {step.lora_top_fraction}")  # fmt: skip
    settings: dict[str, Any] = dict(
        base_model=step.base_model, lora=step.lora, learning_rate=step.learning_rate,
        batch_size=step.batch_size, epochs=step.epochs, max_length=step.max_length,
        max_minutes=step.max_minutes, limit=step.max_pairs,
        lora_top_fraction=step.lora_top_fraction,
        trainer_args={
            "optim": step.optim,
            "gradient_accumulation_steps": step.gradient_accumulation_steps,
            "gradient_checkpointing": step.gradient_checkpointing,
        },
    )  # fmt: skip
    if kind == "dpo":
        settings["beta"] = step.beta
    return settings


def sft(data: str | Path, out_dir: str | Path, **settings: Any) -> Path:
    """SFT on the `chosen` responses (never on `rejected`); returns the model directory."""
    from .train.sft import train_sft

    limit = settings.pop("limit", None)
    rows = load_training_data(data, limit)
    return train_sft(rows, out_dir=Path(out_dir), **settings)


def ref_logps_dir(data: str | Path) -> Path:
    """Where DPO keeps reference log-probs: beside the dataset (`ref_logps/`), or in the
    user cache for the shipped HH-RLHF part."""
    if str(data) == "hh":
        return cache_root() / "ref_logps" / "hh"
    path = Path(data)
    if path.is_dir():
        return (path / "dataset" if (path / "dataset").is_dir() else path) / "ref_logps"
    return path.parent / "ref_logps"


def dpo(data: str | Path, out_dir: str | Path, **settings: Any) -> Path:
    """DPO (beta 0.1 by default) on preference rows; returns the model directory.
    Reference log-probs are computed once and saved beside the dataset for reuse."""
    from .train.dpo import train_dpo

    limit = settings.pop("limit", None)
    rows = load_training_data(data, limit)
    settings.setdefault("ref_dir", ref_logps_dir(data))
    return train_dpo(rows, out_dir=Path(out_dir), **settings)
