"""The Python API: what every CLI subcommand calls. Notebook users call these directly.

import saferinstruct.api as si
cfg = si.load_config("configs/quickstart.yaml")
funnel = si.run(cfg, "runs/quick")
records = si.induce_records(records, cfg)
"""

from __future__ import annotations

import json
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
from .paths import default_call_cache
from .pipeline.induce import check_backends, induce
from .pipeline.sources import load_sources
from .records import Record
from .runner import StageResult, run_stage

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


def run(cfg: RunConfig, run_dir: str | Path, limit: int | None = None) -> dict[str, Any]:
    """The data pipeline over the config's sources; returns the funnel (also funnel.json)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    reverse_info = ensure_reverse_model(cfg)
    models = {"induce": induce_model(cfg).identity()}
    write_resolved_config(cfg, run_dir, models)
    sources = list(load_sources(cfg.source, limit))
    write_jsonl_atomic(run_dir / "stages" / "00-sources.jsonl", sources)
    stages = [induce_records(sources, cfg, run_dir, total=len(sources))]
    funnel = {
        "sources": len(sources),
        "stages": [reverse_info] + [s.summary() for s in stages],
        "by_category": _by_category(stages[-1].path),
    }
    (run_dir / "funnel.json").write_text(json.dumps(funnel, indent=2))
    return funnel


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
) -> dict[str, Any]:
    """Induce instructions from held-out outputs and score them against the true ones."""
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
        icfg = InduceConfig(mode=mode)
        icfg.generation.max_new_tokens = max_new_tokens
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
    summary = summarize(score_rows(preds, refs, outputs), [r.get("generator") for r in rows])
    summary["mode"] = mode
    return summary
