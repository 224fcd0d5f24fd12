"""The run directory: every path of it lives here, and nowhere else.

    DIR/config.yaml                 the resolved config (package and model versions)
    DIR/stages/NN-<stage>.jsonl     every record after each stage, numbered as `STAGES`
    DIR/dataset/train.jsonl         TRL conversational preference rows (+ test.jsonl)
    DIR/dataset/README.md           the dataset card
    DIR/dataset/ref_logps/          DPO reference log-probs, reused by later DPO runs
    DIR/funnel.json                 counts in and out of every stage
    DIR/report.html, report.md      the data report; report.json its numbers,
    DIR/report_files/*.png          and the plots the Markdown links

Writes go through `RunDir.write` (atomic: a reader never sees half a file).

    run = RunDir("runs/quick")
    run.stage("filter")             # runs/quick/stages/02-filter.jsonl
    run.write(run.funnel, json.dumps(counts))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput
from .io import write_atomic, write_jsonl_atomic

STAGES = ("sources", "induce", "filter", "respond", "judge", "assemble")
"""The data stages in order; a stage's number (its file's NN) is its index here."""
SPLITS = ("train", "test")


def split_name(split: str) -> str:
    """The file name of a dataset split inside the dataset folder."""
    return f"{split}.jsonl"


def stage_number(name: str) -> int:
    """00 for sources ... 05 for assemble: the one numbering of the stages."""
    if name not in STAGES:
        raise BadInput(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    return STAGES.index(name)


@dataclass(frozen=True)
class RunDir:
    """One run directory. Paths are computed, nothing is created until written."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---------------------------------------------------------------- stages
    def stage(self, name: str) -> Path:
        return self.root / "stages" / f"{stage_number(name):02d}-{name}.jsonl"

    def previous_stage(self, name: str) -> Path:
        """The file of the stage before `name` (what a stage command reads by default)."""
        return self.stage(STAGES[stage_number(name) - 1])

    def stage_files(self) -> list[Path]:
        """The stage files that exist, in pipeline order."""
        return [p for p in map(self.stage, STAGES) if p.exists()]

    # ---------------------------------------------------------------- files
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def funnel(self) -> Path:
        return self.root / "funnel.json"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    def split(self, name: str) -> Path:
        return self.dataset / split_name(name)

    @property
    def card(self) -> Path:
        return self.dataset / "README.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_files(self) -> Path:
        return self.root / "report_files"

    def report_image(self, name: str) -> Path:
        return self.report_files / f"{name}.png"

    def relative(self, path: Path) -> str:
        """`path` as the report and card link it: relative to the run directory."""
        return Path(path).relative_to(self.root).as_posix()

    # ---------------------------------------------------------------- writing
    def write(self, path: Path, content: str | bytes) -> Path:
        """Write a file of this run atomically (parents created)."""
        return write_atomic(path, content)

    def write_json(self, path: Path, obj: Any) -> Path:
        return write_atomic(path, json.dumps(obj, indent=2))

    def write_jsonl(self, path: Path, rows: Iterable[dict[str, Any]]) -> int:
        return write_jsonl_atomic(path, rows)

    def read_funnel(self) -> dict[str, Any]:
        """The funnel `assemble` wrote; BadInput when the run has not been assembled."""
        if not self.funnel.exists():
            raise BadInput(f"{self.funnel}: no funnel (run `safer-instruct assemble` first)")
        return json.loads(self.funnel.read_text(encoding="utf-8"))


def dataset_file(path: str | Path, split: str) -> Path:
    """The `split` file of a run directory (`DIR/dataset/<split>.jsonl`), of a dataset
    directory (`DIR/<split>.jsonl`), or `path` itself when it is a file."""
    p = Path(path)
    if not p.is_dir():
        return p
    for candidate in (RunDir(p).split(split), p / split_name(split)):
        if candidate.exists():
            return candidate
    raise BadInput(f"{p}: no dataset/{split}.jsonl or {split}.jsonl")


def ref_logps_dir(data_file: Path) -> Path:
    """Where DPO keeps reference log-probs for a dataset file: `ref_logps/` beside it."""
    return Path(data_file).parent / "ref_logps"
