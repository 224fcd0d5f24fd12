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
from .config import RunConfig, load_config, to_dict
from .io import write_jsonl_atomic
from .llm.cache import CachedBackend
from .llm.factory import make_backend
from .paths import default_call_cache
from .pipeline.induce import check_backends, induce
from .pipeline.sources import load_sources
from .records import Record
from .runner import StageResult, run_stage

__all__ = ["load_config", "run", "induce_records", "write_resolved_config"]

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


def run(cfg: RunConfig, run_dir: str | Path, limit: int | None = None) -> dict[str, Any]:
    """The data pipeline over the config's sources; returns the funnel (also funnel.json)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    models = {"induce": induce_model(cfg).identity()}
    write_resolved_config(cfg, run_dir, models)
    sources = list(load_sources(cfg.source, limit))
    write_jsonl_atomic(run_dir / "stages" / "00-sources.jsonl", sources)
    stages = [induce_records(sources, cfg, run_dir, total=len(sources))]
    funnel = {
        "sources": len(sources),
        "stages": [s.summary() for s in stages],
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
