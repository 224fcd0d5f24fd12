"""The evaluation recipes: each `eval` command and `report`, over backends built once;
an `--out` folder opened as every writer opens one (`output_session`); requests that
failed are left out of every rate and make the command exit 3 (`no_failures`).

    eval_safety("embedded", SafetyEvalConfig(limit=20))
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import (
    CompareConfig,
    DownstreamOptions,
    HelpfulnessConfig,
    ModelConfig,
    OverrefusalConfig,
    RecoveryConfig,
    SafetyEvalConfig,
    ShippedAnswers,
    parse_model_spec,
    parse_spec,
    to_dict,
)
from ..errors import BadInput, RunFailed
from ..llm.factory import Backends
from ..pipeline.induce import check_backends
from ..pipeline.induce import induce as induce_stage
from ..rundir import OutputDir, RunDir, dataset_file
from ..runner import Step, run_stage

log = logging.getLogger("saferinstruct")


def eval_recovery(pairs_path: str | Path, model: ModelConfig | None,
                  cfg: RecoveryConfig | None = None, cache: str | Path | None = None,
                  out_dir: str | Path | None = None, score: bool = True,
                  force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Induce instructions from held-out outputs and score them against the true ones.

    With `score=False`, nothing is scored (no embedding model is needed): the result is
    the rows themselves, {"rows": [{id, generator, output, reference, prediction}]},
    for scoring elsewhere with `evaluate.recovery.score_rows` (benchmarks/gpu.py)."""
    from ..evaluate import recovery

    cfg = cfg or RecoveryConfig()
    if not Path(pairs_path).exists():
        raise BadInput(f"--pairs: file not found: {pairs_path}")
    if cfg.mode not in recovery.MODES:
        raise BadInput(f"--mode: expected reverse, prompted or first-sentence, got {cfg.mode!r}")
    rows = recovery.held_out_rows(pairs_path, cfg.instruction_column, cfg.output_column,
                                  cfg.split, cfg.validation_fraction, cfg.limit)  # fmt: skip
    backend, icfg = None, None
    if cfg.mode != "first-sentence":
        if model is None:
            raise BadInput(f"--model is required for --mode {cfg.mode}")
        icfg = recovery.induce_settings(cfg.mode, cfg.max_new_tokens, cfg.max_text_chars,
                                        cfg.candidates, cfg.select, cfg.temperature)  # fmt: skip
        backend = Backends(str(cache) if cache else None).get(model)
        check_backends(icfg, backend, None)
    identity = {"command": "eval recovery", "model": backend and backend.identity(),
                "pairs": _file_identity(pairs_path), "settings": _settings(cfg)}  # fmt: skip
    with output_session(out_dir, identity, force, RECOVERY_OUTPUTS):
        preds = recovery_predictions(rows, backend, icfg, out_dir)
        if not score:
            return {"rows": recovery.with_predictions(rows, preds)}
        return recovery.summary(rows, preds, cfg.mode, Path(pairs_path).name, out_dir)


def recovery_predictions(rows: list[dict[str, Any]], backend: Any, icfg: Any,
                         out_dir: str | Path | None) -> list[str]:  # fmt: skip
    """The instruction induced for each held-out output (the first sentence for the
    heuristic: no backend), through the induce stage into `out_dir` (a temp folder
    without one)."""
    from ..evaluate import recovery

    if backend is None:
        return recovery.baseline(rows)
    run_ = RunDir(out_dir if out_dir else tempfile.mkdtemp(prefix="recovery-"))
    step = Step("induce", lambda chunk: induce_stage(chunk, backend, icfg), [backend])
    result = run_stage(step, recovery.as_records(rows), run_, total=len(rows))
    return [r.get("instruction") or "" for r in result.records]


def eval_safety(model: str, cfg: SafetyEvalConfig | None = None, out: Path | None = None,
                force: bool = False, cache: str | None = None) -> dict[str, Any]:
    """Refusal rates of `model` (a spec) on harmful prompts (default: the shipped HH-RLHF
    evaluation part), with their definitions; with `out`, every prompt, answer and label
    in `out/answers.jsonl`."""
    from ..evaluate.safety import harmful_prompts, safety

    cfg = cfg or SafetyEvalConfig()
    check_prompt_files(cfg.prompts, cfg.data)
    backend = Backends(cache).get(parse_model_spec(model))
    identity = {"command": "eval safety", "model": backend.identity(),
                "prompts": _file_identity(cfg.prompts or cfg.data),
                "settings": _settings(cfg, "prompts", "data")}  # fmt: skip
    with output_session(out, identity, force, (ANSWERS_FILE,)):
        prompts = harmful_prompts(cfg.prompts, cfg.column, cfg.data, cfg.limit)
        result = _with_answers(safety(backend, prompts, cfg.max_new_tokens), out)
    return _no_failures("eval safety", result)


def eval_overrefusal(model: str, cfg: OverrefusalConfig | None = None,
                     out: Path | None = None, force: bool = False,
                     cache: str | None = None) -> dict[str, Any]:  # fmt: skip
    """XSTest: full-compliance rate on safe prompts, refusal rate on unsafe ones; with
    `out`, every prompt, answer and label in `out/answers.jsonl`."""
    from ..evaluate.safety import overrefusal

    cfg = cfg or OverrefusalConfig()
    backend = Backends(cache).get(parse_model_spec(model))
    identity = {"command": "eval overrefusal", "model": backend.identity(),
                "settings": _settings(cfg)}  # fmt: skip
    with output_session(out, identity, force, (ANSWERS_FILE,)):
        result = _with_answers(overrefusal(backend, cfg.max_new_tokens, cfg.limit), out)
    return _no_failures("eval overrefusal", result)


@contextmanager
def output_session(out: str | Path | None, identity: dict[str, Any], force: bool,
                   writes: tuple[str, ...]) -> Iterator[OutputDir | None]:  # fmt: skip
    """An evaluation's or report's --out, opened as every writer opens its folder: locked,
    refused when made with another identity (unless `force`, which removes what it
    `writes` there), complete when written."""
    if out is None:
        yield None
        return
    folder = OutputDir(out, writes)
    with folder.lock():
        folder.begin(identity, force)
        yield folder
        folder.finish()


def check_prompt_files(prompts: Path | None, data: Path | None) -> None:
    """BadInput before any model loads: a prompt file that is missing, a run directory
    that is incomplete."""
    for path in (prompts, data):
        if path is not None and not Path(path).exists():
            raise BadInput(f"file not found: {path}")
    if data is not None and Path(data).is_dir():
        RunDir(data).require_complete("--data")


def _settings(cfg: Any, *leave_out: str) -> dict[str, Any]:
    """A settings dataclass as an identity's part (input files left out: hashed apart)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in leave_out}


def _file_identity(path: str | Path | None) -> str | None:
    """A prompt file's (or run directory's test split's) content hash; None for none."""
    from ..llm.fingerprint import file_hash

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
RECOVERY_OUTPUTS = ("stages", "recovery_examples.md")
COMPARISON_OUTPUTS = ("comparison.html", "comparison.md", "comparison.json", "comparison_files")


def _with_answers(result: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """The result without its judged answers; written to `out` when given."""
    from ..io import write_jsonl_atomic

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


def eval_helpfulness(model: str, cfg: HelpfulnessConfig | None = None,
                     out: Path | None = None, cache: str | None = None) -> dict[str, Any]:
    """Pairwise win-rate of `model` against `cfg.reference` (specs, or pairs:GENERATOR) on
    held-out AlpacaEval instructions, judged in both orders; with `out`, one line per
    instruction is written there (`items_file`). A judge whose position consistency is
    below `cfg.min_consistency` gives no win-rate (`no_signal`)."""
    from ..config import VerdictConfig
    from ..evaluate.helpfulness import gate, helpfulness
    from ..io import write_jsonl_atomic

    cfg = cfg or HelpfulnessConfig()
    pool = Backends(cache)
    result = helpfulness(
        _side(model, pool), _side(cfg.reference, pool),
        judge=pool.get(parse_model_spec(cfg.judge)), verdict=VerdictConfig(mode=cfg.verdict_mode),
        limit=cfg.limit, max_new_tokens=cfg.max_new_tokens, max_answer_chars=cfg.max_answer_chars,
    )  # fmt: skip
    items = result.pop("items")
    if out is not None:
        write_jsonl_atomic(out, items)
        result["items_file"] = str(out)
    result = gate({**result, "model": model, "reference": cfg.reference}, cfg.min_consistency)
    return _no_failures("eval helpfulness", result)


def eval_downstream(opts: DownstreamOptions) -> dict[str, Any]:
    """lm-evaluation-harness tasks (`opts.tasks`, comma separated) on a local model (a
    spec): per task its metrics."""
    from ..evaluate.downstream import downstream

    tasks = [t.strip() for t in opts.tasks.split(",") if t.strip()]
    result = downstream(parse_model_spec(opts.model), tasks, opts.include_path, opts.limit,
                        opts.batch_size, opts.num_fewshot)  # fmt: skip
    for task in result["tasks"].values():
        task.pop("values")
    return {"model": opts.model, **result}


def eval_reward_model() -> dict[str, Any]:
    """Train (or load) the harmlessness reward model on the shipped HH-RLHF training part;
    its pairwise accuracy on the evaluation part, which it never saw."""
    from ..evaluate.reward import default_reward_model

    rm = default_reward_model()
    return {"pairwise_accuracy": rm.accuracy, "n_train": rm.n_train, "n_eval": rm.n_eval}


def eval_refusal_agreement(labels: Path) -> dict[str, Any]:
    """The refusal classifier against human labels (refits without `labels` if trained
    on it)."""
    from ..measures.refusal import refusal_agreement

    if not Path(labels).exists():
        raise BadInput(f"--labels: file not found: {labels}")
    return refusal_agreement(labels)


def report(models: dict[str, str], out: str | Path, cfg: CompareConfig | None = None,
           reference: str | None = None, judge: str = "embedded",
           cache: str | None = None, force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Measure `models` (name -> spec) side by side and write R/comparison.{html,md,json};
    helpfulness against `reference` (default: the first model), judged by `judge`."""
    from ..evaluate.compare import Entry, add_downstream, compare
    from ..report.comparison import write_comparison

    cfg = cfg or CompareConfig()
    check_prompt_files(cfg.harmful_prompts, cfg.data)
    pool = Backends(cache)
    entries = {n: Entry(spec, pool.get(parse_model_spec(spec))) for n, spec in models.items()}
    ref_spec = reference or next(iter(models.values()))
    helpful = cfg.helpfulness_limit != 0
    judge_backend = pool.get(parse_model_spec(judge)) if helpful else None
    identity = {"command": "report", "models": {n: e.side.identity() for n, e in entries.items()},
                "reference": ref_spec, "judge": judge if helpful else None,
                "prompts": _file_identity(cfg.harmful_prompts or cfg.data),
                "settings": _settings(cfg, "harmful_prompts", "data")}
    with output_session(out, identity, force, COMPARISON_OUTPUTS):
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
