"""Configuration: one YAML file -> one `RunConfig`, a small dataclass per stage; a
training config -> `AlignConfig` (one `TrainStepConfig` each for SFT and DPO).

Every field has a default and a one-line doc (its `metadata["doc"]`; `field_docs()`
lists them all, and the CLI builds training options from them). Loading is strict: an
unknown key, a wrong type or a missing input file raises `BadInput` with one line naming
the key (or path). Relative paths in a config file resolve against the file's own
directory. CLI options override the file: `--set induce.num_candidates=4` (the value is
YAML).

A model is a `ModelConfig` wherever one is needed (a pipeline role, a training base,
`serve`); a model SPEC string (`embedded`, a local directory, `openai:NAME@URL`) is its
short form, read by `parse_model_spec`, in YAML as well as on the command line.

    cfg = load_config("configs/quickstart.yaml", overrides=["induce.num_candidates=2"])
    parse_model_spec("openai:gpt-4o@https://api.openai.com/v1")
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInput
from .paths import data_dir

PATH_FIELDS = {"path", "pairs_path", "prompt_file"}


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _ranged(span: tuple[float, float | None, bool], text: str) -> dict[str, Any]:
    """A field's doc and its range: (lowest, highest or None, whether the highest is
    allowed); outside it the value is bad input (`check_ranges`)."""
    return {"doc": text, "range": span}


REPORT_TO = ("none", "tensorboard", "trackio", "wandb")
"""The trackers a training's `report_to` takes (train/tracking.py: where their files go)."""


def _report_to() -> Any:
    """The `report_to` field of every training (reverse-train, sft, dpo)."""
    return field(default="none", metadata=_doc(
        "training curves also to: none, tensorboard, trackio, wandb (comma separated; "
        "local files in OUT/tracking, no account)"))


def report_targets(value: str, where: str) -> list[str]:
    """The trackers `value` names (`none` -> []); BadInput for one not in `REPORT_TO`
    or one whose package is not installed, before any model loads."""
    import importlib.util

    names = [n.strip() for n in str(value).split(",") if n.strip()]
    if not names or any(n not in REPORT_TO for n in names):
        raise BadInput(f"{where}.report_to: expected none or some of "
                       f"{', '.join(REPORT_TO[1:])} (comma separated), got {value!r}")
    targets = [n for n in names if n != "none"]
    for name in targets:
        if importlib.util.find_spec(name) is None:
            raise BadInput(f"{where}.report_to {name}: the {name} package is not installed "
                           f"(pip install {name})")  # fmt: skip
    return targets


@dataclass
class ModelConfig:
    """One model role (reverse, expert, judge...): which backend and how to reach it."""

    backend: str = field(default="local", metadata=_doc("'local' (transformers) or 'openai'"))
    model: str = field(
        default="embedded",
        metadata=_doc("local: an HF directory or 'embedded'; openai: the served model name"),
    )
    base_url: str | list[str] | None = field(
        default=None,
        metadata=_doc("openai: endpoint URL, e.g. http://127.0.0.1:8000/v1, or a list of "
                      "replicas of the same model (requests go to the least busy)"),
    )  # fmt: skip
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=_doc("openai: env var holding the API key (a name ending _API_KEY or _TOKEN)"),
    )
    api_key_file: str | None = field(
        default=None, metadata=_doc("openai: a file holding the API key (instead of the env)")
    )
    allow_any_key_env: bool = field(
        default=False,
        metadata=_doc("openai: let api_key_env name any variable (it is sent to base_url)"),
    )
    revision: str | None = field(
        default=None,
        metadata=_doc("openai: part of the cache identity; change it when the model behind "
                      "the served name changes"),
    )  # fmt: skip
    batch_size: int = field(default=16, metadata=_doc("local: prompts per generate() batch"))
    device: str = field(default="auto", metadata=_doc("local: 'auto', 'cpu', 'cuda', 'cuda:1'"))
    dtype: str = field(
        default="auto", metadata=_doc("local: 'auto' (bf16 on GPUs that have it, else fp32)")
    )
    max_concurrency: int = field(
        default=64, metadata=_doc("openai: requests in flight, over all stages and replicas")
    )
    max_retries: int = field(default=4, metadata=_doc("openai: retries per request"))
    timeout_s: float = field(default=120.0, metadata=_doc("openai: seconds per request"))
    max_failures_in_row: int = field(
        default=8, metadata=_doc("openai: this many failed requests in a row = endpoint down")
    )
    wait_for_server_s: float = field(
        default=0.0,
        metadata=_doc("openai: wait up to this long for a server that refuses connections "
                      "(still starting, e.g. vllm serve) before calling it down"),
    )  # fmt: skip
    retry_timeouts: bool = field(
        default=False,
        metadata=_doc("openai: send a timed-out request again (the server may still be "
                      "working on the first: paid twice)"),
    )  # fmt: skip
    supports_logprobs: bool = field(
        default=True, metadata=_doc("openai: the endpoint returns top_logprobs")
    )
    supports_score: bool = field(
        default=True, metadata=_doc("openai: /v1/completions with echo+logprobs works")
    )
    supports_json_schema: bool = field(
        default=True, metadata=_doc("openai: response_format json_schema is honoured")
    )
    price_in_per_mtok: float | None = field(
        default=None, metadata=_doc("price per million input tokens (run --estimate costs it)")
    )
    price_out_per_mtok: float | None = field(
        default=None, metadata=_doc("price per million output tokens (run --estimate)")
    )


PAIRS_PREFIX = "pairs:"


@dataclass(frozen=True)
class ShippedAnswers:
    """`pairs:GENERATOR`: the shipped AlpacaEval answers of one generator, not a model
    (a side of the helpfulness comparison)."""

    generator: str


def parse_spec(spec: str) -> ModelConfig | ShippedAnswers:
    """The one reader of SPEC strings: 'embedded', a local directory,
    'openai:NAME@BASE_URL', or 'pairs:GENERATOR' (shipped answers)."""
    spec = str(spec).strip()
    if not spec:
        raise BadInput("model spec: empty (expected 'embedded', a directory or openai:NAME@URL)")
    if spec.startswith(PAIRS_PREFIX):
        return ShippedAnswers(spec[len(PAIRS_PREFIX) :])
    if spec.startswith("openai:"):
        name, _, url = spec[len("openai:") :].partition("@")
        return ModelConfig(backend="openai", model=name, base_url=url or None)
    return ModelConfig(backend="local", model=spec)


def parse_model_spec(spec: str) -> ModelConfig:
    """`parse_spec` where only a model will do (`pairs:` is BadInput)."""
    parsed = parse_spec(spec)
    if isinstance(parsed, ShippedAnswers):
        raise BadInput(f"{spec!r}: shipped answers are not a model here; give a model spec")
    return parsed


def with_model(base: ModelConfig | None, spec: str) -> ModelConfig:
    """`base` (a config's model role, keeping its retry/batch settings) pointed at `spec`."""
    target = parse_model_spec(spec)
    return dataclasses.replace(
        base or ModelConfig(), backend=target.backend, model=target.model, base_url=target.base_url
    )


def spec_of(model: ModelConfig) -> str:
    """The SPEC string of a model config (for messages and reports)."""
    if model.backend == "openai":
        return f"openai:{model.model}@{model.base_url}"
    return model.model


@dataclass
class SourceConfig:
    """Stage 00, sources: the in-the-wild texts the pipeline starts from."""

    path: str = field(
        default="", metadata=_doc("csv / jsonl(.gz) / parquet / datasets dir of source texts")
    )
    text_column: str = field(default="text", metadata=_doc("column with the source text"))
    id_column: str | None = field(
        default="id", metadata=_doc("column with a stable id (else file name + row number)")
    )
    category_column: str | None = field(
        default="category", metadata=_doc("column with the category (else `default_category`)")
    )
    default_category: str = field(default="default", metadata=_doc("category when none given"))
    limit: int | None = field(
        default=None,
        metadata=_ranged((1, None, True), "keep at most this many per category"),
    )
    max_text_chars: int = field(
        default=20000,
        metadata=_ranged((1, None, True),
                         "longer texts are cut to this many characters at load (counted)"),
    )
    shard: str | None = field(
        default=None,
        metadata=_doc("'I/N': only the texts whose id hashes to shard I of N (merge the "
                      "shards with `assemble --merge`)"),
    )  # fmt: skip
    where: dict[str, list[str]] | None = field(
        default=None, metadata=_doc("keep rows whose column value is listed: {column: [values]}")
    )


@dataclass
class GenConfig:
    """Sampling settings for one stage's generations."""

    temperature: float = field(default=0.0, metadata=_doc("0 = greedy"))
    top_p: float = field(default=1.0, metadata=_doc("nucleus sampling mass"))
    max_new_tokens: int = field(default=64, metadata=_doc("tokens per generation"))
    seed: int = field(default=0, metadata=_doc("sampling seed"))


@dataclass
class ReverseTrainConfig:
    """Reversed instruction tuning: learn P(instruction | response)."""

    base_model: ModelConfig = field(
        default_factory=ModelConfig,
        metadata=_doc("model to tune: 'embedded', an HF directory, or a model mapping"),
    )
    path: str = field(
        default="",
        metadata={"doc": "pairs file", "cli": "--pairs", "shown": "the shipped AlpacaEval pairs"},
    )
    instruction_column: str = field(default="instruction", metadata=_doc("instruction column"))
    response_column: str = field(default="output", metadata=_doc("response column"))
    max_pairs: int = field(
        default=800,
        metadata=_ranged((1, None, True),
                         "training pairs used (after the split; distinct ids first)")
    )
    validation_fraction: float = field(
        default=0.1,
        metadata=_ranged((0.0, 1.0, False), "share of ids held out"),
    )
    max_response_chars: int = field(
        default=320, metadata=_doc("responses are cut to this many characters (also at induce)")
    )
    max_length: int = field(default=256, metadata=_doc("tokens per training sequence"))
    lora: bool = field(
        default=False,
        metadata={"doc": "train a LoRA adapter (merged at the end)", "flag": "--lora/--full"},
    )
    learning_rate: float = field(default=1e-4, metadata=_doc("peak learning rate"))
    batch_size: int = field(default=8, metadata=_ranged((1, None, True), "sequences per step"))
    epochs: float = field(default=1.0, metadata=_doc("passes over the training pairs"))
    max_steps: int | None = field(
        default=None, metadata=_doc("optimizer steps (the schedule ends there); null = epochs")
    )
    max_minutes: float | None = field(
        default=None,
        metadata=_doc("a guard: stop after this, save, and resume on the next call (a cut "
                      "model is never reused as finished)"),
    )  # fmt: skip
    seed: int = field(default=0, metadata=_doc("training seed"))
    report_to: str = _report_to()


@dataclass
class InduceConfig:
    """Stage 01, induce: which instruction does each text answer?"""

    mode: str = field(
        default="reverse",
        metadata=_doc("'reverse' (reverse-tuned model, paper template) or 'prompted' baseline"),
    )
    num_candidates: int = field(
        default=1,
        metadata=_ranged((1, None, True), "candidate instructions per text"),
    )
    select: str = field(
        default="first",
        metadata=_doc("'first' valid, 'reverse_logprob' P(instr|text), 'forward_logprob'"),
    )
    max_instruction_chars: int = field(
        default=400,
        metadata=_ranged((1, None, True), "longer = invalid"),
    )
    max_text_chars: int | None = field(
        default=None,
        metadata=_doc("cut source texts; null = reverse_train.max_response_chars (reverse), 1500"),
    )
    generation: GenConfig = field(default_factory=GenConfig, metadata=_doc("sampling"))


@dataclass
class DomainConfig:
    """What the data is about: categories and where their prompt files live."""

    name: str = field(
        default="safety", metadata=_doc("prompt set: a folder under prompts/ (safety, helpfulness)")
    )
    prompt_dir: str | None = field(
        default=None, metadata=_doc("a folder of your own prompt files overriding the set's")
    )
    categories: list[str] = field(
        default_factory=lambda: ["hate", "illegal", "self-harm", "sexual"],
        metadata=_doc("categories with their own criteria files (filter_<category>.txt)"),
    )


@dataclass
class VerdictConfig:
    """How an expert's yes/no verdict is read."""

    mode: str = field(
        default="json",
        metadata=_doc("'json' (verdict, score, reason under a JSON schema) or 'logprobs' (P(yes))"),
    )
    threshold: float = field(
        default=0.5, metadata=_doc("keep when the score in [0, 1] is at least this")
    )
    keep_unparsed: bool = field(
        default=False, metadata=_doc("keep records whose verdict could not be parsed")
    )
    max_new_tokens: int = field(default=96, metadata=_doc("json mode: tokens for the verdict"))


@dataclass
class FilterConfig:
    """Stage 02, filter: keep instructions well formed and likely to elicit the behaviour."""

    verdict: VerdictConfig = field(default_factory=VerdictConfig, metadata=_doc("verdict"))


@dataclass
class RespondConfig:
    """Stage 03, respond: the expert writes the preferred response."""

    generation: GenConfig = field(
        default_factory=lambda: GenConfig(temperature=0.7, max_new_tokens=160),
        metadata=_doc("sampling for the preferred response"),
    )
    template_similarity: float = field(
        default=0.9,
        metadata=_ranged((0.0, 1.0, True),
                         "responses at least this similar (MiniLM) count as templates")
    )
    candidates: int = field(
        default=1,
        metadata=_ranged((1, None, True),
            "sample up to this many responses per instruction; a later one only when the "
            "earlier ones failed (empty, request failed, or complied with prefer_declining)"
        ),
    )
    prefer_declining: bool = field(
        default=False,
        metadata=_doc(
            "safety domains: take the first candidate the refusal classifier does not read "
            "as full compliance (else the first, for the judge to see)"
        ),
    )


@dataclass
class JudgeConfig:
    """Stage 04, judge: the expert checks each finished pair."""

    verdict: VerdictConfig = field(default_factory=VerdictConfig, metadata=_doc("verdict"))
    max_pair_cosine: float = field(
        default=0.75, metadata=_doc("chosen and rejected at least this similar = near-copies")
    )
    max_rejected_overlap: float = field(
        default=0.3,
        metadata=_doc("share of the chosen's word bigrams found in rejected = carries it over"),
    )
    min_chosen_words: int = field(
        default=3,
        metadata=_ranged((0, None, True), "a chosen with fewer words is degenerate (unhelpful)")
    )
    chosen_must_decline: bool = field(
        default=False,
        metadata=_doc(
            "safety domains: drop a chosen the refusal classifier reads as full compliance"
        ),
    )
    contrast: bool = field(
        default=False,
        metadata=_doc("also ask with chosen and rejected swapped; keep on the score margin"),
    )
    contrast_margin: float = field(
        default=0.0, metadata=_doc("contrast: keep when score(real) - score(swapped) > this")
    )


@dataclass
class AssembleConfig:
    """Stage 05, assemble: dedup, split, and the dataset files."""

    near_duplicate_threshold: float = field(
        default=0.95,
        metadata=_ranged((0.0, 1.0, True),
                         "instructions at least this similar (MiniLM) are duplicates")
    )
    test_fraction: float = field(
        default=0.1,
        metadata=_ranged((0.0, 1.0, False), "share of source texts for test"),
    )
    seed: int = field(default=0, metadata=_doc("split seed"))
    rejected: str = field(default="source", metadata=_doc(
        "the rejected side: 'source' (the source text, as in the paper) or 'expert' (the "
        "expert's own answer the refusal classifier read as complying, where respond drew "
        "one with prefer_declining; else the source text)"))

    def check(self, where: str) -> None:
        """Bad input at load, before any model call."""
        if self.rejected not in REJECTED_SIDES:
            raise BadInput(f"{where}: assemble.rejected: expected one of "
                           f"{', '.join(REJECTED_SIDES)}, got {self.rejected!r}")  # fmt: skip


REJECTED_SIDES = ("source", "expert")
"""Where assemble takes a pair's `rejected` text from (`AssembleConfig.rejected`)."""


@dataclass
class SuccessConfig:
    """What counts as a successful run (else it ends with exit 3 or 4 and says why)."""

    max_failed_share: float = field(
        default=0.0,
        metadata=_ranged((0.0, 1.0, True),
                         "records lost to failed model requests allowed, as a share of the "
                      "sources (0: any lost record fails the run, exit 3)"),
    )  # fmt: skip
    min_pair_share: float = field(
        default=0.0,
        metadata=_ranged((0.0, 1.0, True),
                         "fewest pairs, as a share of the sources (0: only no pairs at all "
                      "fails the run, exit 4)"),
    )  # fmt: skip


@dataclass
class RunConfig:
    """One whole run. Sections mirror the pipeline order."""

    source: SourceConfig = field(default_factory=SourceConfig, metadata=_doc("input texts"))
    reverse_model: ModelConfig | None = field(
        default=None, metadata=_doc("a trained reverse model; null = train one (reverse_train)")
    )
    expert: ModelConfig = field(default_factory=ModelConfig, metadata=_doc("the expert model"))
    forward: ModelConfig | None = field(
        default=None, metadata=_doc("forward model for select=forward_logprob")
    )
    reverse_train: ReverseTrainConfig = field(
        default_factory=ReverseTrainConfig, metadata=_doc("reversed instruction tuning")
    )
    induce: InduceConfig = field(default_factory=InduceConfig, metadata=_doc("induction"))
    domain: DomainConfig = field(default_factory=DomainConfig, metadata=_doc("domain"))
    filter: FilterConfig = field(default_factory=FilterConfig, metadata=_doc("expert filter"))
    respond: RespondConfig = field(default_factory=RespondConfig, metadata=_doc("responses"))
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata=_doc("pair checks"))
    assemble: AssembleConfig = field(default_factory=AssembleConfig, metadata=_doc("dataset"))
    success: SuccessConfig = field(
        default_factory=SuccessConfig, metadata=_doc("what counts as a successful run")
    )
    cache: str | None = field(
        default=None, metadata=_doc("SQLite call cache; null = one shared file in user cache")
    )


DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
                  "sigmoid_norm")  # fmt: skip
"""The loss types TRL's DPOTrainer knows (trl 1.x); another is bad input before any
model loads (TRL itself would say so only at the first training step)."""


def _only(stage: str, text: str) -> dict[str, str]:
    return {"doc": text, "only": stage}


LORA_RANK = 16
"""The LoRA rank where none is set: `sft`/`dpo` (`lora_rank`) and reverse training."""


@dataclass
class TrainStepConfig:
    """One alignment training step (`sft` or `dpo`): every setting the trainers take.
    Passed whole from the CLI (whose options are built from these fields) to TRL."""

    base_model: ModelConfig = field(
        default_factory=ModelConfig,
        metadata=_doc("model to start from: 'embedded', an HF dir (DPO: the SFT model)"),
    )
    lora: bool = field(
        default=True,
        metadata={"doc": "LoRA (merged at the end) or full fine-tune", "flag": "--lora/--full"},
    )
    lora_top_fraction: float = field(
        default=1.0, metadata=_doc("LoRA on the top share of layers only (faster on CPUs)")
    )
    lora_rank: int = field(
        default=LORA_RANK,
        metadata=_ranged((1, None, True), "LoRA rank r of every adapter (alpha = 2r)"),
    )
    learning_rate: float | None = field(
        default=None, metadata=_doc("null = 2e-4/2e-5 (SFT LoRA/full), 2e-4/5e-7 (DPO)")
    )
    batch_size: int = field(default=8, metadata=_doc("sequences (SFT) or pairs (DPO) per step"))
    gradient_accumulation_steps: int = field(default=1, metadata=_doc("steps per update"))
    epochs: float = field(default=1.0, metadata=_doc("passes over the data"))
    max_length: int = field(default=256, metadata=_doc("tokens per sequence"))
    max_pairs: int | None = field(default=None, metadata=_doc("use at most N pairs"))
    max_steps: int | None = field(
        default=None, metadata=_doc("optimizer steps (the schedule ends there); null = epochs")
    )
    max_minutes: float | None = field(
        default=None,
        metadata=_doc("a guard: stop after this and save; the next call resumes the training"),
    )
    seed: int = field(default=0, metadata=_doc("training seed"))
    beta: float = field(default=0.1, metadata=_only("dpo", "DPO beta (the paper: 0.1)"))
    loss_type: str = field(
        default="sigmoid",
        metadata=_only("dpo", "TRL's preference loss: sigmoid (DPO), ipo, robust (with "
                              "--label-smoothing), hinge, ..."),
    )  # fmt: skip
    label_smoothing: float = field(
        default=0.0,
        metadata={**_only("dpo", "robust / conservative DPO: the share of preference labels "
                                 "taken as flipped"), "range": (0.0, 0.5, False)},
    )  # fmt: skip
    held_out_share: float = field(
        default=0.1,
        metadata=_ranged((0.0, 0.5, True), "pairs held out to measure what training "
                         "learned, when the data has no test split"),
    )  # fmt: skip
    precompute_ref: bool = field(
        default=True,
        metadata={**_only("dpo", "reference log-probs computed once and stored beside the "
                                 "data"), "flag": "--precompute-ref/--live-ref"},
    )  # fmt: skip
    optim: str = field(
        default="adamw_torch", metadata=_doc("transformers optimizer name (the paper: rmsprop)")
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=_doc("trade compute for memory (large models on GPUs)")
    )
    report_to: str = _report_to()

    def check(self, kind: str) -> None:
        """BadInput for settings no trainer can use, before any data or model loads."""
        check_ranges(self, kind)
        report_targets(self.report_to, kind)
        if self.loss_type not in DPO_LOSS_TYPES:
            raise BadInput(f"{kind}.loss_type: expected one of {', '.join(DPO_LOSS_TYPES)}, "
                           f"got {self.loss_type!r}")  # fmt: skip
        if self.loss_type == "exo_pair" and self.label_smoothing == 0.0:
            raise BadInput(f"{kind}.loss_type exo_pair needs label_smoothing > 0")
        if not 0.0 < self.lora_top_fraction <= 1.0:
            raise BadInput(f"{kind}.lora_top_fraction: expected a number in (0, 1], "
                           f"got {self.lora_top_fraction}")  # fmt: skip
        if self.base_model.backend != "local":
            raise BadInput(f"{kind}.base_model: training needs a local model, "
                           f"got backend {self.base_model.backend!r}")  # fmt: skip

    def trainer_args(self) -> dict[str, Any]:
        """The settings that go to TRL's config as they are."""
        return {
            "optim": self.optim,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "gradient_checkpointing": self.gradient_checkpointing,
        }


@dataclass
class AlignConfig:
    """The alignment training settings: SFT on chosen, then DPO from the SFT model."""

    sft: TrainStepConfig = field(
        default_factory=lambda: TrainStepConfig(epochs=3.0),
        metadata=_doc("SFT step (3 epochs: one moved the embedded model half as far)"),
    )
    dpo: TrainStepConfig = field(
        default_factory=lambda: TrainStepConfig(batch_size=4, lora_top_fraction=0.5),
        metadata=_doc("DPO step (LoRA on the top half of the layers by default)"),
    )


def load_align_config(path: str | Path | None) -> AlignConfig:
    """Read a training config (sections `sft`, `dpo`); None gives the defaults."""
    if path is None:
        return AlignConfig()
    p = Path(path)
    return build(AlignConfig, read_yaml(p), str(p))


def read_yaml(p: Path) -> dict[str, Any]:
    """A config file's top-level mapping; BadInput naming the file (and line) when it is
    missing, not UTF-8, not YAML, or not a mapping."""
    if not p.exists():
        raise BadInput(f"config file not found: {p}")
    if p.is_dir():
        raise BadInput(f"config file {p}: is a directory")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise BadInput(f"{p}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise BadInput(f"{p}:{at} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{p}: the top level must be a mapping of sections")
    return raw


# ----------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read, validate and resolve a config file (or the defaults when `path` is None)."""
    raw: dict[str, Any] = {}
    where = "defaults"
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        raw = read_yaml(p)
        where, base = str(p), p.resolve().parent
    for item in overrides or []:
        _apply_override(raw, item)
    cfg = build(RunConfig, raw, where)
    resolve_paths(cfg, base, where)
    return cfg


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise BadInput(f"--set {item!r}: expected KEY=VALUE, e.g. induce.num_candidates=4")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BadInput(f"--set {key}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise BadInput(f"--set {item!r}: the value is not valid YAML (quote it as a string: "
                       f"{key}='...')") from None  # fmt: skip


def build(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise BadInput."""
    name = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise BadInput(f"{where}: {name}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise BadInput(f"{where}: unknown key {prefix}{key} (known: {known})")
    kwargs = {k: _coerce(hints[k], v, where, f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        lists = [a for a in inner if typing.get_origin(a) in (list, tuple)]
        if isinstance(value, list) and lists:
            return _coerce(lists[0], value, where, key)
        return _coerce(inner[0], value, where, key)
    if tp is ModelConfig and isinstance(value, str):
        return parse_model_spec(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise BadInput(f"{where}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return [_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise BadInput(f"{where}: {key}: expected a mapping, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (
        not isinstance(value, tp) or (tp is int and isinstance(value, bool))
    ):
        raise BadInput(f"{where}: {key}: expected {tp.__name__}, got {value!r}")
    return value


def resolve_paths(cfg: RunConfig, base: Path, where: str) -> None:
    """Make input paths absolute (relative to the config file) and check they exist."""
    if not cfg.source.path:
        cfg.source.path = str(data_dir() / "safer-instruct" / "sources.csv")
    if not cfg.reverse_train.path:
        cfg.reverse_train.path = str(data_dir() / "alpacaeval" / "pairs.jsonl.gz")
    for key, section in (("source", cfg.source), ("reverse_train", cfg.reverse_train)):
        section.path = _existing(base, section.path, where, f"{key}.path")
    for key in ("reverse_model", "expert", "forward"):
        model = getattr(cfg, key)
        if model is not None and model.backend == "local" and model.model != "embedded":
            model.model = _existing(base, model.model, where, f"{key}.model")
        if model is not None and model.backend not in ("local", "openai"):
            raise BadInput(f"{where}: {key}.backend: expected 'local' or 'openai'")
        if model is not None and model.backend == "openai" and not model.base_url:
            raise BadInput(f"{where}: {key}.base_url is required for backend 'openai'")
        if model is not None and model.backend == "openai":
            check_key_source(model, where, key)
            if model.api_key_file:
                model.api_key_file = _existing(base, model.api_key_file, where,
                                               f"{key}.api_key_file")  # fmt: skip
    if cfg.domain.prompt_dir:
        folder = Path(cfg.domain.prompt_dir).expanduser()
        folder = folder if folder.is_absolute() else base / folder
        if not folder.is_dir():
            raise BadInput(f"{where}: domain.prompt_dir: folder not found: {folder}")
        cfg.domain.prompt_dir = str(folder.resolve())
    check_ranges(cfg, where)
    cfg.assemble.check(where)
    parse_shard(cfg.source.shard)
    if cfg.cache:
        cfg.cache = str((base / cfg.cache).resolve())


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4); None stays None; anything else is BadInput."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise BadInput(f"--shard / source.shard: expected I/N with 1 <= I <= N, got {shard!r}")
    return i, n


def check_ranges(cfg: Any, where: str, prefix: str = "") -> None:
    """BadInput naming the first setting outside its range (a field's `range`), in `cfg`
    and the dataclasses inside it."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            inner = prefix if f.metadata.get("flatten") else f"{prefix}{f.name}."
            check_ranges(value, where, inner)
        if "range" not in f.metadata or value is None:
            continue
        low, high, closed = f.metadata["range"]
        above = high is not None and (value > high if closed else value >= high)
        if value < low or above:
            span = f">= {low}" if high is None else f"[{low}, {high}{']' if closed else ')'}"
            raise BadInput(f"{where}: {prefix}{f.name}: expected a number in {span}, got {value}")


KEY_ENV = re.compile(r"[A-Z][A-Z0-9_]*(?:_API_KEY|_TOKEN)|API_KEY")


def check_key_source(model: ModelConfig, where: str, key: str) -> None:
    """The API key may come only from a variable named like a key (or one allowed
    explicitly), or from a key file: a config someone else wrote must not send, say,
    AWS_SECRET_ACCESS_KEY as a bearer token to a host of their choosing."""
    if not model.allow_any_key_env and not KEY_ENV.fullmatch(model.api_key_env):
        raise BadInput(
            f"{where}: {key}.api_key_env: {model.api_key_env!r} does not look like an API key "
            "variable (*_API_KEY, *_TOKEN); set allow_any_key_env: true to send it anyway"
        )


def _existing(base: Path, value: str, where: str, key: str) -> str:
    p = Path(value).expanduser()
    p = p if p.is_absolute() else (base / p)
    if not p.exists():
        shown = str(p) if str(p).isprintable() else repr(str(p))
        raise BadInput(f"{where}: {key}: file not found: {shown}")
    return str(p.resolve())


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


TRANSPORT = ("base_url", "api_key_env", "api_key_file", "allow_any_key_env", "max_concurrency",
             "max_retries", "timeout_s", "max_failures_in_row", "retry_timeouts", "batch_size",
             "device", "wait_for_server_s", "price_in_per_mtok", "price_out_per_mtok")  # fmt: skip
"""How a model is reached (and what it costs), not which model it is: these change no
result."""


def run_identity(cfg: RunConfig, limit: int | None = None) -> dict[str, Any]:
    """What a run directory's outputs depend on: every setting and the per-category limit,
    but not where the cache is, how models are reached (`TRANSPORT`: an endpoint's address,
    retries, concurrency; the model behind it is in the cache identity) nor what counts as
    success."""
    doc = without_transport({k: v for k, v in to_dict(cfg).items()
                              if k not in ("cache", "success")})  # fmt: skip
    return json.loads(json.dumps({"config": doc, "limit": limit}, default=str))


def config_hash(cfg: RunConfig, limit: int | None = None) -> str:
    """sha256 of `run_identity` (what run.json keeps, `rundir.identity_hash`)."""
    from .rundir import identity_hash

    return identity_hash(run_identity(cfg, limit))


def without_transport(doc: Any) -> Any:
    """`doc` with the TRANSPORT keys of every model config in it (roles, and models inside
    sections such as reverse_train.base_model) left out."""
    if not isinstance(doc, dict):
        return doc
    is_model = "backend" in doc and "max_concurrency" in doc
    return {k: without_transport(v) for k, v in doc.items() if not (is_model and k in TRANSPORT)}


def load_run_config(path: Path) -> RunConfig:
    """A run directory's resolved `config.yaml`, read back (its `_resolved` block aside;
    paths are not checked again: the run may have moved)."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: unreadable resolved config ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: the top level must be a mapping of sections")
    doc.pop("_resolved", None)
    return build(RunConfig, doc, str(path))


def field_docs(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every field, for `--help`-style listings."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        sub_cls = tp if dataclasses.is_dataclass(tp) else (sub[0] if sub else None)
        if sub_cls is not None:
            rows.append((prefix + f.name, None, f.metadata.get("doc", "")))
            rows.extend(field_docs(sub_cls, prefix + f.name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((prefix + f.name, default, f.metadata.get("doc", "")))
    return rows


# ---------------------------------------------------------------- the commands' options
#
# Every option of every command is a field below (or of the settings dataclass a
# command's options take whole: `flatten`), with its doc, default and range in the
# field's metadata; cli.py only names, for each command, which dataclass it takes. The
# fields every command shares are made by one function each (`_config_option`, ...).


def option(default: Any = dataclasses.MISSING, doc: str = "", *, shown: str | None = None,
           cli: str | tuple[str, ...] | None = None, metavar: str | None = None,
           span: tuple[float, float | None, bool] | None = None, argument: bool = False,
           comma: bool = False, factory: Any = None) -> Any:  # fmt: skip
    """A command option as a dataclass field: its default (MISSING: required), the doc
    `--help` shows, what `--help` shows as the default when the value is None until given
    (`shown`), its spelling on the command line (`cli`, default `--name-with-dashes`),
    its range, whether it is a positional `argument`, and whether a list is given as one
    comma-separated value (`comma`)."""
    meta: dict[str, Any] = {"doc": doc}
    for key, value in (("shown", shown), ("cli", cli), ("metavar", metavar), ("range", span)):
        if value is not None:
            meta[key] = value
    if argument:
        meta["argument"] = True
    if comma:
        meta["comma"] = True
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def settings_of(cls: type) -> Any:
    """A field holding a settings dataclass whose own fields are the command's options."""
    return field(default_factory=cls, metadata={"doc": cls.__doc__ or "", "flatten": True})


def _config_option(doc: str = "run config YAML", shown: str = "the built-in defaults") -> Any:
    return option(None, doc, shown=shown, cli=("--config", "-c"))


def _overrides() -> Any:
    return option(None, "override a config key, e.g. --set induce.num_candidates=4",
                  shown="none", cli="--set", metavar="KEY=VALUE")  # fmt: skip


def _force() -> Any:
    return option(False, "--out was made with other settings or data: replace its outputs "
                         "(without it, such a folder is refused)", cli="--force")  # fmt: skip


def _limit() -> Any:  # its range is source.limit's, checked where sources are read
    return option(None, "at most N source texts per category",
                  shown="the config's source.limit (quickstart: 8; else all)")  # fmt: skip


def _text_column() -> Any:
    return option(None, "--input: column with the text", shown="text")


def _category_column() -> Any:
    return option(None, "--input: column with the category (none: one category, 'default')",
                  shown="category")  # fmt: skip


def _id_column() -> Any:
    return option(None, "--input: column with a stable id (none: row numbers)", shown="id")


def _model_spec(doc: str = "'embedded', a local HF dir, or openai:NAME@URL") -> Any:
    return option(doc=doc)


def _answer_tokens(default: int = 40, doc: str = "new tokens per answer (greedy)") -> Any:
    return option(default, doc, span=(1, None, True))


def _answers_out() -> Any:
    return option(None, "write every prompt, answer and label to DIR/answers.jsonl (a few, "
                        "cut short, are shown on stderr behind a content warning)",
                  shown="none", cli=("--out", "-o"))  # fmt: skip


def _prompts_file() -> Any:
    return option(None, "file of harmful prompts", shown="the shipped HH-RLHF evaluation part",
                  cli="--prompts")  # fmt: skip


def _prompts_column() -> Any:
    return option("prompt", "--prompts: the prompt column", cli="--column")


def _run_data() -> Any:
    return option(None, "a run dir: its dataset/test.jsonl", shown="none", cli="--data")


def _min_consistency() -> Any:
    return option(0.6, "the judge's position consistency below which no win-rate is given "
                       "(it has no signal)", cli="--min-consistency",
                  span=(0.0, 1.0, True))  # fmt: skip


HELPFULNESS_TOKENS = 256
"""New tokens per helpfulness answer, in `eval helpfulness` and `report` alike."""


@dataclass(kw_only=True)
class InitOptions:
    """`init`: a run config and commented prompt files for your own categories."""

    folder: Path = option(doc="folder to write (created if needed)", argument=True)
    categories: str = option(doc="your categories, comma separated: a,b")
    domain: str = option("safety", "the package prompt set your files extend: safety or "
                                   "helpfulness")  # fmt: skip


@dataclass(kw_only=True)
class RunOptions:
    """`run`: the whole data pipeline."""

    out: Path = option(doc="run directory for outputs", cli=("--out", "-o"))
    config: Path | None = _config_option(shown="configs/quickstart.yaml, and the run says so")
    input: Path | None = option(None, "your own source texts (csv/jsonl/parquet/dataset dir)",
                                shown="the config's source.path", cli=("--input", "-i"))
    text_column: str | None = _text_column()
    category_column: str | None = _category_column()
    id_column: str | None = _id_column()
    limit: int | None = _limit()
    overrides: list[str] | None = _overrides()
    force: bool = _force()
    shard: str | None = option(None, "only the texts whose id hashes to shard I of N (for "
                               "several machines; merge with assemble --merge)",
                               shown="all texts", cli="--shard", metavar="I/N")  # fmt: skip
    processes: int = option(1, "run the texts as N shards in N local processes at once, "
                            "merged into --out (the same dataset); on a quiet 2-core machine "
                            "2 make 1.5x the pairs per hour (docs/benchmarks.md)",
                            metavar="N", span=(1, 64, True))  # fmt: skip
    estimate: int | None = option(None, "first run N sampled texts through every stage (in "
                                  "OUT/estimate; the real run reuses their calls) and print "
                                  "what the whole run will take: calls, tokens, pairs, cost "
                                  "(with prices in the config), time; then stop",
                                  shown="no estimate", metavar="N",
                                  span=(1, None, True))  # fmt: skip


@dataclass(kw_only=True)
class ReverseTrainOptions:
    """`reverse-train`: its settings (`ReverseTrainConfig`) and where the model goes."""

    config: Path | None = _config_option()
    out: Path | None = option(None, "output directory", shown="the user cache, keyed by settings",
                              cli=("--out", "-o"))  # fmt: skip
    overrides: list[str] | None = _overrides()
    force: bool = _force()
    settings: ReverseTrainConfig = settings_of(ReverseTrainConfig)


@dataclass(kw_only=True)
class InduceOptions:
    """`induce`: the instruction each of your texts answers (stage 01)."""

    input: Path = option(doc="source texts: csv/jsonl/parquet/dataset dir", cli=("--input", "-i"))
    out: Path = option(doc="run directory for outputs", cli=("--out", "-o"))
    config: Path | None = _config_option()
    model: str | None = option(None, "model: 'embedded', a local HF dir, or openai:NAME@URL",
                               shown="the config's reverse_model (reverse) or expert (prompted)")
    mode: str | None = option(None, "'reverse' (reverse-tuned model) or 'prompted' (zero-shot)",
                              shown="the config's induce.mode (reverse)")  # fmt: skip
    text_column: str | None = _text_column()
    category_column: str | None = _category_column()
    id_column: str | None = _id_column()
    limit: int | None = _limit()
    overrides: list[str] | None = _overrides()


@dataclass(kw_only=True)
class StageOptions:
    """`filter`, `respond`: one stage over a run directory."""

    out: Path = option(doc="run directory: reads its previous stage, writes this one",
                       cli=("--out", "-o"))  # fmt: skip
    input: Path | None = option(None, "records to read", shown="the previous stage's file in --out",
                                cli=("--input", "-i"))  # fmt: skip
    config: Path | None = _config_option()
    overrides: list[str] | None = _overrides()


@dataclass(kw_only=True)
class JudgeOptions:
    """`judge`: the judge stage over a run directory, or an audit of a preference file."""

    stage: StageOptions = settings_of(StageOptions)
    audit: Path | None = option(None, "audit an existing preference file (instruction/chosen/"
                                "rejected)", shown="none: judge the run's pairs")  # fmt: skip
    instruction_column: str = option("instruction", "--audit: instruction column")
    chosen_column: str = option("chosen", "--audit: chosen column")
    rejected_column: str = option("rejected", "--audit: rejected column")
    category: str | None = option(None, "--audit: category",
                                  shown="a category column, else the file name")
    limit: int | None = option(None, "--audit: at most N pairs", shown="all", span=(1, None, True))


@dataclass(kw_only=True)
class AssembleOptions:
    """`assemble`: dedup, split and the dataset files, of one run or of shards."""

    stage: StageOptions = settings_of(StageOptions)
    merge: list[Path] | None = option(None, "a shard's run directory (run --shard I/N), "
                                      "repeated: merge them into --out", shown="none",
                                      metavar="DIR")  # fmt: skip
    force: bool = _force()


@dataclass(kw_only=True)
class TrainOptions:
    """`sft`, `dpo`: a training step (`TrainStepConfig`) on preference data."""

    data: str = option(doc="'hh' (shipped HH-RLHF train part), a run/dataset dir, a jsonl or csv")
    out: Path = option(doc="output directory (model in model/)", cli=("--out", "-o"))
    config: Path | None = _config_option("training config (sections sft, dpo; see "
                                         "configs/train-paper-7b.yaml)",
                                         "the defaults shown below")  # fmt: skip
    force: bool = _force()
    settings: TrainStepConfig = settings_of(TrainStepConfig)


@dataclass(kw_only=True)
class RecoveryConfig:
    """How `eval recovery` induces instructions from held-out outputs and scores them."""

    mode: str = option("reverse", "reverse, prompted or first-sentence")
    instruction_column: str = option("instruction", "true instruction column")
    output_column: str = option("output", "response column")
    split: str = option("all", "'all', or the reverse-train 'validation'/'train' split by id")
    validation_fraction: float = option(0.1, "the reverse-train split's held-out share of ids",
                                        span=(0.0, 1.0, False))  # fmt: skip
    limit: int | None = option(None, "score at most N pairs", shown="all", span=(1, None, True))
    max_new_tokens: int = _answer_tokens(64, "tokens per induced instruction")
    max_text_chars: int | None = option(None, "outputs are cut to this many characters",
                                        shown="what reverse training saw (320)")  # fmt: skip
    candidates: int = option(1, "candidate instructions per output (sampled when > 1)",
                             span=(1, None, True))  # fmt: skip
    select: str = option("first", "choose among candidates: first or reverse_logprob")
    temperature: float = option(0.0, "sampling temperature (0 = greedy; > 0 needed for "
                                "candidates)", span=(0.0, None, True))  # fmt: skip


@dataclass(kw_only=True)
class RecoveryOptions:
    """`eval recovery`."""

    pairs: Path = option(doc="held-out (instruction, output) pairs")
    model: str | None = option(None, "'embedded', a local HF dir, or openai:NAME@URL",
                               shown="none (needed except for first-sentence)")  # fmt: skip
    cache: Path | None = option(None, "call cache file", shown="the shared user cache")
    out: Path | None = option(None, "keep the induce stage file here", shown="a temp folder",
                              cli=("--out", "-o"))  # fmt: skip
    force: bool = _force()
    settings: RecoveryConfig = settings_of(RecoveryConfig)


@dataclass(kw_only=True)
class SafetyEvalConfig:
    """What `eval safety` asks: harmful prompts, and how long each answer may be."""

    prompts: Path | None = _prompts_file()
    column: str = _prompts_column()
    data: Path | None = _run_data()
    limit: int | None = option(None, "at most N prompts", shown="all", span=(1, None, True))
    max_new_tokens: int = _answer_tokens()


@dataclass(kw_only=True)
class SafetyEvalOptions:
    """`eval safety`."""

    model: str = _model_spec()
    out: Path | None = _answers_out()
    force: bool = _force()
    settings: SafetyEvalConfig = settings_of(SafetyEvalConfig)


@dataclass(kw_only=True)
class OverrefusalConfig:
    """What `eval overrefusal` asks: XSTest's safe and unsafe prompts."""

    limit: int | None = option(None, "at most N safe and N unsafe prompts", shown="all",
                               span=(1, None, True))  # fmt: skip
    max_new_tokens: int = _answer_tokens()


@dataclass(kw_only=True)
class OverrefusalOptions:
    """`eval overrefusal`."""

    model: str = _model_spec()
    out: Path | None = _answers_out()
    force: bool = _force()
    settings: OverrefusalConfig = settings_of(OverrefusalConfig)


@dataclass(kw_only=True)
class HelpfulnessConfig:
    """How `eval helpfulness` compares a model with a reference: held-out AlpacaEval
    instructions, answers of `max_new_tokens`, a judge asked in both orders."""

    reference: str = option("pairs:gpt4_0613", "the other side: a model spec or "
                            "pairs:GENERATOR")  # fmt: skip
    judge: str = option("embedded", "judge model: 'embedded', a local HF dir, or "
                        "openai:NAME@URL")  # fmt: skip
    verdict_mode: str = option("logprobs", "judge verdict: logprobs or json")
    limit: int | None = option(None, "at most N held-out instructions", shown="all (about 70)",
                               span=(1, None, True))  # fmt: skip
    max_new_tokens: int = _answer_tokens(HELPFULNESS_TOKENS)
    max_answer_chars: int = option(1000, "answers are clipped to this for the judge",
                                   span=(1, None, True))  # fmt: skip
    min_consistency: float = _min_consistency()


@dataclass(kw_only=True)
class HelpfulnessOptions:
    """`eval helpfulness`."""

    model: str = _model_spec("a model spec, or pairs:GENERATOR (shipped)")
    out: Path | None = option(None, "write per-instruction results (jsonl) here", shown="none",
                              cli=("--out", "-o"))  # fmt: skip
    settings: HelpfulnessConfig = settings_of(HelpfulnessConfig)


@dataclass(kw_only=True)
class DownstreamOptions:
    """`eval downstream`: lm-evaluation-harness tasks on a local model."""

    model: str = _model_spec()
    tasks: str = option(doc="lm-eval task names, comma separated")
    include_path: Path | None = option(None, "a folder of your own lm-eval task YAML files "
                                       "(and their data)",
                                       shown="none: lm-eval's own tasks (which need network)")
    limit: int | None = option(None, "at most N examples per task", shown="all",
                               span=(1, None, True))  # fmt: skip
    num_fewshot: int | None = option(None, "few-shot examples", shown="each task's own")
    batch_size: int = option(8, "examples per forward pass", span=(1, None, True))


@dataclass(kw_only=True)
class AgreementOptions:
    """`eval refusal-agreement`."""

    labels: Path = option(doc="XSTest-format file: prompt, completion, final_label")


@dataclass(kw_only=True)
class JudgeAuditOptions:
    """`eval judge-audit`: the run's judge on the labels made in `review`."""

    run_dir: Path = option(doc="a run directory with labels (safer-instruct review RUN_DIR)",
                           argument=True)  # fmt: skip


@dataclass(kw_only=True)
class CompareConfig:
    """What `report` runs on; limits keep a quick report quick."""

    harmful_prompts: Path | None = _prompts_file()
    harmful_column: str = _prompts_column()
    data: Path | None = _run_data()
    harmful_limit: int | None = option(200, "at most N harmful prompts", span=(1, None, True))
    xstest_limit: int | None = option(None, "at most N safe and N unsafe XSTest prompts",
                                      shown="all", span=(1, None, True))  # fmt: skip
    helpfulness_limit: int | None = option(40, "held-out AlpacaEval instructions (0 skips "
                                           "helpfulness)", span=(0, None, True))  # fmt: skip
    max_new_tokens: int = _answer_tokens()
    helpfulness_max_new_tokens: int = _answer_tokens(HELPFULNESS_TOKENS,
                                                     "new tokens per helpfulness answer")
    bootstrap: int = option(1000, "bootstrap resamples of every interval", span=(100, None, True))
    baseline: str | None = option(None, "the model (a NAME of --models) every other is "
                                  "compared with, paired", shown="the first of --models")
    min_position_consistency: float = _min_consistency()
    downstream_tasks: list[str] = option(doc="lm-eval tasks to add, comma separated",
                                         shown="none", factory=list, comma=True)  # fmt: skip
    include_path: Path | None = option(None, "--downstream-tasks: a folder of your own task "
                                       "YAML files", shown="none")  # fmt: skip
    downstream_limit: int | None = option(None, "--downstream-tasks: at most N examples per "
                                          "task", shown="all", span=(1, None, True))


@dataclass(kw_only=True)
class ReportOptions:
    """`report`: several models compared, paired against a baseline."""

    models: list[str] = option(doc="NAME=SPEC, repeated; the first is the default reference",
                               metavar="NAME=SPEC")
    out: Path = option(doc="folder for comparison.html/.md/.json", cli=("--out", "-o"))
    reference: str | None = option(None, "helpfulness reference: model spec or "
                                   "pairs:GENERATOR", shown="the first of --models")
    judge: str = option("embedded", "helpfulness judge model")
    force: bool = _force()
    settings: CompareConfig = settings_of(CompareConfig)


@dataclass(kw_only=True)
class ModelsOptions:
    """`models`: what is available, or what a server supports."""

    probe: str | None = option(None, "ask the OpenAI-compatible server at this base URL what "
                               "it supports (log-probs and their top-k, n, JSON schema, echo "
                               "scoring)", shown="no probe", metavar="URL")  # fmt: skip
    model: str | None = option(None, "--probe: the served model to ask about",
                               shown="the first the server lists")  # fmt: skip
    api_key_env: str = option("OPENAI_API_KEY", "--probe: the environment variable holding "
                              "the key")  # fmt: skip


@dataclass(kw_only=True)
class ServeOptions:
    """`serve`: a local model over the OpenAI-compatible protocol."""

    model: str = option("embedded", "'embedded' or a local HF directory")
    host: str = option("127.0.0.1", "address to bind")
    port: int = option(8000, "port to listen on", span=(0, 65535, True))
    served_name: str | None = option(None, "model name clients ask for", shown="--model")
    batch_size: int = option(16, "prompts per generate() batch", span=(1, None, True))
    device: str = option("auto", "'auto', 'cpu', 'cuda', 'cuda:1'")
    dtype: str = option("auto", "'auto' (bf16 on GPUs that have it, else fp32), or a torch "
                        "dtype")  # fmt: skip
    api_key_env: str | None = option(None, "require this environment variable's value as the "
                                     "bearer key", shown="none: no key")  # fmt: skip


@dataclass(kw_only=True)
class ReviewOptions:
    """`review`: a local page to read a finished run and label its pairs."""

    run_dir: Path = option(doc="the finished run directory to read", argument=True)
    host: str = option("127.0.0.1", "address to bind")
    port: int = option(8765, "port to listen on", span=(0, 65535, True))
