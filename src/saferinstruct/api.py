"""The Python API: every CLI subcommand calls the function of the same name here
(`eval safety` -> `eval_safety`, `judge` -> `judge`). Notebook users call them directly.

    import saferinstruct.api as si
    cfg = si.load_config("configs/quickstart.yaml")
    summary = si.run(cfg, "runs/quick")        # the whole data pipeline
    si.judge(cfg, "runs/quick")                # one stage again, from its input file

A thin face over the recipes (`recipes/`: data, training, evaluation, serving), which
resolve each model role once, run the components (`pipeline/`, `train/`, `evaluate/`,
`report/`) and write every output folder through `rundir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import (
    AlignConfig,
    CompareConfig,
    HelpfulnessConfig,
    OverrefusalConfig,
    RecoveryConfig,
    RunConfig,
    SafetyEvalConfig,
    TrainStepConfig,
    load_config,
)
from .recipes.data import (
    audit,
    estimate,
    induce,
    init,
    judge_audit,
    merge,
    quickstart_config,
    read_sources,
    run,
    run_processes,
    stage,
    use_input,
)
from .recipes.evaluation import (
    eval_downstream,
    eval_helpfulness,
    eval_overrefusal,
    eval_recovery,
    eval_refusal_agreement,
    eval_reward_model,
    eval_safety,
    report,
    report_line,
)
from .recipes.serving import models, probe, review, serve
from .recipes.training import dpo, result_line, reverse_train, sft

__all__ = [
    "load_config", "quickstart_config", "use_input", "read_sources", "init", "run",
    "run_processes", "estimate",
    "reverse_train", "induce", "filter", "respond", "judge", "audit", "judge_audit",
    "assemble", "merge",
    "sft", "dpo", "result_line", "eval_recovery", "eval_safety", "eval_overrefusal",
    "eval_helpfulness", "eval_downstream", "eval_reward_model", "eval_refusal_agreement",
    "report", "report_line",
    "models", "probe", "serve", "review", "AlignConfig", "CompareConfig", "HelpfulnessConfig",
    "OverrefusalConfig", "RecoveryConfig", "RunConfig", "SafetyEvalConfig", "TrainStepConfig",
]  # fmt: skip


def filter(cfg: RunConfig, run_dir: str | Path, input: Path | None = None) -> dict[str, Any]:
    """Stage 02 on a run directory: the expert keeps instructions that would elicit the
    category's behaviour (reads `input`, else the run's induce stage file)."""
    return stage("filter", cfg, run_dir, input)


def respond(cfg: RunConfig, run_dir: str | Path, input: Path | None = None) -> dict[str, Any]:
    """Stage 03 on a run directory: the expert writes the preferred response."""
    return stage("respond", cfg, run_dir, input)


def judge(cfg: RunConfig, run_dir: str | Path, input: Path | None = None) -> dict[str, Any]:
    """Stage 04 on a run directory: the expert checks every finished pair (`audit` judges
    an existing preference file instead)."""
    return stage("judge", cfg, run_dir, input)


def assemble(cfg: RunConfig, run_dir: str | Path, input: Path | None = None,
             shards: list[Path] | None = None, force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Stage 05 on a run directory: dedup, split, dataset, card, funnel and report; with
    `shards` (run directories of `run --shard I/N`), over all of them as one run."""
    if shards:
        return merge(shards, cfg, run_dir, force=force)
    return stage("assemble", cfg, run_dir, input)
