"""Training under `accelerate launch` with two processes (DDP over gloo, on the CPU), as
a user with several GPUs runs it with configs/accelerate/ddp.yaml: the ranks split the
data, end with identical weights, and only the main process writes the model, its card,
its log and the reference log-probs. The time guard stops both ranks at the same step
and the next launch resumes from the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_sft_dpo import short_pairs

pytestmark = pytest.mark.slow

CONFIG = ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"
ACCELERATE = Path(sys.executable).parent / "accelerate"


def launch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(ACCELERATE), "launch", "--config_file", str(CONFIG),
           "-m", "saferinstruct", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_every_shipped_accelerate_config_loads():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value
             for p in sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))}  # fmt: skip
    assert kinds == {"cpu-2proc": "MULTI_GPU", "ddp": "MULTI_GPU", "deepspeed-zero3": "DEEPSPEED",
                     "fsdp": "FSDP", "one-gpu": "NO"}  # fmt: skip


def test_two_process_dpo_splits_the_data_and_writes_once(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in short_pairs(8)))
    out = tmp_path / "dpo"
    common = ["dpo", "--data", str(data), "--out", str(out), "--batch-size", "1",
              "--max-steps", "3", "--max-length", "128"]  # fmt: skip

    # a guard of a few milliseconds: both ranks stop after the first step (none hangs)
    cut = launch(*common, "--max-minutes", "0.0001")
    assert cut.returncode == 0, cut.stderr[-3000:]
    record = json.loads((out / "training.json").read_text())
    assert record["complete"] is False and record["steps"] == 1
    assert list((out / "checkpoints").glob("checkpoint-*")), "the cut run keeps its checkpoint"

    done = launch(*common)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert lines == [{"model": str(out / "model")}], "one result line, from the main process"

    record = json.loads((out / "training.json").read_text())
    assert record["complete"] is True and record["steps"] == 3
    dist = record["distributed"]
    assert dist["world_size"] == 2
    ranks = dist["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    # resumed at step 1: steps 2 and 3 here, one batch per rank per step, all different
    assert [len(r["batches"]) for r in ranks] == [2, 2]
    assert not set(ranks[0]["batches"]) & set(ranks[1]["batches"]), "the ranks split the data"
    assert ranks[0]["trainable_sha256"] == ranks[1]["trainable_sha256"], "identical weights"

    # one model folder, one card, one log, the folder's lock and identity (run.json); no
    # temp folders, checkpoints gone
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "README.md", "loss.png", "model", "run.json", "train_log.json",
        "training.json"]  # fmt: skip
    assert (out / "model" / "model.safetensors").exists()
    assert '"world_size": 2' in (out / "README.md").read_text()
    # the reference log-probs: one file, every row, written by the main process
    refs = list((tmp_path / "ref_logps").glob("*.jsonl"))
    assert len(refs) == 1 and len(refs[0].read_text().splitlines()) == 8
    assert not list((tmp_path / "ref_logps").glob(".*")), "no temp file left"
