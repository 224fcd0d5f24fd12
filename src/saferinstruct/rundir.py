"""The run directory: every path of it lives here, and nowhere else.

    DIR/config.yaml                 the resolved config (package and model versions)
    DIR/stages/NN-<stage>.jsonl     every record after each stage, numbered as `STAGES`
    DIR/dataset/train.jsonl         TRL conversational preference rows (+ test.jsonl)
    DIR/dataset/README.md           the dataset card
    DIR/dataset/ref_logps/          DPO reference log-probs, reused by later DPO runs
    DIR/funnel.json                 counts in and out of every stage
    DIR/report.html, report.md      the data report; report.json its numbers,
    DIR/report_files/*.png          and the plots the Markdown links
    DIR/estimate/                   `run --estimate N`: a run over N sampled sources, and
                                    estimate.json, what the whole run will take
    DIR/labels.jsonl                a person's labels on pairs (`review`; --force keeps them)
    DIR/run.json                    the config hash and whether the last run finished
    DIR/.lock                       held by the one process writing here

Writes go through `RunDir.write` (atomic: a reader never sees half a file). One process
writes a run directory at a time (`lock`: a second one is told which process holds it).
`begin` refuses a config other than the one the directory was made with (unless
`force`, which clears the old outputs first) and marks the directory running; `finish`
marks it complete; `require_complete` is what `sft`, `dpo` and `report` ask before
reading a run's dataset.

    run = RunDir("runs/quick")
    run.stage("filter")             # runs/quick/stages/02-filter.jsonl
    with run.lock():
        run.begin(config_hash(cfg))
        ...
        run.finish()
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


STATE_FILE = "run.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class OutputDir:
    """A folder one command writes (a training's --out, an evaluation's --out; `RunDir`
    adds a run's paths): one writer at a time (`lock`), the identity of what is written
    there (`begin`) and whether the last writer finished (`finish`, `complete`), all in
    `run.json`. `writes` names what its writer puts there: all that `--force` removes
    (a user's own files in the folder stay)."""

    root: Path
    writes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    def outputs(self) -> list[Path]:
        """What `begin(force=True)` clears: the entries its writer writes (`writes`)."""
        return [self.root / name for name in self.writes]

    def write_json(self, path: Path, obj: Any) -> Path:
        return write_atomic(path, json.dumps(obj, indent=2))

    # ---------------------------------------------------------------- one writer, state
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock while writing (released when the process ends, even
        by kill -9); BadInput naming the holder when another process has it."""
        import fcntl

        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"--out {self.root}: is a file, not a run directory")
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                raise BadInput(f"{self.root} is in use by {holder}: wait for it to finish, "
                               "or write to another --out") from None  # fmt: skip
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            command = " ".join(os.path.basename(a) if i == 0 else a
                               for i, a in enumerate(sys.argv[:4]))  # fmt: skip
            os.write(fd, f"process {os.getpid()} ({command}, since {started})".encode())
            yield
        finally:
            os.close(fd)

    def read_state(self) -> dict[str, Any]:
        if not self.state.exists():
            return {}
        try:
            return json.loads(self.state.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return {}

    def begin(self, identity: dict[str, Any], force: bool = False,
              ignore: tuple[str, ...] = (), remedy: str = "add --force to replace its "
              "outputs") -> None:
        """Start writing here: with the identity the folder was made with (or a new
        folder) it resumes; with another, BadInput naming what changed unless `force`,
        which removes the old outputs first. `ignore` leaves out keys (dotted prefixes)
        from the comparison: a stage command knows the config, not the run's --limit
        or sources; the identity kept is then the folder's first one."""
        old = self.read_state()
        if self.refuses(identity, force, ignore, remedy):
            self.clear()
        for stale in self.root.rglob(".*.tmp"):  # a killed writer's leftovers
            stale.unlink(missing_ok=True)
        if not ignore or not old.get("identity"):
            self.mark("running", identity)
        else:
            self.mark("running")

    def refuses(self, identity: dict[str, Any], force: bool = False,
                ignore: tuple[str, ...] = (), remedy: str = "add --force to replace its "
                "outputs") -> bool:
        """What `begin` decides, without writing: BadInput naming what changed when the
        folder was made with another identity (and not `force`); True when `force` must
        clear it first. A writer that pays before it writes asks this first."""
        changed = identity_changes(self.read_state(), identity, ignore)
        if changed and not force:
            raise BadInput(
                f"{self.root} was made with another config ({', '.join(changed[:4])}"
                f"{' ...' if len(changed) > 4 else ''} changed): write to a new --out "
                f"(the call cache makes unchanged work free), or {remedy}"
            )
        return bool(changed)

    def clear(self) -> None:
        """Remove every output (what `--force` does before writing afresh)."""
        for path in self.outputs():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def mark(self, status: str, identity: dict[str, Any] | None = None) -> None:
        state = self.read_state()
        state.update(status=status, pid=os.getpid(), updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if identity is not None:
            state["identity"] = identity
            state["config_hash"] = identity_hash(identity)
        self.write_json(self.state, state)

    def finish(self) -> None:
        self.mark("complete")

    def incomplete(self) -> bool:
        return self.read_state().get("status") == "running"

    def complete(self) -> bool:
        """Whether the last writer here finished (the one completion marker)."""
        return self.read_state().get("status") == "complete"

    def require_complete(self, what: str) -> None:
        """BadInput when the last run here did not finish (its files may be stale)."""
        if self.incomplete():
            raise BadInput(
                f"{what}: {self.root} is incomplete: its last run (process "
                f"{self.read_state().get('pid')}) did not finish; run it again first "
                "(finished work comes from the call cache)"
            )


@dataclass(frozen=True)
class RunDir(OutputDir):
    """One run directory. Paths are computed, nothing is created until written."""

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

    @property
    def estimate_dir(self) -> Path:
        """`run --estimate`'s own run over sampled sources (not an output: --force keeps it)."""
        return self.root / "estimate"

    @property
    def estimate_file(self) -> Path:
        return self.estimate_dir / "estimate.json"

    @property
    def shards_dir(self) -> Path:
        """`run --processes N`'s shard runs, `I-of-N` each, and the config they share (not
        an output: --force keeps it, each shard clears its own)."""
        return self.root / "shards"

    def shard(self, i: int, n: int) -> Path:
        return self.shards_dir / f"{i}-of-{n}"

    @property
    def shards_config(self) -> Path:
        return self.shards_dir / "config.yaml"

    @property
    def labels(self) -> Path:
        """A person's labels on this run's pairs (labels.py); not an output: kept by --force."""
        return self.root / "labels.jsonl"

    def report_image(self, name: str) -> Path:
        return self.report_files / f"{name}.png"

    def outputs(self) -> list[Path]:
        """Everything a run writes here (what `begin(force=True)` clears)."""
        return [self.root / "stages", self.dataset, self.config, self.funnel, self.report_html,
                self.report_md, self.report_json, self.report_files, self.state]  # fmt: skip

    def relative(self, path: Path) -> str:
        """`path` as the report and card link it: relative to the run directory."""
        return Path(path).relative_to(self.root).as_posix()

    # ---------------------------------------------------------------- writing
    def write(self, path: Path, content: str | bytes) -> Path:
        """Write a file of this run atomically (parents created)."""
        return write_atomic(path, content)

    def write_jsonl(self, path: Path, rows: Iterable[dict[str, Any]]) -> int:
        return write_jsonl_atomic(path, rows)

    def read_funnel(self) -> dict[str, Any]:
        """The funnel `assemble` wrote; BadInput when the run has not been assembled."""
        if not self.funnel.exists():
            raise BadInput(f"{self.funnel}: no funnel (run `safer-instruct assemble` first)")
        return json.loads(self.funnel.read_text(encoding="utf-8"))


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed version of each package ("not installed" where it is not): part of
    what an output's identity records."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def identity_hash(identity: dict[str, Any]) -> str:
    """sha256 of an identity (what `run.json` keeps as `config_hash`)."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted.key: value} (lists, scalars and empty mappings are
    leaves)."""
    if not isinstance(doc, dict) or not doc:
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def identity_changes(state: dict[str, Any], identity: dict[str, Any],
                     ignore: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """The dotted keys in which `identity` differs from the one `state` (a folder's
    run.json) was written with, those under an `ignore` prefix aside; [] for a new folder.
    A folder from before identities were kept has only a hash: then the hash is compared,
    and "config" named."""
    old = state.get("identity")
    if old is None:
        legacy = state.get("config_hash")
        return ["config"] if legacy and not ignore and legacy != identity_hash(identity) else []
    a, b = flatten(old), flatten(json.loads(json.dumps(identity, default=str)))
    skipped = tuple(p + "." for p in ignore)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)
                  and k not in ignore and not k.startswith(skipped))  # fmt: skip


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
